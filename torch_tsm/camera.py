"""What a live camera does to clips that held-out clips drawn like the training clips do not: other
light, sensor noise, blur, compression, a hand a little off-centre, another aspect ratio.

CAMERA_CHANGES maps a name to a function of uint8 clips (M, T, S, S, 3) -> (M, T, S, S, 3), the same
change to every frame of a clip, deterministic (the noise is seeded). Sizes scale with S, so a
change means the same at 64 px and at 224 px. conversion.parity measures every uint8 stage under
each (its camera-change rows).
"""

from collections.abc import Callable

import cv2
import numpy as np

from torch_tsm.augment import brightness, contrast
from torch_tsm.frames import LETTERBOX_GREY

Change = Callable[[np.ndarray], np.ndarray]


def per_clip(step: Callable[[np.ndarray], np.ndarray]) -> Change:
    # a step on one clip seen as a tall (T*S, S, 3) image -> the change of (M, T, S, S, 3) clips
    return lambda clips: np.stack([step(clip.reshape(-1, *clip.shape[2:])).reshape(clip.shape) for clip in clips])


def per_frame(step: Callable[[np.ndarray], np.ndarray]) -> Change:
    return lambda clips: np.stack([[step(frame) for frame in clip] for clip in clips])


def noise(clips: np.ndarray, sigma: float = 8.0) -> np.ndarray:
    added = np.random.default_rng(0).normal(0, sigma, clips.shape)
    return np.clip(np.rint(clips + added), 0, 255).astype(np.uint8)


def blur(frame: np.ndarray) -> np.ndarray:
    # a slightly defocused camera: a Gaussian of 1 px at 64 px (3.5 px at 224)
    return cv2.GaussianBlur(frame, (0, 0), sigmaX=frame.shape[0] / 64)


def jpeg(frame: np.ndarray, quality: int = 30) -> np.ndarray:
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def translate(frame: np.ndarray) -> np.ndarray:
    # the scene a sixteenth of the frame right and down (4 px at 64 px), the edge pixels repeated
    size = frame.shape[0]
    offset = size / 16
    matrix = np.float32([[1, 0, offset], [0, 1, offset]])
    return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def letterbox_4_3(frame: np.ndarray) -> np.ndarray:
    # what a 4:3 camera of the same width gives after our letterbox: the scene at the same scale, its
    # top and bottom eighths behind grey bars (nothing squeezed: letterboxing keeps the aspect)
    size = frame.shape[0]
    top = (size - round(size * 3 / 4)) // 2
    boxed = frame.copy()
    boxed[:top] = LETTERBOX_GREY
    boxed[size - top :] = LETTERBOX_GREY
    return boxed


CAMERA_CHANGES: dict[str, Change] = {
    "dark x0.6": per_clip(lambda image: brightness(image, 0.6)),
    "bright x1.4": per_clip(lambda image: brightness(image, 1.4)),
    "contrast x0.5": per_clip(lambda image: contrast(image, 0.5)),
    "noise sigma 8": noise,
    "blur": per_frame(blur),
    "jpeg q30": per_frame(jpeg),
    "shifted 1/16": per_frame(translate),
    "letterbox 4:3": per_frame(letterbox_4_3),
}
