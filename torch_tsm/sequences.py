"""Training for the live stream: windows of continuous video with a target for every frame.

A causal model's output at frame t depends on frames t-D..t alone (D shifted blocks, each reaching one
frame back), so in a window of consecutive kept frames every frame from the D-th on is computed exactly
as the live stream computes it, whatever came before the window. A loss on those frames trains the very
function that the stream runs (the first D frames are left out of the loss by the LightningModule).

The target of each kept frame:
- a sign's class once half of the sign has been seen, to its last frame;
- left out of the loss (IGNORE): the first half of a sign (a motion's direction, a glyph coming in: not
  yet decidable) and the SETTLE frames after it (the sign is still in the model's memory);
- `no_event` everywhere else: the idle stretches.
"""

import numpy as np
import torch
from torch.utils.data import Dataset

from torch_tsm.augment import ClipAugmentation
from torch_tsm.frames import FrameTransform
from torch_tsm.synthetic import NO_EVENT, Sign, SyntheticVideo

IGNORE = -100  # torch's cross_entropy ignore_index
SEQUENCE_FRAMES = 26  # kept frames a training window holds: the D = 10 frames of warm-up, then 16 in the loss
SETTLE_FRAMES = 3


def frame_targets(signs: list[Sign], kept_frames: np.ndarray, labels: list[str]) -> np.ndarray:
    # (L,) frame numbers of the kept frames in the video -> (L,) int64 class of each (IGNORE: left out of the loss)
    targets = np.full(len(kept_frames), labels.index(NO_EVENT), np.int64)
    for sign in signs:
        inside = np.flatnonzero((kept_frames >= sign.begin) & (kept_frames < sign.end))
        targets[inside] = IGNORE
        targets[inside[(len(inside) + 1) // 2 :]] = labels.index(sign.label)
        targets[np.flatnonzero(kept_frames >= sign.end)[:SETTLE_FRAMES]] = IGNORE
    return targets


class SequenceDataset(Dataset):
    """Item i: ((L, 3, S, S) uint8 kept frames of a window of video i, (L,) int64 targets).

    Training draws the window's start from (seed, epoch, video): each epoch sees another part of each
    video; evaluation takes each video's first window.
    """

    def __init__(
        self,
        videos: list[SyntheticVideo],
        labels: list[str],
        frame_step: int,
        transform: FrameTransform,
        seed: int = 0,
        augmentation: ClipAugmentation | None = None,
        length: int = SEQUENCE_FRAMES,
    ) -> None:
        self.videos = videos
        self.labels = labels
        self.frame_step = frame_step
        self.transform = transform
        self.seed = seed
        self.augmentation = augmentation  # training only
        self.length = length
        self.epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # as ClipDataset: reaches the workers

    def set_epoch(self, epoch: int) -> None:
        self.epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        train = self.transform.train
        rng = np.random.default_rng([self.seed, int(self.epoch), index, 1] if train else [self.seed, index, 1])
        span = self.length * self.frame_step
        frames, signs = self.videos[index].render(min_frames=span)
        start = int(rng.integers(0, len(frames) - span + 1)) if train else 0
        kept = start + self.frame_step * np.arange(self.length)
        clip = self.transform([frames[k] for k in kept], rng)
        targets = frame_targets(signs, kept, self.labels)
        if self.augmentation is not None:
            clip, targets = self.augmentation(clip, targets, rng)
        return torch.from_numpy(clip).permute(0, 3, 1, 2), torch.from_numpy(targets)
