"""The parity contract (../shared/docs/parity.md): every route computes what the PyTorch model computes.

`pytest -m parity` runs this file alone; `make test` runs it too, on small models. Bounds come from
conversion.parity, their one definition.
"""

import json

import numpy as np
import pytest
import torch

from conversion import parity
from conversion.clips import data_module, held_out_clips, load_clips, read_card
from conversion.runtimes import KerasRunner, TorchRunner, load_runner
from conversion.streaming import STREAMING_FILES, StreamingTFLiteRunner, load_stream_runner
from conversion.to_tflite import convert
from tests.conftest import smooth_clips, with_real_batchnorm_statistics
from tf_reference import from_torch_model
from torch_tsm.model import build_model, load_model
from torch_tsm.train import main as train_main

pytestmark = pytest.mark.parity


def edge_clips(num_segments: int, size: int) -> np.ndarray:
    # -> (3, T, S, S, 3): all black, all saturated, and black frames alternating with saturated ones
    black = np.zeros((num_segments, size, size, 3), np.uint8)
    white = np.full_like(black, 255)
    flicker = np.where((np.arange(num_segments) % 2 == 0)[:, None, None, None], black, white)
    return np.stack([black, white, flicker])


@pytest.fixture(scope="module")
def trained_routes(converted, trained_run):
    model = load_model(trained_run / "best.ckpt")
    runners = {route: load_runner(converted / name) for route, name in parity.ROUTE_FILES.items()}
    runners["keras"] = KerasRunner(from_torch_model(model, image_size=model.image_size))
    return model, runners


def test_every_route_on_held_out_clips_and_random_pixels(trained_routes, trained_run):
    model, runners = trained_routes
    clips, labels = held_out_clips(read_card(trained_run), parity.UINT8_MIN_CLIPS)
    assert len(clips) >= parity.UINT8_MIN_CLIPS
    reference = TorchRunner(model)
    assert (reference(clips).argmax(1) == labels).mean() > 0.9  # trained: parity means something
    rows = parity.check_routes(runners, reference, clips, labels, parity.random_pixel_clips(8, 8, 64))
    verdicts = {(row.route, row.inputs): row.verdict for row in rows}
    assert set(runners) == {"onnx", "savedmodel", "tflite-f32", "tflite-u8", "keras", "keras-tflite-f32", "keras-tflite-u8"}
    assert all(v == "pass" for (route, _), v in verdicts.items() if not route.endswith("u8")), parity.table(rows)
    assert verdicts[("tflite-u8", "held-out clips")] == "pass", parity.table(rows)
    assert verdicts[("keras-tflite-u8", "held-out clips")] == "pass", parity.table(rows)


def test_black_and_saturated_frames(trained_routes):
    model, runners = trained_routes
    clips = edge_clips(8, 64)
    reference = TorchRunner(model)(clips)
    for route, runner in runners.items():
        row = parity.measure(route, "edge clips", reference, runner(clips), None, quantized=route.endswith("u8"))
        if not row.quantized:
            assert row.verdict == "pass", parity.table([row])


def test_streaming_routes_on_black_and_saturated_frames(trained_routes, streaming_converted):
    model, _ = trained_routes
    clips = edge_clips(8, 64)
    reference = TorchRunner(model)(clips)
    for files in STREAMING_FILES.values():
        for route, name in files.items():
            row = parity.measure(route, "edge clips", reference, load_stream_runner(streaming_converted / name)(clips), None, quantized=route.endswith("u8"))
            if not row.quantized:
                assert row.verdict == "pass", parity.table([row])


def test_streaming_frames_of_another_shape_are_a_clear_error(streaming_converted):
    runner = StreamingTFLiteRunner(streaming_converted / STREAMING_FILES["keras"]["stream-keras-u8"])
    with pytest.raises(ValueError, match=r"takes frames of \(H, W, 3\) = \(64, 64, 3\); got \(64, 48, 3\)"):
        runner(np.zeros((1, 8, 64, 48, 3), np.uint8))


def test_batch_of_one_equals_batch_of_several(trained_routes, trained_run):
    model, _ = trained_routes
    clips, _ = held_out_clips(read_card(trained_run), 6)
    runner = TorchRunner(model)
    together = runner(clips)
    alone = np.concatenate([runner(clips[i : i + 1]) for i in range(len(clips))])
    assert np.abs(together - alone).max() / max(1.0, np.abs(together).max()) <= parity.FLOAT_MAX_ABS_NORMALIZED


def test_clips_of_another_shape_are_a_clear_error(trained_routes):
    _, runners = trained_routes
    for route, runner in runners.items():
        with pytest.raises(ValueError, match=r"takes clips of \(T, H, W, 3\) = \(8, 64, 64, 3\)"):
            runner(np.zeros((1, 8, 64, 48, 3), np.uint8))  # non-square
        with pytest.raises(ValueError, match="takes clips"):
            runner(np.zeros((1, 4, 64, 64, 3), np.uint8))  # other frame count


def sensitive_model(shift: str, num_segments: int, width_mult: float = 0.35, image_size: int = 32) -> torch.nn.Module:
    """A random model whose logits depend strongly on its input and on the shift: real BatchNorm
    statistics, and a classifier scaled so that logits are of order 1-10."""
    torch.manual_seed(0)
    model = with_real_batchnorm_statistics(build_model(5, num_segments, width_mult, shift=shift), image_size)
    with torch.no_grad():
        model.classifier[1].weight.mul_(200)
    model.image_size, model.labels = image_size, list("abcde")
    return model


# The session's trained model is causal. Each other shift mode, and another frame count, gets a
# brief training run of its own (half a minute), so that parity is measured on trained weights. The
# float routes are judged. uint8 is not: a briefly trained model has small margins, and a model without
# the shift cannot have any between the two classes of a direction pair (the same frames in another
# order), so its arg-max there is a coin toss that uint8 rounding flips; uint8 is judged on the
# session's well-trained model and at full size (README, Parity).
@pytest.mark.parametrize("shift, num_segments", [("bidirectional", 8), ("none", 8), ("bidirectional", 4)])
def test_float_routes_on_a_model_trained_with_each_shift_mode(shift, num_segments, tmp_path):
    run = train_main(["--output", str(tmp_path / "run"), "--shift", shift, "--num-segments", str(num_segments), "--synthetic-clips", "800", "200", "--max-epochs", "3"])
    model = load_model(run / "best.ckpt")
    card = read_card(run)
    clips, labels = held_out_clips(card, 64)
    calibration, _ = load_clips(data_module(card["config"]), "train", 16)
    assert (TorchRunner(model)(clips).argmax(1) == labels).mean() > 0.3  # trained: well above chance (10%)
    figures = convert(model, tmp_path / "converted", calibration, held_out=(clips, None))
    float_rows = [row for row in figures["parity"] if not row["quantized"]]
    assert {row["route"] for row in float_rows} == {"onnx", "savedmodel", "tflite-f32"}
    assert all(row["verdict"] == "pass" for row in float_rows), float_rows
    keras_logits = KerasRunner(from_torch_model(model, image_size=model.image_size))(clips)
    assert parity.measure("keras", "held-out clips", TorchRunner(model)(clips), keras_logits, labels, False).verdict == "pass"


@pytest.mark.slow
def test_full_size_float_routes(tmp_path):
    """224 px, width 1.0, 8 frames: the deployed size (minutes here; pytest -m slow)."""
    model = sensitive_model("bidirectional", 8, width_mult=1.0, image_size=224)
    clips = smooth_clips(12, 8, 224, seed=7).permute(0, 1, 3, 4, 2).round().clamp(0, 255).to(torch.uint8).numpy()
    figures = convert(model, tmp_path, clips[:8], held_out=(clips, None))
    float_rows = [row for row in figures["parity"] if not row["quantized"]]
    assert {row["route"] for row in float_rows} == {"onnx", "savedmodel", "tflite-f32"}
    assert all(row["verdict"] == "pass" for row in float_rows), float_rows


def test_parity_command_prints_the_table_and_writes_the_card(converted, streaming_converted, trained_run, tmp_path, capsys):
    # A model folder as training and conversion leave it: checkpoint, card and converted models together.
    for item in [*converted.iterdir(), *streaming_converted.iterdir()]:
        if item.suffix in (".tflite", ".onnx") or item.name == "saved_model":
            (tmp_path / item.name).symlink_to(item)
    for name in ("best.ckpt", "model_card.json"):
        (tmp_path / name).write_bytes((trained_run / name).read_bytes())
    assert parity.main([str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "keras-tflite-u8" in printed and "FAIL" not in printed
    rows = json.loads((tmp_path / "model_card.json").read_text(encoding="utf-8"))["parity"]
    streaming_routes = {route for files in STREAMING_FILES.values() for route in files}
    assert {row["route"] for row in rows} == {*parity.ROUTE_FILES, "keras", *streaming_routes}
    assert all(row["verdict"] in ("pass", "not judged") for row in rows)
    assert all(row["verdict"] == "pass" for row in rows if row["inputs"] == "held-out clips")
