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
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

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
            raise ValueError(f"{line}: no usable clip" + (f" (first problem: {self.problems[0]})" if self.problems else ""))
        log.info(line) if not self.problems else log.warning(line)
        return line


def read_bukva(root: Path, split: str, source: str = "trimmed") -> tuple[list[VideoClip], SkipReport]:
    """Clips of the Bukva layout for split 'train' (train=True) or 'val' (train=False)."""
    root = Path(root)
    rows = _read_tsv(root / "annotations.tsv", {"attachment_id", "text", "begin", "end", "train"})
    videos = _files_by_stem(root / source)
    report = SkipReport(f"bukva {split} ({root})")
    wanted = "True" if split == "train" else "False"
    candidates = []
    for row in rows:
        if row["train"].strip() != wanted:
            continue
        attachment = row["attachment_id"].strip()
        if not _is_plain_name(attachment):
            report.skip(f"{root / 'annotations.tsv'}: attachment_id {attachment!r} is not a plain file name (would escape {root})")
        elif row["text"].strip() not in BUKVA_LABELS:
            report.skip(f"{attachment}: unknown label {row['text']!r}")
        elif attachment not in videos:
            report.skip(f"{root / source / attachment}.*: missing video")
        else:
            candidates.append((videos[attachment], BUKVA_LABELS.index(row["text"].strip()), row))
    counts = _probe_all([path for path, _, _ in candidates], report)
    clips = []
    for (path, label, row), count in zip(candidates, counts):
        if count is None:
            continue
        if source == "original":
            begin, end = int(row["begin"]), int(row["end"])
            clips.append(VideoClip(path, label, max(1, end - begin), start=begin))
        else:
            clips.append(VideoClip(path, label, count))
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
    """Item i: ((T, 3, S, S) float32 pixels 0..255, label), or None when the clip cannot be decoded."""

    def __init__(self, clips: list[ClipSource], num_segments: int, transform: FrameTransform, seed: int = 0) -> None:
        self.clips = clips
        self.num_segments = num_segments
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        clip = self.clips[index]
        # Training draws fresh frames every epoch (torch's per-worker seed changes each epoch);
        # evaluation is deterministic: middle frames, no augmentation.
        rng = np.random.default_rng([torch.initial_seed() % 2**32, index]) if self.transform.train else np.random.default_rng([self.seed, index])
        try:
            indices = segment_indices(clip.num_frames, self.num_segments, rng if self.transform.train else None)
            frames = self.transform(clip.frames(indices), rng)
        except UnreadableVideo as error:
            log.warning("skipped %s", error)
            return None
        return torch.from_numpy(frames).permute(0, 3, 1, 2).float(), clip.label


def collate_clips(items: list[tuple[torch.Tensor, int] | None]) -> tuple[torch.Tensor, torch.Tensor] | None:
    # -> ((B, T, 3, S, S), (B,)), dropping clips that failed to decode
    items = [item for item in items if item is not None]
    if not items:
        return None
    return torch.stack([clip for clip, _ in items]), torch.tensor([label for _, label in items])


def _read_tsv(path: Path, required: set[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        missing = required - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; found {reader.fieldnames}")
        return list(reader)


def _is_plain_name(name: str) -> bool:
    return bool(name) and name not in {".", ".."} and "/" not in name and "\\" not in name and "\0" not in name


def _files_by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"video folder not found: {folder}")
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
