"""Real clips for calibration and parity, read with the same data code and preprocessing as training."""

import json
from pathlib import Path

import numpy as np

from torch_tsm.datamodule import ClipDataModule


def read_card(model_dir: Path) -> dict:
    path = Path(model_dir) / "model_card.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {model_dir} is not a model folder written by torch_tsm.train")
    return json.loads(path.read_text(encoding="utf-8"))


def update_card(model_dir: Path, labels: list[str], figures: dict, *keys: str) -> None:
    """Writes `figures` at card[keys[0]][keys[1]]... of model_dir/model_card.json, creating the card if need be."""
    path = Path(model_dir) / "model_card.json"
    card = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"model": "MobileNetV2-TSM", "labels": labels}
    section = card
    for key in keys[:-1]:
        section = section.setdefault(key, {})
    section[keys[-1]] = figures
    path.write_text(json.dumps(card, indent=2, ensure_ascii=False), encoding="utf-8")


def data_module(config: dict, data: str | None = None, data_root: Path | None = None) -> ClipDataModule:
    """The data a model was trained on (its card's config), or other data of the same shape."""
    return ClipDataModule(
        data=data or config["data"],
        data_root=data_root if data else config.get("data_root"),
        num_segments=config["num_segments"],
        image_size=config["image_size"],
        resize=config.get("resize", "letterbox"),
        seed=config.get("seed", 0),
        synthetic_sizes=tuple(config.get("synthetic_clips", (1600, 400))),
        bukva_source=config.get("bukva_source", "trimmed"),
    )


def load_clips(data: ClipDataModule, split: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    # -> (M, T, S, S, 3) uint8 clips and (M,) labels; evaluation preprocessing (middle frames, no
    # augmentation), spread evenly over the split so that every class is represented
    dataset = data.dataset(split, train=False)
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).astype(int))
    items = [item for item in (dataset[int(i)] for i in picks) if item is not None]
    clips = np.stack([clip.permute(0, 2, 3, 1).numpy() for clip, _ in items])
    return clips, np.array([label for _, label in items])


def held_out_clips(card: dict, count: int) -> tuple[np.ndarray, np.ndarray]:
    return load_clips(data_module(card["config"]), "val", count)
