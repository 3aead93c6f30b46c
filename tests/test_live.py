"""Live signing without a model: continuous videos, the per-frame targets of stream training, the decision
rule and the letter scoring, each against values worked out by hand or an independent computation."""

import functools
import itertools

import numpy as np
import pytest

from torch_tsm.sequences import IGNORE, SETTLE_FRAMES, frame_targets
from torch_tsm.synthetic import IDLE_FRAMES, NO_EVENT, SIGN_LABELS, SYNTHETIC_LABELS, Sign, clip_scene, synthetic_videos
from torch_tsm.transcript import DecisionRule, Transcriber, VideoTruth, align, live_figures, softmax, transcribe

LABELS = [NO_EVENT, "a", "b"]


def test_no_event_is_class_0_and_shows_the_scene_alone():
    assert SYNTHETIC_LABELS[0] == NO_EVENT and SYNTHETIC_LABELS[1:] == SIGN_LABELS
    idle = np.asarray(clip_scene(np.random.default_rng(5), NO_EVENT, 64)).astype(float)
    sign = np.asarray(clip_scene(np.random.default_rng(5), "circle", 64)).astype(float)
    # No glyph: the frames differ by camera noise only (sigma 8), while a glyph (170..255 on a dark scene) moves pixels by far more.
    assert np.abs(idle - idle.mean(0)).max() < 60 and np.abs(idle - idle.mean(0)).std() < 9
    assert sign.max() > idle.max() + 60


def test_a_continuous_video_is_one_scene_with_its_signs_apart():
    for video in synthetic_videos("val", 5, seed=0, size=48):
        frames, signs = video.render()
        again, signs_again = video.render()
        np.testing.assert_array_equal(frames, again)  # made from (seed, split, index): the same everywhere
        assert signs == signs_again and len(signs) == video.num_signs
        gaps = [signs[0].begin, *(b.begin - a.end for a, b in itertools.pairwise(signs)), len(frames) - signs[-1].end]
        assert all(IDLE_FRAMES[0] <= gap <= IDLE_FRAMES[1] for gap in gaps), gaps
        assert all(12 <= sign.end - sign.begin <= 24 and sign.label in SIGN_LABELS for sign in signs)
        # One background: the idle frames before the first sign and after the last one show the same scene.
        assert np.abs(frames[: signs[0].begin].mean(0) - frames[signs[-1].end :].mean(0)).mean() < 3
    lengthened, _ = synthetic_videos("val", 1, 0, 48)[0].render(min_frames=500)
    assert len(lengthened) == 500


def test_a_video_draws_any_frame_alone_as_it_draws_them_all():
    # Training draws only the frames it keeps (a window: 26 of ~100): each frame, drawn alone, in any order,
    # is the very frame of the whole video, and its camera noise is its own (N(0, 8) about the scene).
    scene, signs = synthetic_videos("train", 1, seed=0, size=48)[0].render()
    whole = np.asarray(scene)
    kept = np.array([len(scene) - 1, 7, 3, 7])
    np.testing.assert_array_equal(scene[kept], whole[kept])
    np.testing.assert_array_equal(scene[-1], whole[-1])
    assert whole.shape == (len(scene), 48, 48, 3) and whole.dtype == np.uint8
    noise = whole[: signs[0].begin].astype(float) - scene.background  # the idle stretch before the first sign
    assert abs(noise.mean() + 0.5) < 0.3 and 7.7 < noise.std() < 8.3  # -0.5: the cast to uint8 truncates
    assert np.abs(np.corrcoef(noise[0].ravel(), noise[1].ravel())[0, 1]) < 0.05  # frame to frame: independent
    with pytest.raises(IndexError):
        scene[len(scene)]


def test_frame_targets_by_hand():
    # Signs at frames [4, 10) ("a") and [20, 26) ("b"), every 2nd frame kept from frame 0.
    signs = [Sign("a", 4, 10), Sign("b", 20, 26)]
    kept = np.arange(0, 36, 2)
    targets = frame_targets(signs, kept, LABELS)
    # kept frames 4, 6, 8 show "a": the first 2 (half, rounded up) left out, then "a"; then SETTLE_FRAMES left out.
    expected = [0, 0, IGNORE, IGNORE, 1, *[IGNORE] * SETTLE_FRAMES, 0, 0, IGNORE, IGNORE, 2, *[IGNORE] * SETTLE_FRAMES, 0, 0]
    assert targets.tolist() == expected


def levenshtein(truth: tuple, printed: tuple) -> int:
    # An independent edit distance: the plain recursion, memoized.
    @functools.cache
    def distance(i: int, j: int) -> int:
        if i == 0 or j == 0:
            return i + j
        return min(distance(i - 1, j - 1) + (truth[i - 1] != printed[j - 1]), distance(i - 1, j) + 1, distance(i, j - 1) + 1)

    return distance(len(truth), len(printed))


def test_alignment_counts_the_edit_distance():
    rng = np.random.default_rng(0)
    for _ in range(300):
        truth = tuple(rng.choice(list("abc"), rng.integers(0, 7)))
        printed = tuple(rng.choice(list("abcd"), rng.integers(0, 7)))
        alignment = align(list(truth), list(printed))
        assert alignment.errors == levenshtein(truth, printed)
        assert len(alignment.pairs) + alignment.deletions == len(truth) and len(alignment.pairs) + alignment.insertions == len(printed)
    assert align(list("abcd"), list("abxd")).substitutions == 1
    assert (align(list("abcd"), list("acd")).deletions, align(list("abc"), list("abbc")).insertions) == (1, 1)


def one_hot_logits(classes: list[int], strength: float = 8.0) -> np.ndarray:
    return np.eye(len(LABELS))[classes] * strength


def test_the_rule_prints_a_held_sign_once_and_a_repeated_one_twice():
    rule = DecisionRule(frame_step=1, smooth=1, confirm=2, threshold=0.5)
    # a held for 6 frames: one letter; a blip of b for one frame: not confirmed; idle, then a again: a second letter.
    frames = [0, 0, 1, 1, 1, 1, 1, 1, 2, 1, 1, 0, 0, 1, 1, 0]
    printed = transcribe(softmax(one_hot_logits(frames)), LABELS, rule)
    assert printed == [(3, 1), (14, 1)]
    # Without idle between them, a sign that stays on top is one letter however long; b after a prints b.
    assert transcribe(softmax(one_hot_logits([1] * 10 + [2] * 3)), LABELS, rule) == [(1, 1), (11, 2)]
    # no_event is decided but never printed; a class under the threshold is never decided.
    assert transcribe(softmax(one_hot_logits([0] * 5)), LABELS, rule) == []
    assert transcribe(softmax(one_hot_logits([1] * 5, strength=0.1)), LABELS, rule) == []


def test_smoothing_holds_back_a_one_frame_flicker():
    flicker = [1, 1, 1, 2, 1, 1]
    assert transcribe(softmax(one_hot_logits(flicker)), LABELS, DecisionRule(1, 1, 1, 0.5)) == [(0, 1), (3, 2), (4, 1)]
    # The mean of 3 frames keeps a on top through the flicker (2/3 of the mass): one letter.
    assert transcribe(softmax(one_hot_logits(flicker)), LABELS, DecisionRule(1, 3, 1, 0.5)) == [(0, 1)]


def test_live_figures_by_hand():
    # 30 fps, 300 frames; signs a [30, 60) and b [150, 180): 60 sign frames, 240 idle = 8 s = 2/15 min.
    truth = VideoTruth([("a", 30, 60), ("b", 150, 180)], 300, 30.0)
    printed = [(2.3, "a"), (4.0, "a"), (6.3, "b")]  # a at 0.3 s after its end, a false a, b 0.3 s after its end
    figures = live_figures([(truth, printed)])
    assert figures["insertions"] == 1 and figures["substitutions"] == figures["deletions"] == 0
    assert figures["letter_accuracy"] == pytest.approx(0.5)
    assert figures["false_events_per_idle_minute"] == pytest.approx(1 / (8 / 60))
    assert figures["latency_s"]["median"] == pytest.approx(0.3)


def test_all_frames_at_once_decide_as_one_frame_at_a_time():
    # transcribe (training's choice of the rule, the card) against Transcriber (predict, the page's reference).
    rng = np.random.default_rng(1)
    for _ in range(200):
        rule = DecisionRule(1, int(rng.integers(1, 9)), int(rng.integers(1, 5)), float(rng.choice([0.3, 0.5, 0.7])))
        logits = rng.normal(0, 2, (int(rng.integers(1, 40)), len(LABELS))) + 4 * np.eye(len(LABELS))[rng.integers(0, 3, 1)]
        transcriber = Transcriber(LABELS, rule)
        one_at_a_time = [(i, k) for i, row in enumerate(logits) if (k := transcriber(row)) is not None]
        assert transcribe(softmax(logits), LABELS, rule) == one_at_a_time
