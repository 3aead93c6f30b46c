"""The LightningDataModule: which clips, how they are sampled and batched. No pixels are held."""

from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.accelerators import CUDAAccelerator
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DataLoader, DistributedSampler

from torch_tsm.augment import ClipAugmentation, mirror_map
from torch_tsm.datasets import (
    ClipDataset,
    collate_clips,
    frame_folder_labels,
    read_bukva,
    read_bukva_videos,
    read_frame_folder_videos,
    read_frame_folders,
    usable_cores,
)
from torch_tsm.errors import UserError
from torch_tsm.frames import FrameTransform
from torch_tsm.labels import BUKVA_LABELS
from torch_tsm.sequences import SequenceDataset
from torch_tsm.synthetic import FRAME_STEP, MIRRORED_CLASSES, SYNTHETIC_LABELS, synthetic_clips, synthetic_videos

DATA_KINDS = ("synthetic", "bukva", "frames")
FLIP_PAIRS = {"synthetic": MIRRORED_CLASSES}
PHOTOMETRIC_DEFAULT = True
BLUR_DEFAULT = True
VALIDATION_SEQUENCES = 100  # windows of held-out continuous videos, for the per-frame validation accuracy


class EpochSampler(DistributedSampler):
    """The training order: this process's share of a shuffle drawn from (seed, epoch), which can start
    part-way through its epoch, so that a run resumed from a mid-epoch checkpoint trains on the rest of
    the epoch the uninterrupted run trained on (not on its first batches again).

    A DistributedSampler, so that Lightning calls set_epoch on it and leaves it in place under DDP; it
    also tells the clips which epoch it is, for their random frames, crops and flips.
    """

    def __init__(self, dataset: ClipDataset | SequenceDataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.skip = 0  # indices of the current epoch already trained on (a resumed run)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.skip = 0
        super().set_epoch(epoch)
        self.dataset.set_epoch(epoch)

    def __iter__(self):
        indices = list(super().__iter__())[self.skip :]
        self.skip = 0
        return iter(indices)


class ClipDataModule(pl.LightningDataModule):
    def __init__(
        self,
        data: str = "synthetic",
        data_root: str | Path | None = None,
        num_segments: int = 8,
        image_size: int = 64,
        batch_size: int = 12,
        num_workers: int | None = None,  # None: every usable core
        resize: str = "letterbox",
        flip: bool | None = None,  # None: on for bukva and frames, off for synthetic
        flip_pairs: Sequence[tuple[str, str]] | None = None,  # None: the data kind's (FLIP_PAIRS)
        photometric: bool = PHOTOMETRIC_DEFAULT,
        blur: bool = BLUR_DEFAULT,
        seed: int = 0,
        synthetic_sizes: tuple[int, int] = (1600, 400),
        bukva_source: str = "trimmed",
        stream_training: bool = False,
        sequence_batch_size: int | None = None,  # None: half the clips' batch
    ) -> None:
        super().__init__()
        if data not in DATA_KINDS:
            raise UserError(f"unknown data {data!r}; expected one of {DATA_KINDS}")
        if data != "synthetic" and data_root is None:
            raise UserError(f"--data {data} needs --data-root")
        self.data = data
        self.data_root = Path(data_root) if data_root is not None else None
        self.num_segments = num_segments
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = usable_cores() if num_workers is None else num_workers
        self.resize = resize
        # For people a flip mirrors handedness only; the built-in clips are left-right symmetric already.
        self.flip = (data != "synthetic") if flip is None else flip
        # The classes a flip turns into each other: the built-in move_right / move_left; none by default
        # for Bukva (a mirrored letter is the same letter signed with the other hand) and frame folders.
        self.flip_pairs = [tuple(pair) for pair in (flip_pairs if flip_pairs is not None else FLIP_PAIRS.get(data, []))]
        self.photometric = photometric
        self.blur = blur
        self.seed = seed
        self.synthetic_sizes = synthetic_sizes
        self.bukva_source = bukva_source
        # A causal model trains on windows of continuous video too, a loss on every frame (torch_tsm.sequences),
        # beside the clips: each step a batch of each.
        self.stream_training = stream_training
        self.sequence_batch_size = sequence_batch_size or max(2, batch_size // 2)
        self.frame_step = FRAME_STEP
        self.skipped: dict[str, int] = {}
        # per split, the no_event clips kept by origin: {"labelled": rows so labelled, "idle": idle parts
        # of videos around their sign}; Bukva and frame folders with a no_event class only
        self.no_event_clips: dict[str, dict[str, int]] = {}
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches done) from a mid-epoch checkpoint

    @property
    def labels(self) -> list[str]:
        if self.data == "synthetic":
            return list(SYNTHETIC_LABELS)
        if self.data == "bukva":
            return list(BUKVA_LABELS)
        return frame_folder_labels(self.data_root)

    def clips(self, split: str) -> list:
        """The clip records of 'train' or 'val' (Bukva's test split is its val split here)."""
        if self.data == "synthetic":
            count = self.synthetic_sizes[0 if split == "train" else 1]
            return synthetic_clips(split, count, self.seed, self.image_size)
        if self.data == "bukva":
            clips, report = read_bukva(self.data_root, split, self.bukva_source)
        else:
            clips, report = read_frame_folders(self.data_root, split)
        self.skipped[split] = len(report.problems)
        if report.no_event_clips is not None:
            self.no_event_clips[split] = dict(report.no_event_clips)
        return clips

    def videos(self, split: str, count: int | None = None, num_signs: int = 5) -> list:
        """Continuous videos of `split`: 'train', 'val', or 'test' (held out from choosing the decision rule).
        Built in: `count` generated videos of `num_signs` signs. Bukva (original/) and prepared frame folders:
        each original video with its one sign (val and test are both the held-out split), at most `count`."""
        if self.data == "synthetic":
            return synthetic_videos(split, count, self.seed, self.image_size, num_signs)
        reader = read_bukva_videos if self.data == "bukva" else read_frame_folder_videos
        videos, _ = reader(self.data_root, "train" if split == "train" else "val", self.image_size)
        return videos[:count]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.train_set = self.dataset("train", train=True)
            if self.stream_training:
                # built in: as many batches of windows as of clips, each step takes one of each; else every video
                count = max(1, len(self.train_set) // self.batch_size) * self.sequence_batch_size if self.data == "synthetic" else None
                self.train_sequences = self.sequence_dataset(self.videos("train", count, num_signs=2), train=True)
        self.val_set = self.dataset("val", train=False)
        if self.stream_training:
            self.val_sequences = self.sequence_dataset(self.videos("val", VALIDATION_SEQUENCES, num_signs=2), train=False)

    def sequence_dataset(self, videos: list, train: bool) -> SequenceDataset:
        transform = FrameTransform(self.image_size, self.resize, train=train)
        augmentation = ClipAugmentation(self.flip, mirror_map(self.flip_pairs, self.labels), self.photometric, self.blur) if train else None
        return SequenceDataset(videos, self.labels, self.frame_step, transform, self.seed, augmentation)

    def dataset(self, split: str, train: bool) -> ClipDataset:
        transform = FrameTransform(self.image_size, self.resize, train=train)
        augmentation = ClipAugmentation(self.flip, mirror_map(self.flip_pairs, self.labels), self.photometric, self.blur) if train else None
        return ClipDataset(self.clips(split), self.num_segments, transform, self.seed, augmentation)

    def train_dataloader(self) -> DataLoader | CombinedLoader:
        clips = self._loader(self.train_set, self._sampler(self.train_set, self.batch_size), self.batch_size, collate_clips)
        if not self.stream_training:
            return clips
        sequences = self._loader(
            self.train_sequences, self._sampler(self.train_sequences, self.sequence_batch_size), self.sequence_batch_size
        )
        # An epoch is one pass over the clips; the windows start again if there are fewer of them.
        return CombinedLoader({"clips": clips, "sequences": sequences}, mode="max_size_cycle")

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        clips = self._loader(self.val_set, None, self.batch_size, collate_clips)
        if not self.stream_training:
            return clips
        return [clips, self._loader(self.val_sequences, None, self.sequence_batch_size)]

    def _sampler(self, dataset: ClipDataset | SequenceDataset, batch_size: int) -> EpochSampler:
        trainer = self.trainer
        sampler = EpochSampler(dataset, trainer.world_size if trainer else 1, trainer.global_rank if trainer else 0, self.seed)
        if self.resume_at is not None:
            # Set before Lightning first iterates the loader (workers start drawing at once), and it does
            # not call on_train_epoch_start for an epoch resumed mid-way.
            epoch, batches = self.resume_at
            sampler.set_epoch(epoch)
            sampler.skip = batches * batch_size
        return sampler

    def state_dict(self) -> dict:
        """Saved in every checkpoint: where in its epoch the training order stands."""
        trainer = self.trainer
        if trainer is None:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if done >= trainer.num_training_batches:  # saved at an epoch's end: a resumed run starts the next one
            return {"epoch": trainer.current_epoch + 1, "batches_done": 0}
        return {"epoch": trainer.current_epoch, "batches_done": done}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.resume_at = (state["epoch"], state["batches_done"])

    def _loader(self, dataset: ClipDataset | SequenceDataset, sampler: EpochSampler | None, batch_size: int, collate_fn=None) -> DataLoader:
        workers = self.num_workers > 0
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=sampler is not None and len(dataset) > batch_size,  # BatchNorm needs more than one clip
            num_workers=self.num_workers,
            persistent_workers=workers,
            # Two batches ready per worker: with 16 workers, 32 batches hide a slow video, and at batch 64
            # (uint8, 8 x 224 px) they hold 2.5 GB of shared memory; more would buy nothing but memory.
            prefetch_factor=2 if workers else None,
            # Page-locked batches copy to the GPU asynchronously; pointless (and costly) without one.
            pin_memory=self.trainer is not None and isinstance(self.trainer.accelerator, CUDAAccelerator),
            collate_fn=collate_fn,
        )
