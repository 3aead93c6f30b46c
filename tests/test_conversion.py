"""The conversion pipeline end to end on a small trained model, checked against PyTorch."""

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conversion import parity
from conversion.errors import ConversionError
from conversion.export_onnx import export_onnx, onnx2tf_ambiguous
from conversion.inspect import inspect_tflite
from conversion.inspect import main as inspect_main
from conversion.onnx_to_tf import onnx_to_saved_model
from conversion.tflite import keras_converter, to_uint8_tflite
from conversion.to_tflite import main as to_tflite_main
from runtime.clip import TFLiteRunner
from tests.conftest import SLICING_OPS, snapshot
from tf_reference import from_torch_model
from torch_tsm.card import read_card
from torch_tsm.clips import held_out_clips
from torch_tsm.model import MobileNetV2TSM, load_model
from torch_tsm.synthetic import SYNTHETIC_LABELS

ORIGINAL_MODEL = Path(__file__).resolve().parent / "data" / "original-project-uint8.tflite"  # docs/background.md
OUTPUTS = [*parity.STAGE_FILES.values(), "labels.txt"]


def test_writes_every_model_and_nothing_else(converted):
    assert sorted(p.name for p in converted.iterdir()) == sorted([*OUTPUTS, "model_card.json"])
    assert not list((converted / "saved_model").glob("*.tflite"))


@pytest.mark.parametrize("stage", ["tflite", "keras-tflite"])
def test_uint8_model_is_builtin_static_and_integer(converted, trained_run, stage):
    model = load_model(trained_run / "best.ckpt")
    inspection = inspect_tflite(converted / parity.STAGE_FILES[f"{stage}-u8"])
    assert inspection.ok, inspection.report()
    assert not any(name.startswith("custom:") for name in inspection.ops)
    assert inspection.ops["DEQUANTIZE"] == 0 and inspection.float_islands == 0
    (clip_input,), (logits_output,) = inspection.inputs, inspection.outputs
    assert clip_input.shape == (1, 8, 64, 64, 3) and clip_input.dtype == "uint8"
    assert (clip_input.scale, clip_input.zero_point) == (1.0, 0)  # raw pixels in, unchanged
    assert logits_output.shape == (1, len(model.labels)) and logits_output.dtype == "uint8"
    assert inspect_tflite(converted / parity.STAGE_FILES[f"{stage}-f32"]).ok


# The output stride of MobileNetV2's 10 shifted blocks (features 3, 5, 6, 8, 9, 10, 12, 13, 15, 16)
SHIFTED_BLOCK_STRIDES = (4, 8, 8, 16, 16, 16, 16, 16, 32, 32)


@pytest.mark.parametrize("stage", ["tflite", "keras-tflite"])
def test_uint8_shift_is_one_convolution_per_shifted_block(converted, trained_run, stage):
    # MobileNetV2 runs 52 convolutions (35 CONV_2D, 17 DEPTHWISE_CONV_2D) at any width; its own graph pads
    # before the 4 strided depthwise layers and concatenates the stem's mean border twice (FoldedStem).
    # The shift (temporal_shift_conv) adds one depthwise convolution per shifted block (onnx2tf writes it as
    # a grouped CONV_2D, the Keras twin as DEPTHWISE_CONV_2D) and the two RESHAPEs of its (N, T, H*W, C) view.
    # The onnx route keeps the slice form where onnx2tf cannot tell the view's dimensions apart (export_onnx.
    # onnx2tf_shift): in this 64 px model, the one block of 16 x 16 x 16 (3 STRIDED_SLICE, a PAD, a concatenation).
    model = load_model(trained_run / "best.ckpt")
    shapes = [(b.conv[0][0].in_channels, 64 // stride, 64 // stride) for b, stride in zip(model.shifted_blocks(), SHIFTED_BLOCK_STRIDES)]
    sliced = sum(onnx2tf_ambiguous(*shape, model.num_segments) for shape in shapes) if stage == "tflite" else 0
    convolved = len(shapes) - sliced
    ops = inspect_tflite(converted / parity.STAGE_FILES[f"{stage}-u8"]).ops
    assert ops["CONV_2D"] + ops["DEPTHWISE_CONV_2D"] == 52 + convolved, ops
    assert ops["STRIDED_SLICE"] == 3 * sliced and not any(ops[name] for name in SLICING_OPS if name != "STRIDED_SLICE"), ops
    assert (ops["PAD"], ops["CONCATENATION"]) == (4 + sliced, 2 + sliced), ops
    assert ops["RESHAPE"] <= 2 * convolved + 2, ops
    assert ops.total() <= 75 + 3 * convolved + 5 * sliced, ops  # the plain MobileNetV2's 74-75 ops, and the shift's


def test_model_card_holds_the_conversion_figures(converted):
    card = json.loads((converted / "model_card.json").read_text(encoding="utf-8"))["conversion"]
    onnx, keras = card["onnx"], card["keras"]
    assert onnx["size_bytes"]["tflite-u8"] < onnx["size_bytes"]["tflite-f32"] / 2.5
    assert onnx["uint8_io"]["input"] == keras["uint8_io"]["input"] == {"dtype": "uint8", "scale": 1.0, "zero_point": 0}
    assert {row["stage"] for row in onnx["parity"]} == {"onnx", "savedmodel", "tflite-f32", "tflite-u8"}
    assert {row["stage"] for row in keras["parity"]} == {"keras", "keras-tflite-f32", "keras-tflite-u8"}
    # 200 labelled held-out clips (the default): every route judged and passed there; on the 8
    # unlabelled random-pixel clips uint8 is reported, not judged (docs/parity.md), float is judged.
    for row in onnx["parity"] + keras["parity"]:
        judged = row["inputs"] == "held-out clips" or not row["quantized"]
        assert row["verdict"] == ("pass" if judged else "not judged"), row
        assert row["clips"] == (parity.UINT8_MIN_CLIPS if row["inputs"] == "held-out clips" else 8)
    assert (converted / "labels.txt").read_text(encoding="utf-8").splitlines() == json.loads(
        (converted / "model_card.json").read_text(encoding="utf-8")
    )["labels"]


def test_uint8_logits_read_back_with_the_output_quantization(converted, trained_run):
    runner = TFLiteRunner(converted / "model_uint8.tflite")
    clips, _ = held_out_clips(read_card(trained_run), 4)
    raw = []
    for clip in clips:
        runner.interpreter.set_tensor(runner.input["index"], clip[None])  # uint8 pixels as they are
        runner.interpreter.invoke()
        raw.append(runner.interpreter.get_tensor(runner.output["index"]))
    scale, zero_point = runner.output["quantization"]
    assert np.allclose((np.concatenate(raw).astype(np.float32) - zero_point) * scale, runner(clips))


REFUSALS = {  # undeployable_tflite model (conftest) -> the problem inspect must name
    "flex": "PROBLEM: custom / Flex (Select-TF) ops, which a stock LiteRT cannot run: 1 FlexErf",
    "float_island": "PROBLEM: float islands in a quantized graph: 1 DEQUANTIZE, 3 QUANTIZE",
    "dynamic": "PROBLEM: dynamic-shape ops: 1 SHAPE, 1 PACK",
}


@pytest.mark.parametrize("name", REFUSALS)
def test_inspect_refuses_models_a_stock_litert_cannot_run(undeployable_tflite, name):
    inspection = inspect_tflite(undeployable_tflite[name])
    assert not inspection.ok and REFUSALS[name] in inspection.report(), inspection.report()
    if name == "dynamic":
        assert "3 tensors with dynamic dimensions (e.g. x)" in inspection.report()
    # The same graph as the float island, full-integer: deployable, so the refusal above is the SIN's.
    clean = inspect_tflite(undeployable_tflite["clean"])
    assert clean.ok and clean.float_islands == 0 and clean.inputs[0].dtype == "uint8", clean.report()


def test_inspect_names_the_original_projects_flex_ops(capsys):
    # The original project's uint8 model, kept in tests/data (docs/background.md).
    assert inspect_main([str(ORIGINAL_MODEL)]) == 1
    report = capsys.readouterr().out
    assert "20 FlexRoll" in report and "30 DEQUANTIZE" in report and "dynamic-shape ops" in report
    assert "PROBLEM: float islands in a quantized graph" in report


def test_inspect_cli_exit_codes(converted, undeployable_tflite):
    def inspect_command(*paths: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "conversion.inspect", *map(str, paths)], capture_output=True, text=True, timeout=300)

    ok = inspect_command(converted / "model_uint8.tflite")
    assert ok.returncode == 0 and "builtin ops only" in ok.stdout
    # One refused model among good ones fails the command, and its problem is printed.
    refused = inspect_command(converted / "model_uint8.tflite", undeployable_tflite["float_island"], undeployable_tflite["clean"])
    assert refused.returncode == 1 and refused.stdout.count("PROBLEM") == 1 and REFUSALS["float_island"] in refused.stdout


def test_inspect_refuses_weights_left_as_variables(tmp_path):
    # What the converter gives when it cannot freeze a model's variables (e.g. a SavedModel that also
    # holds functions assigning them): it runs, but neither calibration nor the delegates take it.
    import tensorflow as tf

    module = tf.Module()
    module.scale = tf.Variable(2.0)

    @tf.function(input_signature=[tf.TensorSpec((1, 4), tf.float32)])
    def scaled(x):
        module.scale.assign_add(1.0)
        return x * module.scale

    path = tmp_path / "variables.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([scaled.get_concrete_function()], module).convert())
    inspection = inspect_tflite(path)
    assert not inspection.ok
    assert "resource variables, weights not frozen into constants: " in inspection.report() and "READ_VARIABLE" in inspection.report()


def test_failed_conversion_leaves_nothing(trained_run, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ConversionError("onnx2tf failed at ONNX node /features/features.3/Concat")

    monkeypatch.setattr("conversion.to_tflite.onnx_to_saved_model", broken)
    with pytest.raises(SystemExit, match="nothing written.*features.3/Concat"):
        to_tflite_main(
            [
                "--checkpoint",
                str(trained_run / "best.ckpt"),
                "--output",
                str(tmp_path / "out"),
                "--calibration-clips",
                "4",
                "--parity-clips",
                "4",
            ]
        )
    assert list((tmp_path / "out").iterdir()) == []


@pytest.fixture
def good_output(converted, tmp_path) -> Path:
    """A copy of the session's converted folder: a good earlier conversion that a failed one must not touch."""
    return Path(shutil.copytree(converted, tmp_path / "good"))


def changed(model: MobileNetV2TSM) -> MobileNetV2TSM:
    """A copy of `model` that disagrees with it: one weight changed (class 0's bias + 1)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.classifier[1].bias[0] += 1.0
    return model


def test_a_stage_that_misses_stops_the_conversion_over_a_good_output(trained_run, good_output, monkeypatch):
    # Early: the ONNX model is exported from a changed copy of the model, so the first check misses.
    # The output folder already holds a good conversion, which must survive byte for byte.
    before = snapshot(good_output)
    monkeypatch.setattr("conversion.to_tflite.export_onnx", lambda model, path, size: export_onnx(changed(model), path, size))
    with pytest.raises(
        SystemExit, match=r"(?s)conversion failed, nothing written: onnx does not match PyTorch:.*onnx\s+held-out clips.*FAIL"
    ):
        to_tflite_main(
            [
                "--checkpoint",
                str(trained_run / "best.ckpt"),
                "--output",
                str(good_output),
                "--calibration-clips",
                "4",
                "--parity-clips",
                "16",
            ]
        )
    assert snapshot(good_output) == before


def test_a_late_uint8_miss_on_the_keras_route_leaves_the_good_output_intact(trained_run, good_output, monkeypatch):
    # Late: every float stage of the keras route passes, then the uint8 model is quantized from a
    # Keras twin whose move_right / move_left classifier rows are swapped: its top-1 agreement on the
    # 200 labelled held-out clips falls well below 98%, the last check misses, and nothing lands.
    model = load_model(trained_run / "best.ckpt")
    swapped = copy.deepcopy(model)
    rows = [SYNTHETIC_LABELS.index("move_right"), SYNTHETIC_LABELS.index("move_left")]
    with torch.no_grad():
        for tensor in (swapped.classifier[1].weight, swapped.classifier[1].bias):
            tensor[rows] = tensor[rows[::-1]].clone()
    swapped_source = keras_converter(from_torch_model(swapped, image_size=swapped.image_size, batch_size=1))
    monkeypatch.setattr("conversion.to_tflite.to_uint8_tflite", lambda source, calibration: to_uint8_tflite(swapped_source, calibration))
    before = snapshot(good_output)
    with pytest.raises(
        SystemExit, match=r"(?s)nothing written: keras-tflite-u8 does not match PyTorch:.*keras-tflite-u8\s+held-out clips\s+200 .*FAIL"
    ):
        to_tflite_main(
            ["--checkpoint", str(trained_run / "best.ckpt"), "--output", str(good_output), "--calibration-clips", "8", "--route", "keras"]
        )
    assert snapshot(good_output) == before


def test_onnx2tf_failure_is_a_clear_error(tmp_path):
    (tmp_path / "broken.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(ConversionError, match="onnx2tf failed"):
        onnx_to_saved_model(tmp_path / "broken.onnx", tmp_path / "saved_model", np.zeros((2, 8, 8, 3), np.uint8), timeout_s=120)
    assert not (tmp_path / "saved_model" / "saved_model.pb").exists()


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt"):
        to_tflite_main(["--checkpoint", str(tmp_path / "nowhere.ckpt")])
