"""python -m runtime.evaluate on the trained demo-size model, its uint8 TFLite twin and a copy whose
move_right/move_left outputs are swapped, checked against figures computed here from the runners' logits."""

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from runtime.clip import TFLiteRunner, TorchRunner
from runtime.evaluate import CONFUSION_DPI, confusion_figure_size, main, plot_confusion_matrix
from torch_tsm.card import read_card
from torch_tsm.clips import data_module, load_clips
from torch_tsm.labels import BUKVA_LABELS
from torch_tsm.model import load_model
from torch_tsm.synthetic import DIRECTION_PAIRS, SYNTHETIC_LABELS

CHECKPOINT, UINT8, SWAPPED = "best.ckpt", "model_uint8.tflite", "swapped.ckpt"
SWAP = (SYNTHETIC_LABELS.index("move_right"), SYNTHETIC_LABELS.index("move_left"))


def evaluate(*models, output, extra=()) -> dict:
    return main([*(arg for model in models for arg in ("--model", str(model))), "--output", str(output), "--num-workers", "0", *extra])


def swap_classes(predicted: np.ndarray) -> np.ndarray:
    a, b = SWAP
    return np.where(predicted == a, b, np.where(predicted == b, a, predicted))


@pytest.fixture(scope="module")
def swapped(trained_run, tmp_path_factory):
    """The trained checkpoint with the classifier rows of SWAP exchanged: a model that disagrees on purpose."""
    checkpoint = torch.load(trained_run / CHECKPOINT, map_location="cpu", weights_only=True)
    for name in ("model.classifier.1.weight", "model.classifier.1.bias"):
        checkpoint["state_dict"][name][list(SWAP)] = checkpoint["state_dict"][name][list(reversed(SWAP))].clone()
    path = tmp_path_factory.mktemp("swapped") / SWAPPED
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def models(trained_run, converted, swapped):
    return trained_run / CHECKPOINT, converted / UINT8, swapped


@pytest.fixture(scope="module")
def compared(models, tmp_path_factory):
    output = tmp_path_factory.mktemp("evaluation")
    return evaluate(*models, output=output, extra=["--compare"]), output


@pytest.fixture(scope="module")
def reference(trained_run, converted):
    """Every validation clip and both runners' logits, computed without runtime.evaluate."""
    card = read_card(trained_run)
    clips, labels = load_clips(data_module(card["config"]), "val", 10**6)
    torch_logits = TorchRunner(load_model(trained_run / CHECKPOINT))(clips)
    uint8_logits = TFLiteRunner(converted / UINT8)(clips)
    return card, labels, torch_logits, uint8_logits


def test_figures_equal_an_independent_computation(compared, reference):
    report, _ = compared
    card, labels, torch_logits, _ = reference
    figures = report["models"][CHECKPOINT]["figures"]
    predicted = torch_logits.argmax(1)
    assert report["data"]["clips"] == figures["clips"] == len(labels) == card["config"]["synthetic_clips"][1]
    assert figures["accuracy"] == pytest.approx((predicted == labels).mean(), abs=1e-6)
    assert figures["accuracy"] == pytest.approx(card["validation"]["accuracy"], abs=1e-6)  # training's own figure
    top3 = np.argsort(-torch_logits, axis=1)[:, :3]
    assert figures["top3"] == pytest.approx((top3 == labels[:, None]).any(1).mean(), abs=1e-6)
    matrix = np.zeros((len(SYNTHETIC_LABELS),) * 2, int)
    np.add.at(matrix, (labels, predicted), 1)
    assert figures["confusion_matrix"] == matrix.tolist()
    for k, row in enumerate(figures["per_class"]):
        assert row["class"] == SYNTHETIC_LABELS[k] and row["support"] == (labels == k).sum()
        precision, recall = matrix[k, k] / max(1, matrix[:, k].sum()), matrix[k, k] / max(1, matrix[k].sum())
        assert row["precision"] == pytest.approx(precision, abs=1e-6) and row["recall"] == pytest.approx(recall, abs=1e-6)
        assert row["f1"] == pytest.approx(2 * precision * recall / max(precision + recall, 1e-12), abs=1e-6)
    pairs = [(SYNTHETIC_LABELS.index(a), SYNTHETIC_LABELS.index(b)) for a, b in DIRECTION_PAIRS]
    members = np.isin(labels, [k for pair in pairs for k in pair])
    chosen = np.array(
        [a if torch_logits[i, a] >= torch_logits[i, b] else b for i in np.flatnonzero(members) for a, b in pairs if labels[i] in (a, b)]
    )
    assert figures["direction_pair_accuracy"] == pytest.approx((chosen == labels[members]).mean(), abs=1e-6)
    assert figures["direction_pair_accuracy"] >= 0.9  # the demo model tells the direction pairs apart


def test_compare_reports_agreement_and_disagreements_consistently(compared, reference):
    report, _ = compared
    _, labels, torch_logits, uint8_logits = reference
    predicted = {CHECKPOINT: torch_logits.argmax(1), UINT8: uint8_logits.argmax(1), SWAPPED: swap_classes(torch_logits.argmax(1))}
    assert [entry["runtime"] for entry in report["models"].values()] == ["torch", "tflite", "torch"]
    agreement = report["comparison"]["agreement"]
    for name, classes in predicted.items():
        assert report["models"][name]["figures"]["accuracy"] == pytest.approx((classes == labels).mean(), abs=1e-6)
        assert agreement[name] == pytest.approx((classes == predicted[CHECKPOINT]).mean(), abs=1e-6)
    assert agreement[CHECKPOINT] == 1.0 and agreement[UINT8] > 0.9
    assert agreement[SWAPPED] == pytest.approx(1 - np.isin(predicted[CHECKPOINT], SWAP).mean(), abs=1e-6)
    assert agreement[SWAPPED] < 0.9
    # Clip i of the synthetic split is named synthetic/val/i, and every clip decodes.
    differing = np.flatnonzero((predicted[UINT8] != predicted[CHECKPOINT]) | (predicted[SWAPPED] != predicted[CHECKPOINT]))
    found = report["comparison"]["disagreements"]
    assert [row["clip"] for row in found] == [f"synthetic/val/{i}" for i in differing]
    for i, row in zip(differing, found):
        assert row["label"] == SYNTHETIC_LABELS[labels[i]]
        assert row["predicted"] == {name: SYNTHETIC_LABELS[classes[i]] for name, classes in predicted.items()}
    swapped_matrix = np.array(report["models"][SWAPPED]["figures"]["confusion_matrix"])
    assert (
        swapped_matrix[:, list(SWAP)] == np.array(report["models"][CHECKPOINT]["figures"]["confusion_matrix"])[:, list(reversed(SWAP))]
    ).all()


def test_two_runs_write_identical_json(compared, models, tmp_path):
    report, output = compared
    again = evaluate(*models, output=tmp_path, extra=["--compare", "--batch-size", "7"])
    assert again == report
    assert (tmp_path / "evaluation.json").read_text(encoding="utf-8") == (output / "evaluation.json").read_text(encoding="utf-8")


def test_writes_a_confusion_matrix_png_per_model(compared):
    report, output = compared
    width, height = confusion_figure_size(len(SYNTHETIC_LABELS))
    for entry in report["models"].values():
        png = output / entry["confusion_png"]
        assert png.stat().st_size > 20_000
        with Image.open(png) as image:
            assert image.format == "PNG" and image.size == (round(width * CONFUSION_DPI), round(height * CONFUSION_DPI))
    assert json.loads((output / "evaluation.json").read_text(encoding="utf-8")) == report


def test_cyrillic_class_names_render(tmp_path):
    matrix = np.random.default_rng(0).integers(0, 5, (len(BUKVA_LABELS),) * 2)

    def missing_glyphs(labels: list[str]) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            plot_confusion_matrix(matrix[: len(labels), : len(labels)], labels, tmp_path / "matrix.png", "Bukva")
        return [str(w.message) for w in caught if "missing from font" in str(w.message)]

    assert missing_glyphs(["no_event", "漢"])  # the check sees a glyph the font lacks
    assert missing_glyphs(BUKVA_LABELS) == []
    assert (tmp_path / "matrix.png").stat().st_size > 50_000


def test_data_comes_from_the_card_or_must_be_given(converted, tmp_path, capsys):
    # A model folder whose card holds no training config (put together by hand): the data must be named.
    folder = tmp_path / "by_hand"
    folder.mkdir()
    (folder / UINT8).symlink_to(converted / UINT8)
    card = read_card(converted)
    del card["config"]
    (folder / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(SystemExit, match="pass --data"):
        evaluate(folder / UINT8, output=tmp_path)
    report = evaluate(folder / UINT8, output=tmp_path, extra=["--data", "synthetic"])
    assert report["data"] == {**report["data"], "data": "synthetic", "split": "val", "num_segments": 8, "image_size": 64, "clips": 400}
    assert "model_uint8.tflite (tflite): accuracy" in capsys.readouterr().out


@pytest.mark.parametrize(
    "problem, message",
    [
        ("missing", "nowhere.tflite: model not found"),
        ("unknown runtime", "unknown model type '.bin'"),
        ("input size", "takes clips of 8 frames at 64 px, but the data gives 8 frames at 48 px"),
        ("classes", "predicts 11 classes.*but the synthetic data has 11 classes"),
    ],
)
def test_clear_errors(problem, message, trained_run, tmp_path):
    model = trained_run / CHECKPOINT
    extra = []
    if problem == "missing":
        model = tmp_path / "nowhere.tflite"
    elif problem == "unknown runtime":
        model = tmp_path / "model.bin"
        model.write_bytes(b"weights")
    elif problem == "input size":
        model = tmp_path / CHECKPOINT
        shutil.copy(trained_run / CHECKPOINT, model)
        card = read_card(trained_run)
        card["config"]["image_size"] = 48
        (tmp_path / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
    else:
        (tmp_path / "labels.txt").write_text("".join(f"class{i}\n" for i in range(11)), encoding="utf-8")
        extra = ["--labels", str(tmp_path / "labels.txt")]
    with pytest.raises(SystemExit, match=message):
        evaluate(model, output=tmp_path / "out", extra=extra)


def test_compare_needs_two_models(trained_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate(trained_run / CHECKPOINT, output=tmp_path, extra=["--compare"])
    assert exit_info.value.code == 2 and "--compare needs at least two --model" in capsys.readouterr().err


def test_onnx_file_and_saved_model(trained_run, converted, reference, tmp_path):
    # The float stages give PyTorch's logits (parity), so PyTorch's predictions are the reference.
    _, labels, torch_logits, _ = reference
    for name in ("model.onnx", "saved_model"):  # beside the training card, which names the data
        (tmp_path / name).symlink_to(converted / name)
    shutil.copy(trained_run / "model_card.json", tmp_path)
    report = evaluate(tmp_path / "model.onnx", tmp_path / "saved_model", output=tmp_path / "out", extra=["--compare"])
    assert [entry["runtime"] for entry in report["models"].values()] == ["onnx", "savedmodel"]
    for entry in report["models"].values():
        assert entry["figures"]["clips"] == len(labels)
        assert entry["figures"]["accuracy"] == pytest.approx((torch_logits.argmax(1) == labels).mean(), abs=1e-6)
    assert report["comparison"]["agreement"] == {"model.onnx": 1.0, "saved_model": 1.0}


def test_a_streaming_model_is_evaluated_as_its_clips_played_as_streams(trained_run, streaming_converted, reference, tmp_path):
    # A streaming model plays each clip from zero buffers: the clip model's figures (float: PyTorch's predictions).
    _, labels, torch_logits, _ = reference
    (tmp_path / "model_streaming_float32.tflite").symlink_to(streaming_converted / "model_streaming_float32.tflite")
    shutil.copy(trained_run / "model_card.json", tmp_path)
    report = evaluate(tmp_path / "model_streaming_float32.tflite", output=tmp_path / "out")
    figures = report["models"]["model_streaming_float32.tflite"]["figures"]
    assert figures["clips"] == len(labels) and figures["accuracy"] == pytest.approx((torch_logits.argmax(1) == labels).mean(), abs=1e-6)
