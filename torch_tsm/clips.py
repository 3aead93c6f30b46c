"""Real clips for calibration and parity, read with the same data code and preprocessing as training."""

from pathlib import Path

import numpy as np

from torch_tsm.datamodule import ClipDataModule


def data_module(config: dict, data: str | None = None, data_root: Path | None = None) -> ClipDataModule:
    """The data a model was trained on (its card's config), or other data of the same shape. What the card does
    not say keeps ClipDataModule's default."""
    options = {key: config[key] for key in ("resize", "seed", "bukva_source") if key in config}
    if "synthetic_clips" in config:
        options["synthetic_sizes"] = tuple(config["synthetic_clips"])
    return ClipDataModule(
        data=data or config["data"],
        data_root=data_root if data else config.get("data_root"),
        num_segments=config["num_segments"],
        image_size=config["image_size"],
        **options,
    )


def load_clips(data: ClipDataModule, split: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    # -> (M, T, S, S, 3) uint8 clips and (M,) labels; evaluation preprocessing (middle frames, no
    # augmentation), every class represented (class_balanced_picks)
    dataset = data.dataset(split, train=False)
    picks = class_balanced_picks([clip.label for clip in dataset.clips], count)
    items = [item for item in (dataset[int(i)] for i in picks) if item is not None]
    clips = np.stack([clip.permute(0, 2, 3, 1).numpy() for clip, _ in items])
    return clips, np.array([label for _, label in items])


def class_balanced_picks(labels: list[int], count: int) -> np.ndarray:
    """`count` indices (all when there are fewer), taken from each class in turn, each class's clips in
    order: every class is represented, and as evenly as the split allows. (Evenly spaced indices are
    not: the built-in clips cycle through the classes, and every second one of 400 is an even class.)"""
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    queues = [indices[::-1] for _, indices in sorted(by_class.items())]
    picks: list[int] = []
    while len(picks) < count and any(queues):
        for queue in queues:
            if queue and len(picks) < count:
                picks.append(queue.pop())
    return np.sort(np.array(picks, dtype=np.int64))


def held_out_clips(card: dict, count: int) -> tuple[np.ndarray, np.ndarray]:
    return load_clips(data_module(card["config"]), "val", count)
