"""python -m runtime.evaluate: a model's figures on a labelled split, in whatever runtime the model file is for.

--model takes a training checkpoint, an ONNX file, a SavedModel folder or a .tflite file; the runtime
is chosen by the file (runtime.models.open_model) and every runtime is fed the same clips. The
data defaults to the one in the model_card.json beside the (first) model, so

    python -m runtime.evaluate --model models/RUN/model_uint8.tflite

works alone. Sampling is deterministic (the middle frame of each segment, no augmentation), so two
runs give the same numbers. Reports accuracy, top-3, a per-class classification report, the
direction-pair accuracy on the built-in synthetic data, a confusion-matrix PNG per model and one JSON
of every figure. With --compare, several models run on the same decoded clips: one table (accuracy,
top-3, agreement with the first model) and the list of clips where they disagree.
"""

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import (
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from runtime.models import ModelRunner, open_model
from torch_tsm.card import card_beside, card_path
from torch_tsm.cli import add_verbose_flag, run, setup, user_errors
from torch_tsm.clips import data_module
from torch_tsm.datamodule import DATA_KINDS, ClipDataModule
from torch_tsm.datasets import ClipDataset
from torch_tsm.errors import UserError
from torch_tsm.labels import check_label_count, read_labels
from torch_tsm.metrics import accuracy_figures, pair_accuracy
from torch_tsm.synthetic import DIRECTION_PAIRS

CONFUSION_DPI = 100
# DejaVu Sans ships with matplotlib and covers Cyrillic: Bukva's letters render as letters, not boxes.
PLOT_FONT = {"font.family": "DejaVu Sans"}
SHOWN_DISAGREEMENTS = 20


@dataclass(frozen=True)
class Model:
    name: str
    path: Path
    runner: ModelRunner
    labels: list[str] | None  # None: the model file names no classes; the data's are used

    @property
    def runtime(self) -> str:
        return type(self.runner).__name__.removesuffix("Runner").lower()


@dataclass(frozen=True)
class Predictions:
    """Every model's logits on the same clips, in dataset order; clips that failed to decode left out."""

    clip_names: list[str]
    labels: np.ndarray  # (M,)
    logits: dict[str, np.ndarray]  # model name -> (M, K)

    def predicted(self, model: str) -> np.ndarray:
        return self.logits[model].argmax(1)


def model_names(paths: Sequence[Path]) -> list[str]:
    """File names, or folder/file where two models share a file name (run1/best.ckpt vs run2/best.ckpt)."""
    names = [path.name for path in paths]
    if len(set(names)) < len(names):
        names = [f"{path.parent.name}/{path.name}" for path in paths]
    if len(set(names)) < len(names):
        raise UserError(f"{paths[0]}: the same model is given twice: {[str(p) for p in paths]}")
    return names


def model_labels(runner: ModelRunner, labels_file: Path | None) -> list[str] | None:
    """--labels when given (it must name each of the model's classes), else the runner's own (open_model's)."""
    if labels_file is None:
        return runner.labels
    labels = read_labels(labels_file)
    check_label_count(labels, runner.num_classes, labels_file)
    return labels


def load_models(paths: Sequence[Path], labels_file: Path | None = None) -> list[Model]:
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        raise UserError(f"{', '.join(missing)}: model not found")
    models = []
    for name, path in zip(model_names(paths), paths):
        # a streaming model plays each clip as a stream from zero buffers: the mean of its frames' logits
        runner = open_model(path)
        models.append(Model(name, path, runner, model_labels(runner, labels_file)))
    return models


def evaluation_data(model: Model, data: str | None = None, data_root: Path | None = None) -> ClipDataModule:
    """--data/--data-root, else the data of the model card beside the model; clip shape from the card, else the model."""
    card_file = card_path(model.path.parent)
    config = card_beside(model.path).get("config", {})
    if data is None and "data" not in config:
        raise UserError(f"{card_file}: no training config to take the data from; pass --data (and --data-root)")
    if data is None and data_root is not None:
        data = config["data"]  # the card's kind of data, in another folder
    shape = {"num_segments": model.runner.num_segments, "image_size": model.runner.image_size}
    try:
        return data_module({**shape, **config}, data, data_root)
    except ValueError as error:  # the data module's check of --data and --data-root: options, not a bug
        raise UserError(f"{card_file if data is None else model.path}: {error}") from error


def check_model_fits(model: Model, data: ClipDataModule) -> None:
    """The model takes the data's clip shape and predicts the data's classes, in the same order."""
    if (model.runner.num_segments, model.runner.image_size) != (data.num_segments, data.image_size):
        raise UserError(
            f"{model.path} takes clips of {model.runner.num_segments} frames at {model.runner.image_size} px, "
            f"but the data gives {data.num_segments} frames at {data.image_size} px"
        )
    if model.runner.num_classes != len(data.labels):
        raise UserError(
            f"{model.path} predicts {model.runner.num_classes} classes, but the {data.data} data has {len(data.labels)} classes {_preview(data.labels)}"
        )
    if model.labels is not None and model.labels != data.labels:
        raise UserError(
            f"{model.path} predicts {len(model.labels)} classes {_preview(model.labels)}, "
            f"but the {data.data} data has {len(data.labels)} classes {_preview(data.labels)}"
        )


def _preview(names: list[str]) -> str:
    return str(names[:6])[:-1] + (", ...]" if len(names) > 6 else "]")


def clip_batches(dataset: ClipDataset, batch_size: int = 16, num_workers: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    # -> (dataset indices (B,), clips (B, T, S, S, 3) uint8, labels (B,)) over the clips that decode;
    # one batch of pixels in memory at a time
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_uint8_batch)
    start = 0
    for decoded, clips, labels in loader:
        if len(clips):
            yield start + np.flatnonzero(decoded), clips, labels
        start += len(decoded)


def _uint8_batch(items: list[tuple[torch.Tensor, int] | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # ClipDataset items ((T, 3, S, S) uint8 pixels, label) -> (decoded (B,) bool, clips, labels)
    kept = [item for item in items if item is not None]
    clips = np.stack([clip.permute(0, 2, 3, 1).numpy() for clip, _ in kept]) if kept else np.empty((0,), np.uint8)
    return np.array([item is not None for item in items]), clips, np.array([label for _, label in kept], np.int64)


def predict(models: Sequence[Model], dataset: ClipDataset, batch_size: int = 16, num_workers: int = 0) -> Predictions:
    """Each batch is decoded once and fed to every model."""
    names: list[str] = []
    labels: list[np.ndarray] = []
    logits: dict[str, list[np.ndarray]] = {model.name: [] for model in models}
    for indices, clips, batch_labels in clip_batches(dataset, batch_size, num_workers):
        names += [dataset.clips[int(i)].name for i in indices]
        labels.append(batch_labels)
        for model in models:
            logits[model.name].append(np.asarray(model.runner(clips), np.float32))
    if not names:
        raise UserError(f"none of the {len(dataset)} clips could be decoded")
    return Predictions(names, np.concatenate(labels), {name: np.concatenate(parts) for name, parts in logits.items()})


def classification_figures(logits: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, top-3, per-class precision/recall/F1/support, their macro average and the confusion matrix
    (rows: true class, columns: predicted class)."""
    k = len(class_names)
    if logits.shape[1] != k:
        raise ValueError(f"the model gives {logits.shape[1]} logits per clip, but the data has {k} classes")
    scores, targets = torch.from_numpy(logits), torch.from_numpy(labels)
    predicted = torch.from_numpy(logits.argmax(1))  # ties go to the first class, as everywhere in this module
    per_class = {
        "precision": multiclass_precision(predicted, targets, k, average=None),
        "recall": multiclass_recall(predicted, targets, k, average=None),
        "f1": multiclass_f1_score(predicted, targets, k, average=None),
    }
    support = torch.bincount(targets, minlength=k)
    return {
        **accuracy_figures(scores, targets),
        "clips": len(labels),
        "macro": {measure: values.mean().item() for measure, values in per_class.items()},
        "per_class": [
            {"class": name, **{measure: values[i].item() for measure, values in per_class.items()}, "support": int(support[i])}
            for i, name in enumerate(class_names)
        ],
        "confusion_matrix": multiclass_confusion_matrix(predicted, targets, k).tolist(),
    }


def classification_report(figures: dict) -> str:
    width = max(12, *(len(row["class"]) for row in figures["per_class"]))
    lines = [f"{'class':<{width}} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>9}"]
    for row in figures["per_class"]:
        lines.append(f"{row['class']:<{width}} {row['precision']:9.3f} {row['recall']:9.3f} {row['f1']:9.3f} {row['support']:9d}")
    macro = figures["macro"]
    lines.append(f"{'macro avg':<{width}} {macro['precision']:9.3f} {macro['recall']:9.3f} {macro['f1']:9.3f} {figures['clips']:9d}")
    return "\n".join(lines)


def agreement(predictions: Predictions) -> dict[str, float]:
    """Per model: the fraction of clips on which it predicts the same class as the first model."""
    first = predictions.predicted(next(iter(predictions.logits)))
    return {name: float((predictions.predicted(name) == first).mean()) for name in predictions.logits}


def disagreements(predictions: Predictions, class_names: list[str]) -> list[dict]:
    """The clips on which not every model predicts the same class, with each model's prediction."""
    predicted = {name: predictions.predicted(name) for name in predictions.logits}
    stacked = np.stack(list(predicted.values()))
    return [
        {
            "clip": predictions.clip_names[i],
            "label": class_names[predictions.labels[i]],
            "predicted": {name: class_names[classes[i]] for name, classes in predicted.items()},
        }
        for i in np.flatnonzero((stacked != stacked[0]).any(0))
    ]


def comparison_table(report: dict) -> str:
    models = report["models"]
    width = max(12, *(len(name) for name in models))
    lines = [f"{'model':<{width}} {'runtime':<10} {'accuracy':>8} {'top-3':>8} {'agreement':>9}"]
    for name, entry in models.items():
        figures = entry["figures"]
        lines.append(
            f"{name:<{width}} {entry['runtime']:<10} {figures['accuracy']:8.4f} {figures['top3']:8.4f} {report['comparison']['agreement'][name]:9.4f}"
        )
    return "\n".join(lines)


def confusion_figure_size(num_classes: int) -> tuple[float, float]:
    # (width, height) in inches: about a third of an inch per class, so that every name stays readable
    side = max(5.0, 0.32 * num_classes + 2.5)
    return side + 1.2, side  # the extra width holds the colour bar


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: Path, title: str) -> None:
    """A PNG: cells coloured by the fraction of each true class, non-zero counts written in the cells."""
    matrix = np.asarray(matrix)
    k = len(class_names)
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    with matplotlib.rc_context(PLOT_FONT):
        figure = Figure(figsize=confusion_figure_size(k), dpi=CONFUSION_DPI, layout="constrained")
        axes = figure.add_subplot()
        image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        axes.set_xticks(range(k), class_names, rotation=45, ha="right", rotation_mode="anchor")
        axes.set_yticks(range(k), class_names)
        axes.set_xlabel("predicted class")
        axes.set_ylabel("true class")
        axes.set_title(title)
        for (row, column), count in np.ndenumerate(matrix):
            if count:
                axes.text(
                    column, row, str(count), ha="center", va="center", fontsize=7, color="white" if rates[row, column] > 0.5 else "black"
                )
        figure.colorbar(image, ax=axes, label="fraction of the true class", shrink=0.8)
        figure.savefig(path)


def evaluation_report(models: Sequence[Model], data: ClipDataModule, split: str, predictions: Predictions, compare: bool) -> dict:
    """Every figure, as written to the JSON: nothing in it depends on time or machine."""
    labels = data.labels
    report = {
        "data": {
            "data": data.data,
            "data_root": str(data.data_root) if data.data_root is not None else None,
            "split": split,
            "num_segments": data.num_segments,
            "image_size": data.image_size,
            "clips": len(predictions.labels),
            "skipped_clips": data.skipped.get(split, 0),
        },
        "models": {},
    }
    for model in models:
        logits = predictions.logits[model.name]
        figures = classification_figures(logits, predictions.labels, labels)
        if data.data == "synthetic":
            figures["direction_pair_accuracy"] = pair_accuracy(
                torch.from_numpy(logits), torch.from_numpy(predictions.labels), labels, DIRECTION_PAIRS
            )
        report["models"][model.name] = {
            "path": str(model.path),
            "runtime": model.runtime,
            "figures": figures,
            "confusion_png": confusion_png_name(model.name),
        }
    if compare:
        report["comparison"] = {"agreement": agreement(predictions), "disagreements": disagreements(predictions, labels)}
    return report


def confusion_png_name(model_name: str) -> str:
    return f"confusion_{model_name.replace('/', '_').replace('.', '_')}.png"


def write_outputs(report: dict, output: Path) -> None:
    """evaluation.json and one confusion-matrix PNG per model (named in the report) into `output`."""
    output.mkdir(parents=True, exist_ok=True)
    for name, entry in report["models"].items():
        labels = [row["class"] for row in entry["figures"]["per_class"]]
        title = f"{name} on {report['data']['data']} {report['data']['split']}: accuracy {entry['figures']['accuracy']:.3f}"
        plot_confusion_matrix(np.array(entry["figures"]["confusion_matrix"]), labels, output / entry["confusion_png"], title)
    (output / "evaluation.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")


def summary(report: dict) -> str:
    data = report["data"]
    parts = [f"{data['data']} {data['split']}: {data['clips']} clips ({data['num_segments']} frames at {data['image_size']} px)"]
    for name, entry in report["models"].items():
        figures = entry["figures"]
        line = f"{name} ({entry['runtime']}): accuracy {figures['accuracy']:.4f}, top-3 {figures['top3']:.4f}"
        if "direction_pair_accuracy" in figures:
            line += f", direction pairs {figures['direction_pair_accuracy']:.4f}"
        parts += ["", line, classification_report(figures)]
    if "comparison" in report:
        found = report["comparison"]["disagreements"]
        parts += ["", comparison_table(report), "", f"{len(found)} clips where the models disagree"]
        parts += [
            f"  {row['clip']} (true {row['label']}): " + ", ".join(f"{m} {c}" for m, c in row["predicted"].items())
            for row in found[:SHOWN_DISAGREEMENTS]
        ]
        if len(found) > SHOWN_DISAGREEMENTS:
            parts.append(f"  ... all {len(found)} in evaluation.json")
    return "\n".join(parts)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", type=Path, action="append", required=True, help="checkpoint, .onnx, SavedModel folder or .tflite; repeat with --compare"
    )
    parser.add_argument("--compare", action="store_true", help="compare the models on the same clips (agreement, disagreements)")
    parser.add_argument("--data", choices=DATA_KINDS, help="default: the data of the model card beside the first model")
    parser.add_argument("--data-root", type=Path, help="dataset folder (bukva, frames)")
    parser.add_argument("--split", choices=("train", "val"), default="val")
    parser.add_argument("--labels", type=Path, help="labels.txt for every model (default: the labels.txt beside each model)")
    parser.add_argument("--output", type=Path, help="report folder (default: evaluation-SPLIT beside the first model)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=2, help="clip-decoding processes")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    if args.compare and len(args.model) < 2:
        parser.error("--compare needs at least two --model")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup(args.verbose, tensorflow=any(path.is_dir() for path in args.model))  # SavedModel folders load TensorFlow
    with user_errors(args.verbose):
        models = load_models(args.model, args.labels)
        data = evaluation_data(models[0], args.data, args.data_root)
        for model in models:
            check_model_fits(model, data)
        dataset = data.dataset(args.split, train=False)
        predictions = predict(models, dataset, args.batch_size, args.num_workers)
        report = evaluation_report(models, data, args.split, predictions, args.compare)
        output = args.output or args.model[0].parent / f"evaluation-{args.split}"
        write_outputs(report, output)
    print(summary(report))
    print(f"\nreport written to {output}")
    return report


if __name__ == "__main__":
    sys.exit(run(main))
