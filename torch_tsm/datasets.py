"""Clip records for each dataset layout, and the one torch Dataset that turns any of them into tensors.

A record knows where its frames are and how many there are; it holds no pixels. Decoding happens in
DataLoader workers, one clip at a time, so memory is bounded by the batch, not the dataset.

Layouts:
- bukva:  ROOT/annotations.tsv (attachment_id, user_id, text, begin, end, height, width, train,
          length) and ROOT/trimmed/<attachment_id>.<ext>, or ROOT/original/<attachment_id>.<ext>
          cut on the fly to [begin, end).
- frames: ROOT/annotations.tsv with columns video, label, split (train/val) and frames in
          ROOT/<video>/*.jpg (sorted by name); class order from ROOT/labels.txt when present,
          else the sorted label names. Optional columns begin, end (the sign's frames in the folder:
          prepare's folders of original videos) and fps.

`no_event` clips: rows labelled so (their [begin, end) when given, else the whole video) and, where a
sign's [begin, end) in a longer video is known (original videos, and their prepared folders), the idle
parts of the video before and after the sign (see idle_spans).

Continuous videos (read_bukva_videos, read_frame_folder_videos): each original video with its one sign,
for scoring live recognition (runtime.live) and training on windows (torch_tsm.sequences), as the
built-in SyntheticVideo.

Bad entries (missing or unreadable files, unknown labels, paths escaping ROOT) are reported with
the file name and skipped, never fatal, unless nothing usable is left.
"""

import csv
import errno
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from torch_tsm.augment import ClipAugmentation
from torch_tsm.errors import UserError
from torch_tsm.frames import (
    FALLBACK_FPS,
    FrameTransform,
    UnreadableVideo,
    VideoProbe,
    decode_frames,
    letterbox,
    probe_video,
    read_image,
    read_video_frames,
    segment_indices,
)
from torch_tsm.labels import BUKVA_LABELS, read_labels
from torch_tsm.synthetic import NO_EVENT, Sign

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
# Idle no_event clips: a signer's hands rise before a sign's annotated begin and fall after its end, so
# the frames within IDLE_MARGIN_FRAMES of the sign are neither sign nor idle and are left out. An idle
# part shorter than IDLE_MIN_FRAMES is dropped: a clip of 8 segments would repeat its frames (a still
# image, which a camera never shows) and would be mostly the signer's hands moving anyway.
IDLE_MARGIN_FRAMES = 8
IDLE_MIN_FRAMES = 16
# Idle parts outnumber any one sign 30-60 times in Bukva's original videos (up to two per video, one video
# per sign, 33 signs): kept in full they would make no_event the safe answer to every clip. At most
# IDLE_CLIPS_PER_CLASS times the mean sign class's clip count are kept, evenly through the rows (so every
# signer keeps some); the rest are counted as left out. Rows labelled no_event are all kept.
IDLE_CLIPS_PER_CLASS = 3


class ClipSource(Protocol):
    name: str
    label: int

    @property
    def num_frames(self) -> int: ...

    def frames(self, indices: np.ndarray) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class VideoClip:
    path: Path
    label: int
    num_frames: int
    start: int = 0  # first frame of the clip inside the file

    @property
    def name(self) -> str:
        return str(self.path)

    def frames(self, indices: np.ndarray) -> list[np.ndarray]:
        return read_video_frames(self.path, indices, self.start)


@dataclass(frozen=True)
class FrameFolderClip:
    frame_paths: tuple[Path, ...]
    label: int

    @property
    def name(self) -> str:
        return str(self.frame_paths[0].parent)

    @property
    def num_frames(self) -> int:
        return len(self.frame_paths)

    def frames(self, indices: np.ndarray) -> list[np.ndarray]:
        return [read_image(self.frame_paths[int(i)]) for i in indices]


class SkipReport:
    """Collects what was skipped and why, and logs one summary line with the count."""

    def __init__(self, what: str, unit: str = "clips") -> None:
        self.what = what
        self.unit = unit
        self.problems: list[str] = []
        # no_event clips by origin ("labelled": rows so labelled, "idle": idle parts of a video around its
        # sign, "idle_left_out": idle parts beyond IDLE_CLIPS_PER_CLASS), for the summary line and the
        # model card; None where the data has no such class.
        self.no_event_clips: dict[str, int] | None = None

    def skip(self, problem: str) -> None:
        log.warning("skipped %s", problem)
        self.problems.append(problem)

    def summary(self, kept: int) -> str:
        line = f"{self.what}: {kept} {self.unit}, {len(self.problems)} skipped"
        if kept == 0:
            raise UserError(
                f"{line}: no usable {self.unit.rstrip('s')}" + (f" (first problem: {self.problems[0]})" if self.problems else "")
            )
        if self.no_event_clips is not None:
            counts = self.no_event_clips
            line += f"; no_event clips: {counts['labelled']} labelled, {counts['idle']} from idle parts"
            if counts["idle_left_out"]:
                line += f" ({counts['idle_left_out']} more left out: at most {IDLE_CLIPS_PER_CLASS}x a sign class's clips)"
        log.info(line) if not self.problems else log.warning(line)
        return line


@dataclass(frozen=True)
class BukvaEntry:
    """One usable row of Bukva's annotations.tsv whose video file exists."""

    attachment_id: str
    path: Path
    label: int
    train: bool
    user_id: str
    cut: tuple[int, int] | None  # [begin, end) frames of the sign in an original video; None for trimmed videos


def bukva_entries(root: Path, source: str, report: SkipReport, split: str | None = None) -> list[BukvaEntry]:
    """The rows of ROOT/annotations.tsv (of one split, or all) with a plain id, a known label and an existing
    video in ROOT/<source>/; the other rows are reported to `report`. No video is opened here."""
    root = Path(root)
    rows = _read_tsv(root / "annotations.tsv", {"attachment_id", "text", "begin", "end", "train"})
    videos = _files_by_stem(root / source)
    entries, seen = [], set()
    for row in rows:
        train = row["train"].strip() == "True"
        if split is not None and train != (split == "train"):
            continue
        attachment, text = row["attachment_id"].strip(), row["text"].strip()
        if attachment in seen:  # one video, one clip: and prepare writes one folder per id
            report.skip(f"{attachment}: attachment_id listed again (the first row is kept)")
            continue
        seen.add(attachment)
        if not _is_plain_name(attachment):
            report.skip(f"{root / 'annotations.tsv'}: attachment_id {attachment!r} is not a plain file name (would escape {root})")
        elif text not in BUKVA_LABELS:
            report.skip(f"{attachment}: unknown label {row['text']!r}")
        elif attachment not in videos:
            report.skip(f"{root / source / attachment}.*: missing video")
        elif source == "original" and (problem := _cut_problem(row["begin"], row["end"], text == NO_EVENT)):
            report.skip(f"{attachment}: {problem}")
        else:
            cut = _cut(row["begin"], row["end"]) if source == "original" else None
            entries.append(
                BukvaEntry(attachment, videos[attachment], BUKVA_LABELS.index(text), train, (row.get("user_id") or "").strip(), cut)
            )
    return entries


def _cut(begin: str, end: str) -> tuple[int, int] | None:
    """[begin, end) from two annotation fields, or None when they are not both frame numbers."""
    begin, end = begin.strip(), end.strip()
    return (int(begin), int(end)) if begin.isdigit() and end.isdigit() else None


def _cut_problem(begin: str, end: str, optional: bool) -> str | None:
    # A no_event row may leave begin/end out (the whole video is idle); a sign must say where it is.
    cut = _cut(begin, end)
    if cut is None:
        return None if optional and not begin.strip() and not end.strip() else f"begin/end {begin!r}/{end!r} are not frame numbers"
    return None if cut[0] < cut[1] else f"begin/end {begin!r}/{end!r}: an empty range"


def idle_spans(begin: int, end: int, length: int) -> list[tuple[int, int]]:
    """The [start, stop) parts of a video of `length` frames outside [begin - IDLE_MARGIN_FRAMES,
    end + IDLE_MARGIN_FRAMES) that hold at least IDLE_MIN_FRAMES frames: before the sign, after it, or both."""
    parts = [(0, begin - IDLE_MARGIN_FRAMES), (end + IDLE_MARGIN_FRAMES, length)]
    return [(start, stop) for start, stop in parts if stop - start >= IDLE_MIN_FRAMES]


def clip_spans(
    name: str, label: int, cut: tuple[int, int] | None, length: int, no_event: int | None, report: SkipReport
) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """The clips of one annotated video of `length` frames, as (start, stop, label): the row's own clip
    ([begin, end) when cut, else the whole video), and apart, around a sign whose place is known, the idle
    parts as `no_event` clips. A sign past the video's end is reported (no clips)."""
    begin, end = cut or (0, length)
    if _starts_past_end(name, begin, end, length, report):
        return [], []
    if label == no_event:
        report.no_event_clips["labelled"] += 1
    if no_event is None or cut is None or label == no_event:
        return [(begin, end, label)], []
    return [(begin, end, label)], [(start, stop, no_event) for start, stop in idle_spans(begin, end, length)]


def with_idle_clips(clips: list, idle: list, no_event: int, report: SkipReport) -> list:
    """`clips` and, of the idle no_event clips, at most IDLE_CLIPS_PER_CLASS times the mean sign class's clip
    count, evenly through the list; counted in report.no_event_clips."""
    signs = [clip.label for clip in clips if clip.label != no_event]
    limit = IDLE_CLIPS_PER_CLASS * len(signs) // max(1, len(set(signs)))
    kept = idle if len(idle) <= limit else [idle[i] for i in np.linspace(0, len(idle) - 1, limit).round().astype(int)]
    report.no_event_clips |= {"idle": len(kept), "idle_left_out": len(idle) - len(kept)}
    return clips + kept


def read_bukva(root: Path, split: str, source: str = "trimmed") -> tuple[list[VideoClip], SkipReport]:
    """Clips of the Bukva layout for split 'train' (train=True) or 'val' (train=False): each row's clip
    and, for original videos, the idle parts around its sign as no_event clips (report.no_event_clips)."""
    report = SkipReport(f"bukva {split} ({root})")
    report.no_event_clips = {"labelled": 0}
    entries = bukva_entries(root, source, report, split)
    probes = _probe_all([entry.path for entry in entries], report)
    no_event = BUKVA_LABELS.index(NO_EVENT)
    clips, idle = [], []
    for entry, probe in zip(entries, probes):
        if probe is not None:
            own, around = clip_spans(str(entry.path), entry.label, entry.cut, probe.frames, no_event, report)
            clips += [VideoClip(entry.path, label, stop - start, start=start) for start, stop, label in own]
            idle += [VideoClip(entry.path, label, stop - start, start=start) for start, stop, label in around]
    clips = with_idle_clips(clips, idle, no_event, report)
    report.summary(len(clips))
    return clips, report


@dataclass(frozen=True)
class BukvaVideo:
    """An original Bukva video as the camera saw it: idle, one sign, idle. The same interface as
    torch_tsm.synthetic.SyntheticVideo; frames are decoded on demand, so a list of these holds no pixels."""

    path: Path
    sign: Sign
    fps: float
    image_size: int  # frames are letterboxed to this size, as FrameTransform does in evaluation

    @property
    def name(self) -> str:
        return str(self.path)

    def render(self, min_frames: int = 0) -> tuple[np.ndarray, list[Sign]]:
        # -> (L, S, S, 3) uint8 RGB, the one sign; each frame is shrunk as it is decoded (150 Full-HD
        # frames at full size would be 900 MB)
        return _padded([letterbox(frame, self.image_size) for frame in decode_frames(self.path)], min_frames), [self.sign]


def read_bukva_videos(root: Path, split: str, image_size: int) -> tuple[list[BukvaVideo], SkipReport]:
    """The original videos of one split with their sign, as continuous videos; no_event rows have no sign
    and are left out (not counted as skipped)."""
    report = SkipReport(f"bukva {split} videos ({root})", unit="videos")
    entries = [entry for entry in bukva_entries(root, "original", report, split) if BUKVA_LABELS[entry.label] != NO_EVENT]
    probes = _probe_all([entry.path for entry in entries], report)
    videos = []
    for entry, probe in zip(entries, probes):
        if probe is None:
            continue
        begin, end = entry.cut
        if _starts_past_end(str(entry.path), begin, end, probe.frames, report):
            continue
        # the container's count bounds the sign: the annotation may run past the video's last frame
        videos.append(BukvaVideo(entry.path, Sign(BUKVA_LABELS[entry.label], begin, min(end, probe.frames)), probe.fps, image_size))
    report.summary(len(videos))
    return videos, report


def _starts_past_end(name: str, begin: int, end: int, length: int, report: SkipReport) -> bool:
    if begin < length:
        return False
    report.skip(f"{name}: begin/end {begin}/{end} start past the video's {length} frames")
    return True


def _padded(frames: list[np.ndarray], min_frames: int) -> np.ndarray:
    # (L, S, S, 3) with the last frame repeated up to min_frames: what a camera shows when nothing moves
    return np.stack(frames + frames[-1:] * max(0, min_frames - len(frames)))


def frame_folder_labels(root: Path) -> list[str]:
    """The class order of a frame-folder dataset: ROOT/labels.txt, else the sorted label names."""
    root = Path(root)
    if (root / "labels.txt").is_file():
        return read_labels(root / "labels.txt")
    rows = _read_tsv(root / "annotations.tsv", {"video", "label", "split"})
    return sorted({row["label"].strip() for row in rows})


@dataclass(frozen=True)
class FrameFolderRow:
    """One usable row of a frame-folder annotations.tsv whose folder holds images."""

    frame_paths: tuple[Path, ...]
    label: int
    cut: tuple[int, int] | None  # [begin, end) of the sign in the folder's frames (prepared original videos)
    fps: float


def frame_folder_rows(root: Path, split: str, report: SkipReport) -> list[FrameFolderRow]:
    """The rows of ROOT/annotations.tsv of one split with a plain name, a known label and a folder of images;
    the other rows are reported to `report`."""
    root = Path(root)
    labels = frame_folder_labels(root)
    rows = _read_tsv(root / "annotations.tsv", {"video", "label", "split"})
    usable = []
    for row in rows:
        if row["split"].strip() != split:
            continue
        video, label = row["video"].strip(), row["label"].strip()
        folder = root / video
        if not _is_plain_name(video):
            report.skip(f"{root / 'annotations.tsv'}: video {video!r} is not a plain folder name (would escape {root})")
        elif label not in labels:
            report.skip(f"{folder}: unknown label {label!r}")
        elif not folder.is_dir():
            report.skip(f"{folder}: missing frame folder")
        elif problem := _cut_problem(row.get("begin", ""), row.get("end", ""), optional=True):
            report.skip(f"{folder}: {problem}")
        else:
            frames = tuple(sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
            if frames:
                usable.append(
                    FrameFolderRow(frames, labels.index(label), _cut(row.get("begin", ""), row.get("end", "")), _fps(row.get("fps", "")))
                )
            else:
                report.skip(f"{folder}: holds no image")
    return usable


def _fps(text: str) -> float:
    # prepare writes the container's rate, 0.0 when it did not say; any other unusable value: the fallback too
    try:
        fps = float(text)
    except ValueError:
        return FALLBACK_FPS
    return fps if 0 < fps < float("inf") else FALLBACK_FPS


def read_frame_folders(root: Path, split: str) -> tuple[list[FrameFolderClip], SkipReport]:
    """Each row's clip ([begin, end) of its folder when given) and, with a no_event class, the idle parts
    around a sign as no_event clips."""
    labels = frame_folder_labels(root)
    report = SkipReport(f"frames {split} ({root})")
    no_event = labels.index(NO_EVENT) if NO_EVENT in labels else None
    if no_event is not None:
        report.no_event_clips = {"labelled": 0}
    clips, idle = [], []
    for row in frame_folder_rows(root, split, report):
        own, around = clip_spans(str(row.frame_paths[0].parent), row.label, row.cut, len(row.frame_paths), no_event, report)
        clips += [FrameFolderClip(row.frame_paths[start:stop], label) for start, stop, label in own]
        idle += [FrameFolderClip(row.frame_paths[start:stop], label) for start, stop, label in around]
    if no_event is not None:
        clips = with_idle_clips(clips, idle, no_event, report)
    report.summary(len(clips))
    return clips, report


@dataclass(frozen=True)
class FrameFolderVideo:
    """A prepared original video (all its frames, the sign's [begin, end) from prepare's annotations.tsv)
    as a continuous video: BukvaVideo's interface, for --data frames."""

    frame_paths: tuple[Path, ...]
    sign: Sign
    fps: float
    image_size: int

    @property
    def name(self) -> str:
        return str(self.frame_paths[0].parent)

    def render(self, min_frames: int = 0) -> tuple[np.ndarray, list[Sign]]:
        return _padded([letterbox(read_image(path), self.image_size) for path in self.frame_paths], min_frames), [self.sign]


def read_frame_folder_videos(root: Path, split: str, image_size: int) -> tuple[list[FrameFolderVideo], SkipReport]:
    """The folders of one split whose row places a sign (begin, end), as continuous videos; no_event rows
    and rows without begin/end (whole-clip folders: no idle around the sign) are left out, not counted."""
    labels = frame_folder_labels(root)
    report = SkipReport(f"frames {split} videos ({root})", unit="videos")
    videos = []
    for row in frame_folder_rows(root, split, report):
        if row.cut is None or labels[row.label] == NO_EVENT:
            continue
        begin, end = row.cut
        if not _starts_past_end(str(row.frame_paths[0].parent), begin, end, len(row.frame_paths), report):
            videos.append(
                FrameFolderVideo(row.frame_paths, Sign(labels[row.label], begin, min(end, len(row.frame_paths))), row.fps, image_size)
            )
    report.summary(len(videos))
    return videos, report


class ClipDataset(Dataset):
    """Item i: ((T, 3, S, S) uint8 pixels, label), or None when the clip cannot be decoded.

    Pixels stay uint8 until they reach the model's device: a quarter of float32's bytes through
    worker queues, pinned memory and the host-to-device copy.
    """

    def __init__(
        self,
        clips: list[ClipSource],
        num_segments: int,
        transform: FrameTransform,
        seed: int = 0,
        augmentation: ClipAugmentation | None = None,
    ) -> None:
        self.clips = clips
        self.num_segments = num_segments
        self.transform = transform
        self.seed = seed
        self.augmentation = augmentation  # training only
        # Shared with DataLoader workers, which live across epochs (persistent_workers): set_epoch
        # in the main process reaches them, so each epoch draws new frames, crops and flips.
        self.epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self.epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        clip = self.clips[index]
        # Training draws from (seed, epoch, clip): the same frames whatever the number of workers, and
        # a resumed run draws what the uninterrupted run drew. Evaluation: middle frames, no augmentation.
        train = self.transform.train
        rng = np.random.default_rng([self.seed, int(self.epoch), index] if train else [self.seed, index])
        try:
            indices = segment_indices(clip.num_frames, self.num_segments, rng if train else None)
            frames = self.transform(clip.frames(indices), rng)
        except UnreadableVideo as error:
            log.warning("skipped %s", error)
            return None
        label = clip.label
        if self.augmentation is not None:
            frames, label = self.augmentation(frames, label, rng)
        return torch.from_numpy(frames).permute(0, 3, 1, 2), label


def collate_clips(items: list[tuple[torch.Tensor, int] | None]) -> tuple[torch.Tensor, torch.Tensor] | None:
    # -> ((B, T, 3, S, S) uint8, (B,)), dropping clips that failed to decode
    items = [item for item in items if item is not None]
    if not items:
        return None
    return torch.stack([clip for clip, _ in items]), torch.tensor([label for _, label in items])


def usable_cores() -> int:
    """The CPU cores this process may run on (a container or taskset may allow fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _read_tsv(path: Path, required: set[str]) -> list[dict[str, str]]:
    """The rows of a tab-separated file with a header; UTF-8 with or without a BOM, LF or CRLF line ends."""
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "annotation file not found", str(path))
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter="\t")
            header = next(reader, None)
            if header is None:
                raise UserError(f"{path}: empty; expected a tab-separated header with {sorted(required)}")
            missing = required - set(header)
            if missing:
                raise UserError(f"{path}: missing column(s) {sorted(missing)}; found {header} (tab-separated?)")
            rows = []
            for fields in reader:
                if not fields:
                    continue  # a blank line
                if len(fields) != len(header):  # a shifted row: its values would land in the wrong columns
                    raise UserError(f"{path}: line {reader.line_num} has {len(fields)} fields, the header {len(header)}")
                rows.append(dict(zip(header, fields)))
    except UnicodeDecodeError as error:  # e.g. cp1251, common for Russian files
        raise UserError(f"{path}: not UTF-8 text (byte {error.start}); save it as UTF-8") from error
    return rows


def _is_plain_name(name: str) -> bool:
    return bool(name) and name not in {".", ".."} and "/" not in name and "\\" not in name and "\0" not in name


def _files_by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(errno.ENOENT, "video folder not found", str(folder))
    return {entry.name.rsplit(".", 1)[0]: Path(entry.path) for entry in os.scandir(folder) if entry.is_file()}


def _probe_all(paths: list[Path], report: SkipReport) -> list[VideoProbe | None]:
    # Opening thousands of videos one after another is slow; OpenCV releases the GIL, so threads help.
    def probe(path: Path) -> VideoProbe | UnreadableVideo:
        try:
            return probe_video(path)
        except UnreadableVideo as error:
            return error

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(probe, paths))
    for result in results:
        if isinstance(result, UnreadableVideo):
            report.skip(str(result))
    return [None if isinstance(result, UnreadableVideo) else result for result in results]
