"""From per-frame outputs to letters, and letters scored as fingerspelling recognition is scored.

The decision rule (one for predict, evaluate, the model card and the page, whose app.js repeats it):
every kept frame's logits become probabilities; their mean over the last `smooth` frames is the
frame's decision input; a class is decided once it has been on top of that mean, at `threshold` or
above, for `confirm` frames in a row. A decided sign prints its letter, unless it is the class decided
last: a sign held for a second is one letter, and a letter signed twice needs `no_event` (or another
sign) decided in between. `no_event` itself prints nothing. The model sees every `frame_step`-th frame.

Scoring (ChicagoFSWild's measure): letter accuracy = 1 - (substitutions + deletions + insertions) / the
number of signs in the truth, from the edit distance between the printed letters and the signed ones.
An inserted letter is a false event (a letter printed where none was signed); the latency of a sign is
the time from its last frame to its letter, over the letters aligned with a sign of the same class.
"""

from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np

from torch_tsm.synthetic import FRAME_STEP, NO_EVENT


@dataclass(frozen=True)
class DecisionRule:
    frame_step: int = FRAME_STEP  # the model sees every N-th frame of the camera or video
    smooth: int = 2  # decide on the mean probabilities of the last N kept frames
    confirm: int = 2  # kept frames a class must stay on top, at `threshold` or above, to be decided
    threshold: float = 0.5

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, settings: dict) -> "DecisionRule":
        return cls(**{key: settings[key] for key in cls.__dataclass_fields__ if key in settings})


# The settings that training tries on its validation videos (choose_rule); the best one goes into the card.
SMOOTH_CHOICES = (1, 2, 4, 6, 8, 12)
CONFIRM_CHOICES = (1, 2, 3, 4, 6, 8)
THRESHOLD_CHOICES = (0.3, 0.5, 0.7, 0.9)


def softmax(logits: np.ndarray) -> np.ndarray:
    # (..., K) -> (..., K), in float64 as the page computes it
    z = np.asarray(logits, np.float64)
    exp = np.exp(z - z.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


class Decider:
    """The rule's memory: which class is on top how many frames in a row, and which was decided last."""

    def __init__(self, labels: list[str], confirm: int) -> None:
        self.no_event = labels.index(NO_EVENT) if NO_EVENT in labels else -1  # a model without it prints every class
        self.confirm = confirm
        self.candidate, self.run = -1, 0
        self.decided = -1  # the class decided last, a sign or no_event; -1 before any

    def __call__(self, top: int, confident: bool) -> int | None:
        # the top class of a frame's smoothed probabilities, and whether it reaches the threshold -> the class printed, or None
        if confident and top == self.candidate:
            self.run += 1
        else:
            self.candidate, self.run = top, int(confident)
        if self.run != self.confirm:
            return None
        printed = top != self.decided and top != self.no_event
        self.decided = top
        return top if printed else None


class Transcriber:
    """The decision rule, one kept frame at a time: `transcriber(logits)` gives the class whose letter
    this frame prints, or None. `shown`: the smoothed probabilities of the last frame."""

    def __init__(self, labels: list[str], rule: DecisionRule) -> None:
        self.rule = rule
        self.decide = Decider(labels, rule.confirm)
        self.recent: deque[np.ndarray] = deque(maxlen=rule.smooth)
        self.shown = np.zeros(len(labels))

    def __call__(self, logits: np.ndarray) -> int | None:
        return self.add_probabilities(softmax(logits))

    def add_probabilities(self, probabilities: np.ndarray) -> int | None:
        # (K,) probabilities of one kept frame -> the class printed at this frame, or None
        self.recent.append(probabilities)
        self.shown = np.sum(self.recent, axis=0) / len(self.recent)
        top = int(self.shown.argmax())
        return self.decide(top, bool(self.shown[top] >= self.rule.threshold))


def smoothed(probabilities: np.ndarray, smooth: int) -> np.ndarray:
    # (L, K) -> (L, K): frame i's mean over frames max(0, i - smooth + 1)..i, summed in frame order as
    # Transcriber sums its window (so with the same float rounding)
    length = len(probabilities)
    totals = np.cumsum(probabilities, axis=0)  # the first smooth - 1 frames: everything so far, in order
    if length >= smooth:
        full = probabilities[: length - smooth + 1].copy()
        for back in range(1, smooth):
            full += probabilities[back : length - smooth + 1 + back]
        totals[smooth - 1 :] = full
    return totals / np.minimum(np.arange(1, length + 1), smooth)[:, None]


def transcribe(probabilities: np.ndarray, labels: list[str], rule: DecisionRule) -> list[tuple[int, int]]:
    # (L, K) probabilities of L kept frames -> (kept frame, class) of each printed letter; as Transcriber
    # frame by frame, with the smoothing done for all frames at once
    shown = smoothed(probabilities, rule.smooth)
    tops = shown.argmax(axis=1)
    confident = shown[np.arange(len(shown)), tops] >= rule.threshold
    decide = Decider(labels, rule.confirm)
    printed = ((i, decide(top, ok)) for i, (top, ok) in enumerate(zip(tops.tolist(), confident.tolist())))
    return [(i, k) for i, k in printed if k is not None]


# --- scoring -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alignment:
    substitutions: int
    deletions: int
    insertions: int
    pairs: list[tuple[int, int]] = field(default_factory=list)  # (truth index, printed index) matched or substituted

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions


def align(
    truth: list[str], printed: list[str], truth_ends: list[float] | None = None, printed_times: list[float] | None = None
) -> Alignment:
    """The edit distance between two letter sequences, with its operations. Of the alignments with that
    distance, the one whose paired letters lie nearest in time (each printed letter's time against its sign's
    end, when the times are given): so a letter printed twice pairs its first print with the sign."""

    def gap(i: int, j: int) -> float:
        return abs(printed_times[j] - truth_ends[i]) if truth_ends is not None and printed_times is not None else 0.0

    n, m = len(truth), len(printed)
    # cost[i][j]: (errors, time gap of the pairs) aligning truth[:i] with printed[:j], compared in that order
    cost = [[(i + j, 0.0) if i == 0 or j == 0 else None for j in range(m + 1)] for i in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i][j] = min(_paired(cost, truth, printed, i, j, gap), _deleted(cost, i, j), _inserted(cost, i, j))
    substitutions = deletions = insertions = 0
    pairs = []
    i, j = n, m
    while i or j:
        if i and j and cost[i][j] == _paired(cost, truth, printed, i, j, gap):
            substitutions += truth[i - 1] != printed[j - 1]
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i and cost[i][j] == _deleted(cost, i, j):
            deletions, i = deletions + 1, i - 1
        else:
            insertions, j = insertions + 1, j - 1
    return Alignment(substitutions, deletions, insertions, pairs[::-1])


def _paired(cost, truth, printed, i, j, gap) -> tuple[int, float]:
    errors, time = cost[i - 1][j - 1]
    return errors + (truth[i - 1] != printed[j - 1]), time + gap(i - 1, j - 1)


def _deleted(cost, i, j) -> tuple[int, float]:
    return cost[i - 1][j][0] + 1, cost[i - 1][j][1]


def _inserted(cost, i, j) -> tuple[int, float]:
    return cost[i][j - 1][0] + 1, cost[i][j - 1][1]


@dataclass(frozen=True)
class VideoTruth:
    """What was signed in a continuous video: (label, begin frame, end frame) of each sign, in order."""

    signs: list[tuple[str, int, int]]
    num_frames: int
    fps: float

    @property
    def idle_seconds(self) -> float:
        return (self.num_frames - sum(end - begin for _, begin, end in self.signs)) / self.fps


def live_figures(videos: list[tuple[VideoTruth, list[tuple[float, str]]]]) -> dict:
    """Letter accuracy, its errors, false events per minute of idle and latency (s) over several videos:
    each video's truth and the (time s, label) of each letter printed on it."""
    substitutions = deletions = insertions = signs = 0
    idle, latencies = 0.0, []
    for truth, printed in videos:
        ends = [end / truth.fps for _, _, end in truth.signs]
        alignment = align([label for label, _, _ in truth.signs], [label for _, label in printed], ends, [time for time, _ in printed])
        substitutions, deletions, insertions = (
            substitutions + alignment.substitutions,
            deletions + alignment.deletions,
            insertions + alignment.insertions,
        )
        signs += len(truth.signs)
        idle += truth.idle_seconds
        for t, p in alignment.pairs:
            label, _, end = truth.signs[t]
            if printed[p][1] == label:
                latencies.append(printed[p][0] - end / truth.fps)
    errors = substitutions + deletions + insertions
    return {
        "letter_accuracy": 1 - errors / max(1, signs),
        "signs": signs,
        "videos": len(videos),
        "substitutions": substitutions,
        "deletions": deletions,
        "insertions": insertions,
        "false_events_per_idle_minute": insertions / (idle / 60) if idle else 0.0,
        "latency_s": {"median": float(np.median(latencies)), "p90": float(np.percentile(latencies, 90))} if latencies else None,
    }


def printed_letters(
    probabilities: np.ndarray, kept_frames: np.ndarray, fps: float, labels: list[str], rule: DecisionRule
) -> list[tuple[float, str]]:
    # (L, K) probabilities of the kept frames, (L,) their frame numbers in the video -> (time s, label) of each letter
    return [(kept_frames[i] / fps, labels[k]) for i, k in transcribe(probabilities, labels, rule)]


def choose_rule(videos: list[tuple[VideoTruth, np.ndarray, np.ndarray]], labels: list[str], frame_step: int) -> tuple[DecisionRule, dict]:
    """The decision settings that print the validation videos best: each video's truth, (L, K) probabilities
    of its kept frames and their frame numbers. Best: the highest letter accuracy, then the fewest false
    events, then the shortest median latency. -> the rule, its figures on these videos."""
    best = None
    for smooth in SMOOTH_CHOICES:
        for confirm in CONFIRM_CHOICES:
            for threshold in THRESHOLD_CHOICES:
                rule = DecisionRule(frame_step, smooth, confirm, threshold)
                figures = live_figures([(truth, printed_letters(p, kept, truth.fps, labels, rule)) for truth, p, kept in videos])
                latency = figures["latency_s"]["median"] if figures["latency_s"] else float("inf")
                key = (-figures["letter_accuracy"], figures["insertions"], latency)
                if best is None or key < best[0]:
                    best = (key, rule, figures)
    return best[1], best[2]
