"""From a video (or a folder of frames) to the T frames a clip model sees.

TSN sampling: the video is cut into T equal segments and one frame is taken from each, at random in
training and the middle frame in evaluation. Frames are decoded with OpenCV, only up to the last one
needed, and turned into RGB uint8 squares either by letterbox (grey padding, as the Bukva baseline)
or by resize + crop. Every frame of a clip gets the same crop and flip.
"""

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

LETTERBOX_GREY = 114


class UnreadableVideo(Exception):
    """A video or frame that cannot be decoded; the message names the file."""


def segment_indices(num_frames: int, num_segments: int, rng: np.random.Generator | None) -> np.ndarray:
    # -> (T,) frame indices: random within each segment when rng is given, else each segment's middle
    if num_frames <= 0:
        raise ValueError("a clip needs at least one frame")
    edges = np.linspace(0, num_frames, num_segments + 1)
    starts, ends = edges[:-1], edges[1:]
    if rng is None:
        picks = (starts + ends) / 2
    else:
        picks = starts + rng.random(num_segments) * (ends - starts)
    # Videos shorter than T frames repeat frames rather than failing.
    return np.minimum(picks.astype(np.int64), num_frames - 1)


def probe_frame_count(path: Path) -> int:
    """The number of frames the container reports; raises UnreadableVideo when it cannot be opened."""
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
        return count
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


@dataclass(frozen=True)
class FrameTransform:
    """Turns decoded RGB frames of any size into a (T, S, S, 3) uint8 clip."""

    image_size: int
    resize: str = "letterbox"  # or "crop"
    train: bool = False
    flip: bool = False  # random horizontal flip in training

    def __call__(self, frames: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
        # T x (h, w, 3) uint8 -> (T, S, S, 3) uint8
        h, w = frames[0].shape[:2]
        if self.resize == "letterbox":
            place = _letterbox_placement(h, w, self.image_size)
            clip = np.stack([_letterbox(frame, place, self.image_size) for frame in frames])
        elif self.resize == "crop":
            box = _crop_box(h, w, rng if self.train else None)
            clip = np.stack([_resize(frame[box[0] : box[1], box[2] : box[3]], self.image_size) for frame in frames])
        else:
            raise ValueError(f"unknown resize {self.resize!r}; expected 'letterbox' or 'crop'")
        if self.train and self.flip and rng.random() < 0.5:
            clip = clip[:, :, ::-1]
        return np.ascontiguousarray(clip)


def _resize(frame: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    # (h, w, 3) -> (S, S, 3); area filter when shrinking, as good as it gets for downscaling
    width, height = (size, size) if isinstance(size, int) else size
    interpolation = cv2.INTER_AREA if frame.shape[0] > height else cv2.INTER_LINEAR
    return cv2.resize(frame, (width, height), interpolation=interpolation)


def _letterbox_placement(h: int, w: int, size: int) -> tuple[int, int, int, int]:
    scale = size / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    top, left = (size - new_h) // 2, (size - new_w) // 2
    return top, left, new_h, new_w


def _letterbox(frame: np.ndarray, place: tuple[int, int, int, int], size: int) -> np.ndarray:
    # (h, w, 3) -> (S, S, 3), aspect ratio kept, grey bars
    top, left, new_h, new_w = place
    canvas = np.full((size, size, 3), LETTERBOX_GREY, dtype=np.uint8)
    canvas[top : top + new_h, left : left + new_w] = _resize(frame, (new_w, new_h))
    return canvas


def _crop_box(h: int, w: int, rng: np.random.Generator | None) -> tuple[int, int, int, int]:
    # The largest centred square in evaluation; in training a random square of 80-100% of the short side.
    side = min(h, w)
    if rng is None:
        top, left = (h - side) // 2, (w - side) // 2
    else:
        side = int(side * rng.uniform(0.8, 1.0))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    return top, top + side, left, left + side
