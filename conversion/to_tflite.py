"""python -m conversion.to_tflite: a trained checkpoint -> ONNX -> SavedModel -> float32 and uint8 TFLite.

Every stage is checked against the PyTorch model before the next one starts (parity.py bounds), and
the work happens in a scratch folder beside the output: the output folder receives the models only
when every stage has passed, so a failed conversion never leaves a model that looks complete.

Writes model.onnx, saved_model/, model_float32.tflite, model_uint8.tflite and labels.txt, and adds the
sizes, op counts, parity figures and conversion time to model_card.json.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from conversion.clips import data_module, load_clips
from conversion.errors import ConversionError
from conversion.export_onnx import export_onnx
from conversion.inspect import inspect_tflite
from conversion.parity import ROUTE_FILES, RouteParity, check_routes, random_pixel_clips, table
from conversion.runtimes import OnnxRunner, SavedModelRunner, TFLiteRunner, TorchRunner
from torch_tsm.labels import write_labels
from torch_tsm.model import MobileNetV2TSM, load_model

from conversion.onnx_to_tf import onnx_to_saved_model  # noqa: E402  (imports TensorFlow: after torch)
from conversion.tflite import to_float32_tflite, to_uint8_tflite  # noqa: E402


def convert(
    model: MobileNetV2TSM,
    output_dir: str | Path,
    calibration_clips: Iterable[np.ndarray],
    held_out: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> dict:
    """Converts `model` into `output_dir`; returns the figures added to its model card.

    calibration_clips: (T, S, S, 3) uint8 clips, preprocessed as at inference, for quantization.
    held_out: (clips (M, T, S, S, 3) uint8, labels (M,) or None) to check parity on; the calibration
    clips when not given.
    """
    started = time.perf_counter()
    output_dir = Path(output_dir)
    model = model.eval()
    size, segments = model.image_size, model.num_segments
    if size is None:
        raise ValueError("the model does not know its input size (model.image_size); load it with load_model")
    calibration = np.stack(list(calibration_clips))
    if calibration.shape[1:] != (segments, size, size, 3) or calibration.dtype != np.uint8:
        raise ValueError(f"calibration clips must be uint8 (T={segments}, {size}, {size}, 3); got {calibration.dtype} {calibration.shape[1:]}")
    clips, labels = held_out if held_out is not None else (calibration, None)
    random_clips = random_pixel_clips(8, segments, size)
    reference = TorchRunner(model)

    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".converting-", dir=output_dir) as scratch:
        staging = Path(scratch)
        rows: list[RouteParity] = []

        def stage(route: str, runner) -> None:
            new = check_routes({route: runner}, reference, clips, labels, random_clips)
            rows.extend(new)
            failed = [row for row in new if row.verdict == "FAIL"]
            if failed:
                raise ConversionError(f"{route} does not match PyTorch:\n{table(new)}")

        export_onnx(model, staging / ROUTE_FILES["onnx"], size)
        stage("onnx", OnnxRunner(staging / ROUTE_FILES["onnx"]))
        onnx_to_saved_model(staging / ROUTE_FILES["onnx"], staging / ROUTE_FILES["savedmodel"], calibration.reshape(-1, size, size, 3))
        stage("savedmodel", SavedModelRunner(staging / ROUTE_FILES["savedmodel"]))
        (staging / ROUTE_FILES["tflite-f32"]).write_bytes(to_float32_tflite(staging / ROUTE_FILES["savedmodel"], segments, size))
        (staging / ROUTE_FILES["tflite-u8"]).write_bytes(to_uint8_tflite(staging / ROUTE_FILES["savedmodel"], segments, size, calibration))
        inspections = {route: inspect_tflite(staging / ROUTE_FILES[route]) for route in ("tflite-f32", "tflite-u8")}
        for route, inspection in inspections.items():
            if not inspection.ok:
                raise ConversionError(f"{route} is not deployable on a stock LiteRT:\n{inspection.report()}")
        stage("tflite-f32", TFLiteRunner(staging / ROUTE_FILES["tflite-f32"]))
        stage("tflite-u8", TFLiteRunner(staging / ROUTE_FILES["tflite-u8"]))
        write_labels(model.labels, staging / "labels.txt")

        figures = {
            "files": {route: name for route, name in ROUTE_FILES.items()},
            "size_bytes": {route: _size(staging / name) for route, name in ROUTE_FILES.items()},
            "tflite_ops": {route: dict(inspection.ops.most_common()) for route, inspection in inspections.items()},
            "uint8_io": {
                "input": {"dtype": "uint8", "scale": inspections["tflite-u8"].inputs[0].scale, "zero_point": inspections["tflite-u8"].inputs[0].zero_point},
                "output": {"dtype": "uint8", "scale": inspections["tflite-u8"].outputs[0].scale, "zero_point": inspections["tflite-u8"].outputs[0].zero_point},
            },
            "parity": [row.as_dict() for row in rows],
            "seconds": round(time.perf_counter() - started, 1),
        }
        for name in [*ROUTE_FILES.values(), "labels.txt"]:
            target = output_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            (staging / name).replace(target)
    _update_card(output_dir, model, figures)
    print(table(rows))
    return figures


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def _update_card(output_dir: Path, model: MobileNetV2TSM, figures: dict) -> None:
    path = output_dir / "model_card.json"
    card = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"model": "MobileNetV2-TSM", "labels": model.labels}
    card["conversion"] = figures
    path.write_text(json.dumps(card, indent=2, ensure_ascii=False), encoding="utf-8")


def newest_checkpoint(models_dir: Path = Path("models")) -> Path:
    checkpoints = sorted(models_dir.glob("*/best.ckpt"), key=lambda p: p.stat().st_mtime)
    if not checkpoints:
        raise SystemExit(f"no trained model under {models_dir}/; train one with python -m torch_tsm.train, or pass --checkpoint")
    return checkpoints[-1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m conversion.to_tflite", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="training checkpoint (default: the newest models/*/best.ckpt)")
    parser.add_argument("--output", type=Path, help="output folder (default: beside the checkpoint)")
    parser.add_argument("--calibration-clips", type=int, default=100, help="training clips for uint8 calibration")
    parser.add_argument("--parity-clips", type=int, default=200, help="held-out clips for the parity checks")
    parser.add_argument("--data", choices=("synthetic", "bukva", "frames"), help="calibration data (default: the model's own training data)")
    parser.add_argument("--data-root", type=Path)
    args = parser.parse_args(argv)

    checkpoint = args.checkpoint or newest_checkpoint()
    model = load_model(checkpoint)
    card_path = checkpoint.parent / "model_card.json"
    if args.data is None and not card_path.is_file():
        raise SystemExit(f"{card_path} not found: pass --data/--data-root for calibration clips")
    config = json.loads(card_path.read_text(encoding="utf-8"))["config"] if card_path.is_file() else {}
    config = {**config, "num_segments": model.num_segments, "image_size": model.image_size}
    data = data_module(config, args.data, args.data_root)
    calibration, _ = load_clips(data, "train", args.calibration_clips)
    held_out = load_clips(data, "val", args.parity_clips)
    try:
        return convert(model, args.output or checkpoint.parent, calibration, held_out)
    except ConversionError as error:
        raise SystemExit(f"conversion failed, nothing written: {error}") from error


if __name__ == "__main__":
    main()
