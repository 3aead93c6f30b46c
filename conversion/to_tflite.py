"""python -m conversion.to_tflite: a trained checkpoint -> ONNX -> SavedModel -> float32 and uint8 TFLite.

Every stage is checked against the PyTorch model before the next one starts (parity.py bounds), and
the work happens in a scratch folder beside the output: the output folder receives the models only
when every stage has passed, so a failed conversion never leaves a model that looks complete.

With --streaming, writes the per-frame streaming models of a causal model instead
(model_streaming_float32.tflite and model_streaming_uint8.tflite; with --route keras,
model_keras_streaming_float32.tflite and model_keras_streaming_uint8.tflite; see conversion/streaming.py).

Writes model.onnx, saved_model/, model_float32.tflite, model_uint8.tflite and labels.txt (with
--route keras: model_keras_float32.tflite and model_keras_uint8.tflite, straight from the native Keras
twin, no ONNX), and adds the sizes, op counts, parity figures and conversion time to model_card.json.
"""

if __name__ == "__main__":  # python -m: quiet TensorFlow before the imports below load it (torch_tsm/cli.py)
    from torch_tsm.cli import import_tensorflow, prepare

    import_tensorflow(prepare())

import argparse
import errno
import signal
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from conversion.errors import ConversionError
from conversion.export_onnx import export_onnx
from conversion.inspect import Inspection
from conversion.onnx_to_tf import onnx_to_saved_model
from conversion.parity import HELD_OUT, STAGE_FILES, UINT8_MIN_CLIPS, StageChecker
from conversion.pipeline import Plan, run_plan
from conversion.streaming import convert_streaming
from conversion.tflite import ConverterSource, keras_converter, saved_model_converter, to_float32_tflite, to_uint8_tflite
from runtime.clip import KerasRunner, OnnxRunner, SavedModelRunner, TFLiteRunner
from runtime.live import evaluate_live
from tf_reference import from_torch_model
from torch_tsm.card import card_beside, card_path, merge_cards, read_card
from torch_tsm.cli import add_verbose_flag, run, setup, summary
from torch_tsm.clips import data_module, load_clips
from torch_tsm.errors import UserError, reading, room_to_write
from torch_tsm.model import MobileNetV2TSM, load_model

ROUTES = ("onnx", "keras")


def convert(
    model: MobileNetV2TSM,
    output_dir: str | Path,
    calibration_clips: Iterable[np.ndarray],
    held_out: tuple[np.ndarray, np.ndarray | None] | None = None,
    route: str = "onnx",
    streaming: bool = False,
    image_size: int | None = None,
    labels: Sequence[str] | None = None,
    keep_failed_uint8: bool = False,
) -> dict:
    """Converts `model` into `output_dir`; returns the figures added to its model card.

    model: from load_model, or built with torch_tsm.model.build_model and trained in your own loop.
    calibration_clips: (T, S, S, 3) uint8 clips, preprocessed as at inference, for quantization.
    held_out: (clips (M, T, S, S, 3) uint8, labels (M,) or None) to check parity on; the calibration
    clips when not given.
    route: "onnx" (ONNX -> onnx2tf SavedModel -> TFLite) or "keras" (the native Keras twin -> TFLite).
    streaming: write the per-frame streaming models instead (causal models only; conversion.streaming).
    image_size: the input size S; default: the model's (`model.image_size`, set by load_model), else
    the calibration clips'.
    labels: the class names for labels.txt and the model card; default: the model's (`model.labels`),
    class_0, class_1, ... where those do not fit the model.
    keep_failed_uint8: write the models even when the uint8 model misses its parity bounds (every
    float stage must still pass); figures["failed"] then names it.
    """
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; expected one of {ROUTES}")
    calibration = np.stack(list(calibration_clips))
    model = model.eval()
    _describe_model(model, calibration, image_size, labels)
    if streaming:
        return convert_streaming(model, output_dir, calibration, held_out, route, keep_failed_uint8)
    return run_plan(ClipPlan(model, calibration, route), output_dir, held_out, keep_failed_uint8)


class ClipPlan(Plan):
    """The clip model, (1, T, S, S, 3) uint8 pixels -> logits: by ONNX and onnx2tf's SavedModel (both kept
    beside the TFLite models), or by the native Keras twin."""

    section, scratch_prefix = "conversion", ".converting-"

    def __init__(self, model: MobileNetV2TSM, calibration: np.ndarray, route: str) -> None:
        size, segments = model.image_size, model.num_segments
        if calibration.shape[1:] != (segments, size, size, 3) or calibration.dtype != np.uint8:
            raise ValueError(
                f"calibration clips must be uint8 (T={segments}, {size}, {size}, 3); got {calibration.dtype} {calibration.shape[1:]}"
            )
        super().__init__(model, calibration, route)
        stages = ("onnx", "savedmodel", "tflite-f32", "tflite-u8") if route == "onnx" else ("keras-tflite-f32", "keras-tflite-u8")
        self.files = {stage: STAGE_FILES[stage] for stage in stages}

    def write_tflite(self, staging: Path, checker: StageChecker) -> None:
        source = _onnx_route(self.model, staging, self.calibration, checker) if self.route == "onnx" else _keras_route(self.model, checker)
        f32, u8 = self.tflite_stages
        (staging / self.files[f32]).write_bytes(to_float32_tflite(source))
        (staging / self.files[u8]).write_bytes(to_uint8_tflite(source, self.calibration))

    def tflite_runner(self, path: Path) -> TFLiteRunner:
        return TFLiteRunner(path)

    def figures(self, uint8: Inspection) -> dict:
        return {
            "uint8_io": {
                "input": {"dtype": "uint8", "scale": uint8.inputs[0].scale, "zero_point": uint8.inputs[0].zero_point},
                "output": {"dtype": "uint8", "scale": uint8.outputs[0].scale, "zero_point": uint8.outputs[0].zero_point},
            }
        }


def _describe_model(model: MobileNetV2TSM, calibration: np.ndarray, image_size: int | None, labels: Sequence[str] | None) -> None:
    """Gives `model` the input size and class names that conversion writes down, where it lacks them.

    A model from load_model carries both; one built with build_model and trained in the user's own
    loop knows neither: the size comes from `image_size` or the calibration clips (M, T, S, S, 3), the
    names from `labels`, or are class_0, class_1, ...
    """
    if image_size is None and getattr(model, "image_size", None) is None:
        if calibration.ndim != 5 or calibration.shape[2] != calibration.shape[3]:
            raise ValueError(f"calibration clips must be (T, S, S, 3) uint8 frames; got clips of {calibration.shape[1:]}")
        image_size = calibration.shape[2]
    if image_size is not None:
        model.image_size = int(image_size)
    num_classes = model.classifier[-1].out_features
    if labels is not None:
        if len(labels) != num_classes:
            raise ValueError(f"{len(labels)} labels for a model of {num_classes} classes")
        model.labels = [str(label) for label in labels]
    elif len(getattr(model, "labels", None) or ()) != num_classes:
        model.labels = default_labels(num_classes)


def default_labels(num_classes: int) -> list[str]:
    return [f"class_{i}" for i in range(num_classes)]


def _onnx_route(model: MobileNetV2TSM, staging: Path, calibration: np.ndarray, checker: StageChecker) -> ConverterSource:
    size = model.image_size
    onnx_path, saved_model = staging / STAGE_FILES["onnx"], staging / STAGE_FILES["savedmodel"]
    export_onnx(model, onnx_path, size)
    checker.check("onnx", OnnxRunner(onnx_path))
    onnx_to_saved_model(onnx_path, saved_model, calibration.reshape(-1, size, size, 3))
    checker.check("savedmodel", SavedModelRunner(saved_model))
    return saved_model_converter(saved_model, model.num_segments, size)


def _keras_route(model: MobileNetV2TSM, checker: StageChecker) -> ConverterSource:
    keras_model = from_torch_model(model, image_size=model.image_size, batch_size=1)
    checker.check("keras", KerasRunner(keras_model))
    return keras_converter(keras_model)


def newest_checkpoint(models_dir: Path = Path("models")) -> Path:
    checkpoints = sorted(models_dir.glob("*/best.ckpt"), key=lambda p: p.stat().st_mtime)
    if not checkpoints:
        raise UserError(f"{models_dir}/: no trained model (*/best.ckpt); train one with python -m torch_tsm.train, or pass --checkpoint")
    return checkpoints[-1]


def main(argv: list[str] | None = None) -> dict:
    """The command; bad input is raised (UserError, OSError), as from convert(), and `cli.run` reports it."""
    parser = argparse.ArgumentParser(
        prog="python -m conversion.to_tflite", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, help="training checkpoint (default: the newest models/*/best.ckpt)")
    parser.add_argument("--output", type=Path, help="output folder (default: beside the checkpoint)")
    parser.add_argument("--calibration-clips", type=int, default=100, help="training clips for uint8 calibration")
    parser.add_argument("--parity-clips", type=int, default=200, help="held-out clips for the parity checks")
    parser.add_argument(
        "--data", choices=("synthetic", "bukva", "frames"), help="calibration data (default: the model's own training data)"
    )
    parser.add_argument("--data-root", type=Path)
    parser.add_argument(
        "--route", choices=ROUTES, default="onnx", help="onnx: ONNX -> onnx2tf -> TFLite (default); keras: the native Keras twin -> TFLite"
    )
    parser.add_argument("--streaming", action="store_true", help="the per-frame streaming models (a model trained with --shift causal)")
    parser.add_argument(
        "--keep-failed-uint8",
        action="store_true",
        help="write the uint8 model even when it misses its parity bounds (recorded in the model card; exit status 1)",
    )
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    setup(args.verbose, tensorflow=True)
    # SIGTERM (a scheduler's stop) ends the run like Ctrl-C: the scratch folder is removed, the output untouched.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    checkpoint = args.checkpoint or newest_checkpoint()
    if not checkpoint.is_file():
        raise FileNotFoundError(errno.ENOENT, "checkpoint not found", str(checkpoint))
    with reading(checkpoint, "checkpoint"):
        model = load_model(checkpoint)
    if args.streaming and model.shift != "causal":
        raise UserError(
            f"{checkpoint}: --streaming needs a model trained with --shift causal; this one has the {model.shift} shift, which looks at frames a live stream has not seen yet"
        )
    trained = card_path(checkpoint.parent).is_file()
    if args.data is None and not trained:
        raise UserError(f"{card_path(checkpoint.parent)}: not found; pass --data/--data-root for calibration clips")
    config = read_card(checkpoint.parent, "config")["config"] if trained else {}
    config = {**config, "num_segments": model.num_segments, "image_size": model.image_size}
    data = data_module(config, args.data, args.data_root)
    calibration, _ = load_clips(data, "train", args.calibration_clips)
    held_out = load_clips(data, "val", args.parity_clips)
    output = args.output or checkpoint.parent
    try:
        with room_to_write(output):
            figures = convert(model, output, calibration, held_out, args.route, args.streaming, keep_failed_uint8=args.keep_failed_uint8)
    except ConversionError as error:
        raise SystemExit(f"conversion failed, nothing written: {error}") from error
    except KeyboardInterrupt:
        print(f"interrupted: no model written to {output}; run the same command again", file=sys.stderr)
        raise SystemExit(130) from None
    if Path(output) != checkpoint.parent and trained:
        merge_cards(checkpoint.parent, output)
    print(conversion_summary(output, figures, args.streaming))
    u8 = Path(output) / next(file for stage, file in figures["files"].items() if stage.endswith("u8"))
    if not figures["failed"] and config.get("data") == "synthetic" and Path(output) == checkpoint.parent:
        # The live figures of the model a user ships: its letters on the built-in held-out continuous videos,
        # frame by frame (streaming) or on a sliding window of T frames (clip).
        evaluate_live(u8)
    if figures["failed"]:
        print(
            f"error: {u8}: written by --keep-failed-uint8, but it FAILED its parity check (model_card.json); do not ship it",
            file=sys.stderr,
        )
        raise SystemExit(1)
    return figures


def conversion_summary(output: Path, figures: dict, streaming: bool = False) -> str:
    """Where the models are, how big, the validation accuracy, the parity verdict, and what to run next."""
    files, sizes = figures["files"], figures["size_bytes"]
    u8, f32 = (next(stage for stage in files if stage.endswith(kind)) for kind in ("u8", "f32"))
    validation = card_beside(Path(output) / files[u8]).get("validation", {})
    held_out = next((row for row in figures["parity"] if row["stage"] == u8 and row["inputs"] == HELD_OUT), None)
    rows = [
        ("uint8 model", f"{Path(output) / files[u8]} ({sizes[u8] / 1e6:.2f} MB)"),
        ("float32 model", f"{Path(output) / files[f32]} ({sizes[f32] / 1e6:.2f} MB)"),
    ]
    if "accuracy" in validation:
        rows.append(("validation", f"{validation['accuracy']:.1%} accuracy (PyTorch, at training)"))
    if figures["failed"]:
        verdict = f"FAIL: {', '.join(figures['failed'])}"
    elif held_out is None or held_out["verdict"] == "pass":
        verdict = "pass, every stage within its bounds"
    else:
        verdict = f"float stages pass; uint8 not judged (needs {UINT8_MIN_CLIPS} held-out clips, --parity-clips)"
    if held_out is not None:
        verdict += f"; uint8 agrees with PyTorch on {held_out['top1_agree']:.1%} of {held_out['clips']} held-out clips"
    rows.append(("parity", verdict))
    if streaming:
        rows.append(
            ("next", f"tsm-web {Path(output)}   (the page, on your camera), or: tsm-predict --camera 0 --model {Path(output) / files[u8]}")
        )
    else:
        rows.append(("next", f"python -m runtime.evaluate --model {Path(output) / files[u8]}"))
    return summary("converted", rows)


if __name__ == "__main__":
    sys.exit(run(main))
