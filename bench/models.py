"""The models the benchmarks run: training-format checkpoints converted with conversion.to_tflite.convert.

No trained 224 px model ships with the project and nothing may be downloaded, so the checkpoints hold
random weights whose BatchNorm statistics come from real (synthetic) clips: speed and size do not
depend on the weights, and real statistics keep the uint8 quantization from collapsing to constants.
Converting a 224 px model takes minutes, so the converted folders are cached in bench/.work/.
"""

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from bench.common import WORK, Settings
from conversion.to_tflite import convert
from torch_tsm.clips import data_module, load_clips
from torch_tsm.datamodule import ClipDataModule
from torch_tsm.model import MobileNetV2TSM, build_model, load_model

# Part of every cached model's folder name: bump it when conversion makes another graph of the same
# checkpoint, so that no benchmark times a stale one (2: the normalization folded into the first convolution
# of the clip models; 3: into the streaming models' too, and folded in float64; 4: the shift as one depthwise
# convolution along time, torch_tsm.shift.temporal_shift_conv; 5: the streaming models' buffers int8).
GRAPH_VERSION = 5


@dataclass(frozen=True)
class ModelSpec:
    shift: str
    num_classes: int
    num_segments: int
    width_mult: float
    image_size: int

    @property
    def key(self) -> str:
        return f"{self.shift}-w{self.width_mult}-{self.image_size}px-{self.num_segments}f-{self.num_classes}c-g{GRAPH_VERSION}"


@dataclass(frozen=True)
class Converted:
    folder: Path
    seconds: float  # checkpoint -> uint8 TFLite wall time, measured when the folder was built
    calibration_clips: int
    parity_clips: int

    @property
    def onnx(self) -> Path:
        return self.folder / "model.onnx"

    @property
    def float32(self) -> Path:
        return self.folder / "model_float32.tflite"

    @property
    def uint8(self) -> Path:
        return self.folder / "model_uint8.tflite"


def spec(settings: Settings, shift: str) -> ModelSpec:
    return ModelSpec(shift, settings.num_classes, settings.num_segments, settings.width_mult, settings.image_size)


def synthetic_data(spec: ModelSpec) -> ClipDataModule:
    return data_module({"data": "synthetic", "num_segments": spec.num_segments, "image_size": spec.image_size})


def write_checkpoint(spec: ModelSpec, path: Path, seed: int = 0) -> Path:
    """A checkpoint in torch_tsm.train's format (load_model reads it), random weights, real BN statistics."""
    torch.manual_seed(seed)
    model = build_model(spec.num_classes, spec.num_segments, spec.width_mult, spec.shift)
    clips, _ = load_clips(synthetic_data(spec), "train", 12)
    fit_batchnorm_statistics(model, clips)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "hyper_parameters": {
                "labels": [f"class_{i}" for i in range(spec.num_classes)],
                "num_segments": spec.num_segments,
                "width_mult": spec.width_mult,
                "shift": spec.shift,
                "image_size": spec.image_size,
            },
            "state_dict": {f"model.{name}": value for name, value in model.state_dict().items()},
        },
        path,
    )
    return path


@torch.no_grad()
def fit_batchnorm_statistics(model: MobileNetV2TSM, clips: np.ndarray, batch: int = 4) -> None:
    # clips (M, T, S, S, 3) uint8: BatchNorm running statistics become the exact average over them
    batchnorms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in batchnorms:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    pixels = torch.from_numpy(clips).permute(0, 1, 4, 2, 3).float()
    for start in range(0, len(pixels), batch):
        model(pixels[start : start + batch])
    for bn in batchnorms:
        bn.momentum = 0.1
    model.eval()


def convert_checkpoint(checkpoint: Path, output: Path, calibration_clips: int, parity_clips: int) -> float:
    """Seconds from a checkpoint on disk to a checked uint8 TFLite model: what `python -m conversion.to_tflite`
    does, except that the held-out clips carry no labels (a random model's accuracy means nothing)."""
    started = time.perf_counter()
    model = load_model(checkpoint)
    data = data_module({"data": "synthetic", "num_segments": model.num_segments, "image_size": model.image_size})
    calibration, _ = load_clips(data, "train", calibration_clips)
    held_out, _ = load_clips(data, "val", parity_clips)
    convert(model, output, calibration, (held_out, None))
    return time.perf_counter() - started


def converted_model(spec: ModelSpec, calibration_clips: int, parity_clips: int) -> Converted:
    """The converted folder for `spec`, from the cache when a complete one is there."""
    folder = WORK / spec.key
    record = folder / "bench.json"
    if record.is_file():
        cached = Converted(folder, **json.loads(record.read_text()))
        if all(path.exists() for path in (cached.onnx, cached.float32, cached.uint8)):
            return cached
    shutil.rmtree(folder, ignore_errors=True)
    checkpoint = write_checkpoint(spec, folder / "checkpoint" / "model.ckpt")
    seconds = convert_checkpoint(checkpoint, folder, calibration_clips, parity_clips)
    converted = Converted(folder, round(seconds, 1), calibration_clips, parity_clips)
    record.write_text(json.dumps({"seconds": converted.seconds, "calibration_clips": calibration_clips, "parity_clips": parity_clips}))
    return converted


def benchmark_models(settings: Settings) -> dict[str, Converted]:
    """The TSM model and the plain MobileNetV2 (shift="none") of the issue's settings."""
    # Few clips: their only use here is the uint8 calibration and convert()'s own parity gate.
    calibration, parity = (16, 8) if settings.quick else (32, 16)
    return {shift: converted_model(spec(settings, shift), calibration, parity) for shift in ("bidirectional", "none")}


def keras_applications_input(frames: np.ndarray) -> np.ndarray:
    # (..., S, S, 3) uint8 -> float32 in [-1, 1]: keras.applications MobileNetV2's own input range
    return frames.astype(np.float32) / 127.5 - 1


def keras_applications_model(settings: Settings, frames: np.ndarray, symmetric_padding: bool = False, uint8: bool = True) -> bytes:
    """keras.applications' MobileNetV2 (random weights) as TensorFlow's own converter makes it, full-integer
    uint8 calibrated on `frames` (M, S, S, 3) uint8, or float32: the backbone as TensorFlow ships it, the
    yardstick for our graph. symmetric_padding: its four strided depthwise convolutions padded by one on
    every side, as PyTorch pads (its own padding, bottom and right only, folds into a SAME convolution)."""
    import keras
    import tensorflow as tf
    from keras.src.applications import mobilenet_v2

    padding = (lambda inputs, kernel_size: ((1, 1), (1, 1))) if symmetric_padding else mobilenet_v2.imagenet_utils.correct_pad
    with mock.patch.object(mobilenet_v2.imagenet_utils, "correct_pad", padding):
        model = keras.applications.MobileNetV2(
            input_shape=(settings.image_size, settings.image_size, 3), alpha=settings.width_mult, weights=None, classes=settings.num_classes
        )
    scaled = keras_applications_input(frames)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if not uint8:
        return converter.convert()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([frame[None]] for frame in scaled)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.uint8
    return converter.convert()
