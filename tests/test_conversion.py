"""The conversion pipeline end to end on a small trained model, checked against PyTorch."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conversion import parity
from conversion.clips import held_out_clips, read_card
from conversion.errors import ConversionError
from conversion.inspect import inspect_tflite
from conversion.inspect import main as inspect_main
from conversion.onnx_to_tf import onnx_to_saved_model
from conversion.runtimes import TFLiteRunner
from conversion.to_tflite import main as to_tflite_main
from torch_tsm.model import load_model

ORIGINAL_MODEL = Path(__file__).resolve().parents[2] / "shared" / "seed" / "mobilenetv2-tsm-uint8.tflite"
OUTPUTS = [*parity.ROUTE_FILES.values(), "labels.txt"]


def test_writes_every_model_and_nothing_else(converted):
    assert sorted(p.name for p in converted.iterdir()) == sorted([*OUTPUTS, "model_card.json"])
    assert not list((converted / "saved_model").glob("*.tflite"))


@pytest.mark.parametrize("route", ["tflite", "keras-tflite"])
def test_uint8_model_is_builtin_static_and_integer(converted, trained_run, route):
    model = load_model(trained_run / "best.ckpt")
    inspection = inspect_tflite(converted / parity.ROUTE_FILES[f"{route}-u8"])
    assert inspection.ok, inspection.report()
    assert not any(name.startswith("custom:") for name in inspection.ops)
    assert inspection.ops["DEQUANTIZE"] == 0 and inspection.float_islands == 0
    (clip_input,), (logits_output,) = inspection.inputs, inspection.outputs
    assert clip_input.shape == (1, 8, 64, 64, 3) and clip_input.dtype == "uint8"
    assert (clip_input.scale, clip_input.zero_point) == (1.0, 0)  # raw pixels in, unchanged
    assert logits_output.shape == (1, len(model.labels)) and logits_output.dtype == "uint8"
    assert inspect_tflite(converted / parity.ROUTE_FILES[f"{route}-f32"]).ok


def test_model_card_holds_the_conversion_figures(converted):
    card = json.loads((converted / "model_card.json").read_text(encoding="utf-8"))["conversion"]
    onnx, keras = card["onnx"], card["keras"]
    assert onnx["size_bytes"]["tflite-u8"] < onnx["size_bytes"]["tflite-f32"] / 2.5
    assert onnx["uint8_io"]["input"] == keras["uint8_io"]["input"] == {"dtype": "uint8", "scale": 1.0, "zero_point": 0}
    assert {row["route"] for row in onnx["parity"]} == {"onnx", "savedmodel", "tflite-f32", "tflite-u8"}
    assert {row["route"] for row in keras["parity"]} == {"keras", "keras-tflite-f32", "keras-tflite-u8"}
    assert all(row["verdict"] != "FAIL" for row in onnx["parity"] + keras["parity"])
    assert (converted / "labels.txt").read_text(encoding="utf-8").splitlines() == json.loads((converted / "model_card.json").read_text(encoding="utf-8"))["labels"]


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


def test_inspect_names_the_original_projects_flex_ops(capsys):
    if not ORIGINAL_MODEL.is_file():
        pytest.skip(f"{ORIGINAL_MODEL} not present")
    assert inspect_main([str(ORIGINAL_MODEL)]) == 1
    report = capsys.readouterr().out
    assert "20 FlexRoll" in report and "30 DEQUANTIZE" in report and "dynamic-shape ops" in report


def test_inspect_cli_exit_codes(converted):
    ok = subprocess.run([sys.executable, "-m", "conversion.inspect", str(converted / "model_uint8.tflite")], capture_output=True, text=True)
    assert ok.returncode == 0 and "builtin ops only" in ok.stdout


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
        to_tflite_main(["--checkpoint", str(trained_run / "best.ckpt"), "--output", str(tmp_path / "out"), "--calibration-clips", "4", "--parity-clips", "4"])
    assert list((tmp_path / "out").iterdir()) == []


def test_onnx2tf_failure_is_a_clear_error(tmp_path):
    (tmp_path / "broken.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(ConversionError, match="onnx2tf failed"):
        onnx_to_saved_model(tmp_path / "broken.onnx", tmp_path / "saved_model", np.zeros((2, 8, 8, 3), np.uint8), timeout_s=120)
    assert not (tmp_path / "saved_model" / "saved_model.pb").exists()


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt"):
        to_tflite_main(["--checkpoint", str(tmp_path / "nowhere.ckpt")])
