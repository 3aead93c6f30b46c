"""The LightningDataModule: which clips, how they are sampled and batched. No pixels are held."""

from pathlib import Path

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from torch_tsm.datasets import ClipDataset, collate_clips, frame_folder_labels, read_bukva, read_frame_folders
from torch_tsm.frames import FrameTransform
from torch_tsm.labels import BUKVA_LABELS
from torch_tsm.synthetic import SYNTHETIC_LABELS, synthetic_clips

DATA_KINDS = ("synthetic", "bukva", "frames")


class ClipDataModule(pl.LightningDataModule):
    def __init__(
        self,
        data: str = "synthetic",
        data_root: str | Path | None = None,
        num_segments: int = 8,
        image_size: int = 64,
        batch_size: int = 12,
        num_workers: int = 2,
        resize: str = "letterbox",
        flip: bool | None = None,
        seed: int = 0,
        synthetic_sizes: tuple[int, int] = (1600, 400),
        bukva_source: str = "trimmed",
    ) -> None:
        super().__init__()
        if data not in DATA_KINDS:
            raise ValueError(f"unknown data {data!r}; expected one of {DATA_KINDS}")
        if data != "synthetic" and data_root is None:
            raise ValueError(f"--data {data} needs --data-root")
        self.data = data
        self.data_root = Path(data_root) if data_root is not None else None
        self.num_segments = num_segments
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.resize = resize
        # Flipping would swap the synthetic left/right classes; for people it mirrors handedness only.
        self.flip = (data != "synthetic") if flip is None else flip
        self.seed = seed
        self.synthetic_sizes = synthetic_sizes
        self.bukva_source = bukva_source
        self.skipped: dict[str, int] = {}

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
        return clips

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.train_set = self.dataset("train", train=True)
        self.val_set = self.dataset("val", train=False)

    def dataset(self, split: str, train: bool) -> ClipDataset:
        transform = FrameTransform(self.image_size, self.resize, train=train, flip=self.flip)
        return ClipDataset(self.clips(split), self.num_segments, transform, self.seed)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def _loader(self, dataset: ClipDataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(dataset) > self.batch_size,  # BatchNorm needs more than one clip
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_clips,
        )
