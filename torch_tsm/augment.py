"""Training augmentation of a whole clip: one change, drawn once per clip, made to every frame alike.

- Horizontal flip (p = 0.5), with a label map for classes that are each other's mirror image
  (mmaction2's flip_label_map): a flipped "move right" clip is a "move left" clip.
- Photometric jitter, mmaction2's ColorJitter defaults: brightness, contrast and saturation factors
  drawn from [0.5, 1.5] and the hue turned by up to a tenth of the colour circle, in random order;
  a camera sees other light than the training videos did.
- Defocus: a Gaussian blur on half the clips, its sigma drawn from 0.5 to 1.5 px at 64 px (1.75 to
  5.25 px at 224 px); a webcam is rarely as sharp as a rendered or a Full-HD training clip.

OpenCV on the uint8 frames rather than torchvision's tensor functions: the DataLoader workers also
decode the videos, and at 224 px x 8 frames torchvision's hue alone takes longer than a decode
(bench/loader.py, row 12e, measures both: about ten times faster).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from torch_tsm.errors import UserError

# mmaction2's ColorJitter defaults: factors in [1 - x, 1 + x]; hue as a fraction of the circle
BRIGHTNESS = CONTRAST = SATURATION = 0.5
HUE = 0.1
GREY_WEIGHTS = np.array([0.299, 0.587, 0.114])  # RGB -> luma, as torchvision and OpenCV
FLIP_CHANCE = BLUR_CHANCE = 0.5
BLUR_SIGMA = (0.5 / 64, 1.5 / 64)  # as fractions of the frame side, so that a blur means the same at every size


@dataclass(frozen=True)
class ClipAugmentation:
    flip: bool = False
    mirrored: tuple[int, ...] = ()  # label -> the label of its mirror image (a permutation; () = every label its own)
    photometric: bool = False
    blur: bool = False

    def __call__(self, clip: np.ndarray, label: int | np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int | np.ndarray]:
        # (T, S, S, 3) uint8 -> (T, S, S, 3) uint8, and the label of what the clip now shows; or, for a
        # sequence, (T,) labels of its frames (negative: no label) -> those of the frames now
        if self.flip and rng.random() < FLIP_CHANCE:
            clip = mirror(clip)
            if self.mirrored:
                label = (
                    np.where(label >= 0, np.asarray(self.mirrored)[np.maximum(label, 0)], label)
                    if isinstance(label, np.ndarray)
                    else self.mirrored[label]
                )
        clip = np.ascontiguousarray(clip)
        if self.blur and rng.random() < BLUR_CHANCE:
            clip = defocus(clip, rng.uniform(*BLUR_SIGMA) * clip.shape[1])
        if self.photometric:
            clip = jitter_colours(clip, rng)
        return clip, label


def mirror(clip: np.ndarray) -> np.ndarray:
    # (T, S, S, 3) uint8 -> (T, S, S, 3) uint8, every frame flipped left to right; OpenCV on the clip as one
    # tall image copies 60x faster than numpy's negative-stride copy (3.6 against 0.06 ms at 224 px)
    return cv2.flip(np.ascontiguousarray(clip).reshape(-1, *clip.shape[2:]), 1).reshape(clip.shape)


def defocus(clip: np.ndarray, sigma: float) -> np.ndarray:
    # (T, S, S, 3) uint8 -> (T, S, S, 3) uint8; frame by frame, so that no frame bleeds into the next
    return np.stack([cv2.GaussianBlur(frame, (0, 0), sigmaX=sigma) for frame in clip])


def jitter_colours(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # (T, S, S, 3) uint8 RGB -> (T, S, S, 3) uint8 RGB; the clip is one tall image, so every frame gets the same change
    image = clip.reshape(-1, *clip.shape[2:])
    b, c, s = 1 + rng.uniform(-1, 1, 3) * [BRIGHTNESS, CONTRAST, SATURATION]
    h = rng.uniform(-HUE, HUE)
    steps = [lambda x: brightness(x, b), lambda x: contrast(x, c), lambda x: saturation(x, s), lambda x: hue(x, h)]
    for step in rng.permutation(len(steps)):
        image = steps[step](image)
    return image.reshape(clip.shape)


# The four steps on an (H, W, 3) uint8 RGB image, as torchvision's adjust_* functions compute them.


def brightness(image: np.ndarray, factor: float) -> np.ndarray:
    return _lookup(image, np.arange(256) * factor)


def contrast(image: np.ndarray, factor: float) -> np.ndarray:
    # towards the image's mean grey level
    mean = float(np.dot(cv2.mean(image)[:3], GREY_WEIGHTS))
    return _lookup(image, np.arange(256) * factor + (1 - factor) * mean)


def saturation(image: np.ndarray, factor: float) -> np.ndarray:
    # towards each pixel's own grey
    grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return cv2.addWeighted(image, factor, grey, 1 - factor, 0)


def hue(image: np.ndarray, shift: float) -> np.ndarray:
    # shift: a fraction of the colour circle; OpenCV's uint8 hue runs over 0..179
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + round(shift * 180)) % 180
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _lookup(image: np.ndarray, table: np.ndarray) -> np.ndarray:
    return cv2.LUT(image, np.clip(np.rint(table), 0, 255).astype(np.uint8))


def parse_flip_pairs(text: str) -> list[tuple[str, str]]:
    """`A:B,C:D`, or a file with one `A:B` pair a line: the classes that are each other's mirror image."""
    path = Path(text)
    source = path.read_text(encoding="utf-8") if path.is_file() else text
    items = [item.strip() for item in source.replace("\n", ",").split(",") if item.strip()]
    pairs = []
    for item in items:
        names = [name.strip() for name in item.split(":")]
        if len(names) != 2 or not all(names):
            raise UserError(f"{text}: flip pair {item!r} is not of the form A:B")
        pairs.append((names[0], names[1]))
    return pairs


def mirror_map(pairs: Sequence[tuple[str, str]], labels: Sequence[str]) -> tuple[int, ...]:
    """The label -> mirrored label permutation of ClipAugmentation; () when there is no pair."""
    mirrored = list(range(len(labels)))
    for a, b in pairs:
        for name in (a, b):
            if name not in labels:
                raise UserError(f"flip pair {a}:{b}: no class {name!r} (classes: {', '.join(labels)})")
        i, j = labels.index(a), labels.index(b)
        if i == j or mirrored[i] != i or mirrored[j] != j:
            raise UserError(f"flip pair {a}:{b}: a class may be in one pair only, with another class")
        mirrored[i], mirrored[j] = j, i
    return tuple(mirrored) if pairs else ()
