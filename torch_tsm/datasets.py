"""Clip records for each dataset layout, and the one torch Dataset that turns any of them into tensors.

A record knows where its frames are and how many there are; it holds no pixels. Decoding happens in
DataLoader workers, one clip at a time, so memory is bounded by the batch, not the dataset.

Layouts:
- bukva:  ROOT/annotations.tsv (attachment_id, user_id, text, begin, end, height, width, train,
          length) and ROOT/trimmed/<attachment_id>.<ext>, or ROOT/original/<attachment_id>.<ext>
          cut on the fly to [begin, end).
- frames: ROOT/annotations.tsv with columns video, label, split (train/val) and frames in
          ROOT/<video>/*.jpg (sorted by name); class order from ROOT/labels.txt when present,
          else the sorted label names.
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
from torch_tsm.frames import FrameTransform, UnreadableVideo, probe_frame_count, read_image, read_video_frames, segment_indices
from torch_tsm.labels import BUKVA_LABELS, read_labels

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


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

    def __init__(self, what: str) -> None:
        self.what = what
        self.problems: list[str] = []

    def skip(self, problem: str) -> None:
        log.warning("skipped %s", problem)
        self.problems.append(problem)

    def summary(self, kept: int) -> str:
        line = f"{self.what}: {kept} clips, {len(self.problems)} skipped"
        if kept == 0:
            raise UserError(f"{line}: no usable clip" + (f" (first problem: {self.problems[0]})" if self.problems else ""))
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
        elif source == "original" and not (row["begin"].strip().isdigit() and row["end"].strip().isdigit()):
            report.skip(f"{attachment}: begin/end {row['begin']!r}/{row['end']!r} are not frame numbers")
        else:
            cut = (int(row["begin"]), int(row["end"])) if source == "original" else None
            entries.append(BukvaEntry(attachment, videos[attachment], BUKVA_LABELS.index(text), train, (row.get("user_id") or "").strip(), cut))
    return entries


def read_bukva(root: Path, split: str, source: str = "trimmed") -> tuple[list[VideoClip], SkipReport]:
    """Clips of the Bukva layout for split 'train' (train=True) or 'val' (train=False)."""
    report = SkipReport(f"bukva {split} ({root})")
    entries = bukva_entries(root, source, report, split)
    counts = _probe_all([entry.path for entry in entries], report)
    clips = []
    for entry, count in zip(entries, counts):
        if count is None:
            continue
        if entry.cut is not None:
            begin, end = entry.cut
            clips.append(VideoClip(entry.path, entry.label, max(1, end - begin), start=begin))
        else:
            clips.append(VideoClip(entry.path, entry.label, count))
    report.summary(len(clips))
    return clips, report


def frame_folder_labels(root: Path) -> list[str]:
    """The class order of a frame-folder dataset: ROOT/labels.txt, else the sorted label names."""
    root = Path(root)
    if (root / "labels.txt").is_file():
        return read_labels(root / "labels.txt")
    rows = _read_tsv(root / "annotations.tsv", {"video", "label", "split"})
    return sorted({row["label"].strip() for row in rows})


def read_frame_folders(root: Path, split: str) -> tuple[list[FrameFolderClip], SkipReport]:
    root = Path(root)
    labels = frame_folder_labels(root)
    rows = _read_tsv(root / "annotations.tsv", {"video", "label", "split"})
    report = SkipReport(f"frames {split} ({root})")
    clips = []
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
        else:
            frames = tuple(sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
            if frames:
                clips.append(FrameFolderClip(frames, labels.index(label)))
            else:
                report.skip(f"{folder}: holds no image")
    report.summary(len(clips))
    return clips, report


class ClipDataset(Dataset):
    """Item i: ((T, 3, S, S) uint8 pixels, label), or None when the clip cannot be decoded.

    Pixels stay uint8 until they reach the model's device: a quarter of float32's bytes through
    worker queues, pinned memory and the host-to-device copy.
    """

    def __init__(
        self, clips: list[ClipSource], num_segments: int, transform: FrameTransform, seed: int = 0, augmentation: ClipAugmentation | None = None
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


def _probe_all(paths: list[Path], report: SkipReport) -> list[int | None]:
    # Opening thousands of videos one after another is slow; OpenCV releases the GIL, so threads help.
    def probe(path: Path) -> int | UnreadableVideo:
        try:
            return probe_frame_count(path)
        except UnreadableVideo as error:
            return error

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(probe, paths))
    for result in results:
        if isinstance(result, UnreadableVideo):
            report.skip(str(result))
    return [None if isinstance(result, UnreadableVideo) else result for result in results]
