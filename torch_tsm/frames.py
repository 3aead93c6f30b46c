"""From a video (or a folder of frames) to the T frames a clip model sees.

TSN sampling: the video is cut into T equal segments and one frame is taken from each, at random in
training and the middle frame in evaluation. Frames are decoded with OpenCV, only up to the last one
needed, and turned into RGB uint8 squares by letterbox (grey padding, as the Bukva baseline), by
resize + crop, or by the Bukva baseline's multi-scale crop + letterbox. Every frame of a clip gets the
same crop (training's flip and colour changes: torch_tsm.augment).
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from torch_tsm.errors import UserError

LETTERBOX_GREY = 114


class UnreadableVideo(UserError):
    """A video or frame that cannot be decoded; the message names the file.

    Datasets skip such a clip and go on; a command given the one file (predict) stops with it.
    """


def segment_indices(num_frames: int, num_segments: int, rng: np.random.Generator | None) -> np.ndarray:
    # -> (T,) frame indices: random within each segment when rng is given, else each segment's middle
    if num_frames <= 0:
        raise ValueError("a clip needs at least one frame")
    edges = np.linspace(0, num_frames, num_segments + 1)
    starts, ends = edges[:-1], edges[1:]
    picks = (starts + ends) / 2 if rng is None else starts + rng.random(num_segments) * (ends - starts)
    # Videos shorter than T frames repeat frames rather than failing.
    return np.minimum(picks.astype(np.int64), num_frames - 1)


FALLBACK_FPS = 30.0  # a container that does not say its frame rate: a camera's usual rate


@dataclass(frozen=True)
class VideoProbe:
    frames: int  # as the container reports them (it may decode fewer)
    fps: float


def probe_video(path: Path) -> VideoProbe:
    """The frame count and rate the container reports; raises UnreadableVideo when it cannot be opened."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise UnreadableVideo(f"{path}: cannot be opened as a video")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if count <= 0:
            ok, _ = capture.read()
            if not ok:
                raise UnreadableVideo(f"{path}: holds no decodable frame")
            count = 1
        fps = capture.get(cv2.CAP_PROP_FPS)
        return VideoProbe(count, fps if fps > 0 else FALLBACK_FPS)
    finally:
        capture.release()


def probe_frame_count(path: Path) -> int:
    return probe_video(path).frames


def decode_frames(path: Path) -> Iterator[np.ndarray]:
    """Every frame of a video in order, RGB, one at a time: a caller that shrinks each frame as it comes
    never holds the video at full size. Raises UnreadableVideo when no frame can be decoded."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise UnreadableVideo(f"{path}: cannot be opened as a video")
        decoded = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            decoded += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        if decoded == 0:
            raise UnreadableVideo(f"{path}: no frame could be decoded")
    finally:
        capture.release()


def read_video_frames(path: Path, indices: np.ndarray, start: int = 0) -> list[np.ndarray]:
    """RGB frames at `start + indices` (sorted), decoded sequentially up to the last one needed.

    A container may report more frames than it decodes; a frame past the real end repeats the last
    one decoded.
    """
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise UnreadableVideo(f"{path}: cannot be opened as a video")
        if start:
            capture.set(cv2.CAP_PROP_POS_FRAMES, start)
        wanted = set(int(i) for i in indices)
        decoded: dict[int, np.ndarray] = {}
        for index in range(max(wanted) + 1):
            if not capture.grab():
                break
            if index in wanted:
                ok, frame = capture.retrieve()
                if ok:
                    decoded[index] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()
    if not decoded:
        raise UnreadableVideo(f"{path}: no frame could be decoded")
    clip, previous = [], decoded[min(decoded)]
    for index in indices:
        previous = decoded.get(int(index), previous)
        clip.append(previous)
    return clip


def read_image(path: Path) -> np.ndarray:
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if frame is None:
        raise UnreadableVideo(f"{path}: cannot be decoded as an image")
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


RESIZE_MODES = ("letterbox", "crop", "multiscale")
# The Bukva baseline's multi-scale crop (mmaction2's MultiScaleCrop): side lengths relative to the short side.
MULTISCALE_SCALES = (1.0, 0.875, 0.75, 0.66)


@dataclass(frozen=True)
class FrameTransform:
    """Turns decoded RGB frames of any size into a (T, S, S, 3) uint8 clip."""

    image_size: int
    resize: str = "letterbox"  # see RESIZE_MODES
    train: bool = False  # a random crop (crop, multiscale); evaluation: a fixed one

    def __call__(self, frames: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
        # T x (h, w, 3) uint8 -> (T, S, S, 3) uint8
        h, w = frames[0].shape[:2]
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"unknown resize {self.resize!r}; expected one of {RESIZE_MODES}")
        if self.resize == "crop":
            box = _crop_box(h, w, rng if self.train else None)
            clip = np.stack([resize_frame(frame[box[0] : box[1], box[2] : box[3]], (self.image_size, self.image_size)) for frame in frames])
        else:
            # multiscale: a random box of the baseline's scales in training, letterboxed; evaluation letterboxes the whole frame
            box = _multiscale_box(h, w, rng) if self.resize == "multiscale" and self.train else (0, h, 0, w)
            place = _letterbox_placement(box[1] - box[0], box[3] - box[2], self.image_size)
            clip = np.stack([_letterbox(frame[box[0] : box[1], box[2] : box[3]], place, self.image_size) for frame in frames])
        return clip


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    # (h, w, 3) -> (height, width, 3) for size (width, height)
    width, height = size
    # Shrinking: exact halvings by the area filter (2x2 means, OpenCV's fast path: 0.8 ms from Full HD,
    # where one area resize to 256 px takes 10 ms), then bilinear for the last step, which is under 2x.
    while frame.shape[1] >= 2 * width and frame.shape[0] >= 2 * height:
        h, w = frame.shape[0] // 2, frame.shape[1] // 2
        frame = cv2.resize(frame[: 2 * h, : 2 * w], (w, h), interpolation=cv2.INTER_AREA)
    return cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)


def short_side_size(h: int, w: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side at `short_side`, aspect ratio kept; never larger than (w, h)."""
    scale = min(1.0, short_side / min(h, w))
    return max(1, round(w * scale)), max(1, round(h * scale))


def letterbox(frame: np.ndarray, size: int) -> np.ndarray:
    """(h, w, 3) -> (S, S, 3): one frame as FrameTransform(size) letterboxes it in evaluation."""
    return _letterbox(frame, _letterbox_placement(*frame.shape[:2], size), size)


def _letterbox_placement(h: int, w: int, size: int) -> tuple[int, int, int, int]:
    scale = size / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    top, left = (size - new_h) // 2, (size - new_w) // 2
    return top, left, new_h, new_w


def _letterbox(frame: np.ndarray, place: tuple[int, int, int, int], size: int) -> np.ndarray:
    # (h, w, 3) -> (S, S, 3), aspect ratio kept, grey bars
    top, left, new_h, new_w = place
    canvas = np.full((size, size, 3), LETTERBOX_GREY, dtype=np.uint8)
    canvas[top : top + new_h, left : left + new_w] = resize_frame(frame, (new_w, new_h))
    return canvas


def _multiscale_box(h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    # A box whose height and width are each one of MULTISCALE_SCALES x the short side, at most one
    # scale step apart (mmaction2's max_wh_scale_gap=1), at a random place in the frame.
    side = min(h, w)
    while True:
        i, j = rng.integers(0, len(MULTISCALE_SCALES), 2)
        if abs(int(i) - int(j)) <= 1:
            break
    box_h, box_w = int(side * MULTISCALE_SCALES[i]), int(side * MULTISCALE_SCALES[j])
    top, left = int(rng.integers(0, h - box_h + 1)), int(rng.integers(0, w - box_w + 1))
    return top, top + box_h, left, left + box_w


def _crop_box(h: int, w: int, rng: np.random.Generator | None) -> tuple[int, int, int, int]:
    # The largest centred square in evaluation; in training a random square of 80-100% of the short side.
    side = min(h, w)
    if rng is None:
        top, left = (h - side) // 2, (w - side) // 2
    else:
        side = int(side * rng.uniform(0.8, 1.0))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    return top, top + side, left, left + side
