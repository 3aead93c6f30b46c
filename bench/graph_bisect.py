"""Row 13: why our plain uint8 graph ran slower than keras.applications' MobileNetV2, found by bisection.

Graph variants between the two, all uint8 on the same 8 frames, timed in turns in this one process:
keras.applications as TFLiteConverter makes it (and with symmetric explicit padding), our shipped onnx
route, and our Keras twin (tf_reference, the keras route) with one difference changed at a time: the
in-model normalization (folded into the first convolution, as shipped; a SUB and a MUL broadcast over the
last axis, as it was; over rows of W x 3 values; none), TF-style padding instead of PyTorch's symmetric
PADs (everywhere, or on the four strided depthwise layers only), no temporal MEAN, int8 instead of
uint8 in and out (no QUANTIZE ops), default instead of fitted BatchNorm statistics; and two graphs with
XNNPACK off, to tell the graph from the delegate. A variant's cost is its difference from the one it
derives from. The converted variants are cached in bench/.work/graph-bisect/ (delete it after changing
tf_reference).

    python -m bench.graph_bisect [--quick]
"""

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras  # noqa: E402  (after torch: see conversion/__init__.py)
import numpy as np
import tensorflow as tf  # noqa: E402
import torch
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from bench.common import WORK, Report, Row, Settings, alternate_times, load_average, markdown_table, run_alone
from bench.models import benchmark_models, keras_applications_model, spec, synthetic_data
from conversion.inspect import inspect_tflite
from conversion.tflite import keras_converter, to_uint8_tflite
from runtime.clip import quantize
from tf_reference import from_torch_model
from tf_reference.model import IMAGENET_MEAN, IMAGENET_STD, STEM, MeanOverFrames, MeanPadding
from torch_tsm.clips import load_clips
from torch_tsm.model import build_model, load_model

SHOWN_OPS = ("PAD", "SUB", "MUL", "QUANTIZE", "RESHAPE", "MEAN", "SOFTMAX")  # where the graphs differ


@dataclass(frozen=True)
class TwinVariant:
    """Our Keras twin with one or more differences from the shipped keras route."""

    normalization: str = "folded"  # "folded" into the first convolution (shipped), "last axis" (as it was), "rows", "none"
    tf_padding: bool = False  # Keras "same" at stride 2 instead of PyTorch's symmetric PAD + "valid"
    tf_padding_stem: bool = True  # with tf_padding: the first convolution too (False: the strided depthwise layers only)
    clip_mean: bool = True  # False: per-frame logits out, no temporal MEAN
    io_type: str = "uint8"  # "int8": no QUANTIZE at the input and output
    fitted_batchnorm: bool = True  # False: torch's default statistics (mean 0, variance 1)


AS_IT_WAS = "twin, normalization over the last axis (as it was)"
SHIPPED = "twin, normalization folded into the first convolution (as shipped)"
ROWS = "twin, normalization over rows of W x 3 values"
BARE_DEPTHWISE_TF = "twin, no normalization, TF padding on the strided depthwise layers only"
SHIPPED_DEPTHWISE_TF = "twin, normalization folded, TF padding on the strided depthwise layers only"
# name -> variant; names are the table's rows and the cache's file names
TWINS = {
    AS_IT_WAS: TwinVariant(normalization="last axis"),
    SHIPPED: TwinVariant(),
    ROWS: TwinVariant(normalization="rows"),
    "twin, no normalization": TwinVariant(normalization="none"),
    "twin, last-axis normalization, TF padding": TwinVariant(normalization="last axis", tf_padding=True),
    "twin, no normalization, TF padding": TwinVariant(normalization="none", tf_padding=True),
    "twin, no normalization, TF padding, no temporal MEAN": TwinVariant(normalization="none", tf_padding=True, clip_mean=False),
    BARE_DEPTHWISE_TF: TwinVariant(normalization="none", tf_padding=True, tf_padding_stem=False),
    SHIPPED_DEPTHWISE_TF: TwinVariant(tf_padding=True, tf_padding_stem=False),
    "twin, last-axis normalization, int8 in and out": TwinVariant(normalization="last axis", io_type="int8"),
    "twin, last-axis normalization, default BatchNorm statistics": TwinVariant(normalization="last axis", fitted_batchnorm=False),
}
KERAS_APPLICATIONS = "keras.applications (TFLiteConverter)"
# The same graph in a second interpreter: what two identical graphs differ by in this run is the noise floor.
KERAS_APPLICATIONS_AGAIN = "keras.applications again (the same file: the noise floor)"
KERAS_APPLICATIONS_SYMMETRIC = "keras.applications, symmetric PADs"
ONNX_ROUTE = "ours, onnx route (shipped)"
NO_XNNPACK = ", XNNPACK off"


@keras.saving.register_keras_serializable(package="bench")
class NormalizeAndPad(keras.layers.Layer):
    """The twin's stem before the fold: `(x - mean) / std` as a SUB and a MUL, with the 3 values broadcast over
    the last axis ("last axis", as it was) or tiled over rows of W * 3 values ("rows"), or no normalization
    ("none"); then PyTorch's zero padding (pad) or none (TF padding: the convolution pads itself)."""

    def __init__(self, layout: str, pad: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        self.layout, self.pad = layout, pad

    def call(self, pixels: tf.Tensor) -> tf.Tensor:
        # (N, H, W, 3) -> (N, H + 2, W + 2, 3), or (N, H, W, 3) without pad
        mean, inverse_std = np.float32(IMAGENET_MEAN), 1 / np.float32(IMAGENET_STD)
        x = pixels
        if self.layout == "last axis":
            x = (x - mean) * inverse_std
        elif self.layout == "rows":
            height, width = x.shape[1:3]
            rows = tf.reshape(x, [-1, width * 3])
            x = tf.reshape((rows - np.tile(mean, width)) * np.tile(inverse_std, width), [-1, height, width, 3])
        return tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]) if self.pad else x


def twin_model(checkpoint: Path, variant: TwinVariant, image_size: int) -> keras.Model:
    """The keras-route clip model of `checkpoint` (batch 1), with the variant's differences rebuilt into it."""
    torch_model = load_model(checkpoint)
    if not variant.fitted_batchnorm:
        torch.manual_seed(0)
        torch_model = build_model(torch_model.num_classes, torch_model.num_segments, torch_model.width_mult, torch_model.shift).eval()
    shipped = from_torch_model(torch_model, image_size=image_size, batch_size=1)
    unfold = variant.normalization != "folded"

    def rebuild(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, MeanPadding) and unfold:
            return NormalizeAndPad(variant.normalization, not (variant.tf_padding and variant.tf_padding_stem), name=layer.name)
        if isinstance(layer, MeanOverFrames) and not variant.clip_mean:
            return keras.layers.Identity(name=layer.name)
        if variant.tf_padding and isinstance(layer, keras.layers.ZeroPadding2D):
            return keras.layers.Identity(name=layer.name)
        config = layer.get_config()
        strided = isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)) and tuple(config["strides"]) == (2, 2)
        if variant.tf_padding and strided and (variant.tf_padding_stem or layer.name != f"{STEM}.0"):
            config["padding"] = "same"
        return layer.__class__.from_config(config)

    model = keras.models.clone_model(shipped, clone_function=rebuild)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(shipped.get_layer(layer.name).get_weights())
    if unfold:  # the stem takes normalized pixels again: torch's own first convolution and BatchNorm
        state = {key: value.numpy() for key, value in torch_model.state_dict().items()}
        model.get_layer(f"{STEM}.0").set_weights([state[f"{STEM}.0.weight"].transpose(2, 3, 1, 0)])
        model.get_layer(f"{STEM}.1").set_weights([state[f"{STEM}.1.{name}"] for name in ("weight", "bias", "running_mean", "running_var")])
    return model


def cached_tflite(name: str, build: Callable[[], bytes], quick: bool) -> Path:
    # Converting a 224 px variant takes a minute or more: each is converted once into bench/.work/graph-bisect/.
    path = (
        WORK / ("graph-bisect-quick" if quick else "graph-bisect") / f"{name.replace(' ', '_').replace(',', '').replace('/', '-')}.tflite"
    )
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(build())
    return path


def variant_files(settings: Settings, calibration: np.ndarray) -> dict[str, Path]:
    plain = benchmark_models(settings)["none"]
    checkpoint = plain.folder / "checkpoint" / "model.ckpt"
    frames = calibration.reshape(-1, *calibration.shape[2:])
    files = {
        KERAS_APPLICATIONS: cached_tflite("keras.applications", lambda: keras_applications_model(settings, frames), settings.quick),
        KERAS_APPLICATIONS_SYMMETRIC: cached_tflite(
            "keras.applications symmetric", lambda: keras_applications_model(settings, frames, symmetric_padding=True), settings.quick
        ),
        ONNX_ROUTE: plain.uint8,
    }
    for name, variant in TWINS.items():
        io_type = tf.int8 if variant.io_type == "int8" else tf.uint8
        build = lambda variant=variant, io_type=io_type: to_uint8_tflite(  # noqa: E731
            keras_converter(twin_model(checkpoint, variant, settings.image_size)), calibration, io_type=io_type
        )
        files[name] = cached_tflite(name, build, settings.quick)
    return files


def invoke_call(path: Path, clip: np.ndarray, threads: int, xnnpack: bool = True) -> Callable[[], None]:
    # clip (T, S, S, 3) uint8 -> a call that runs the model once; the keras.applications graphs take frames (T, S, S, 3)
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_path=str(path), num_threads=threads, experimental_op_resolver_type=resolver)
    detail = interpreter.get_input_details()[0]
    if len(detail["shape"]) == 4:
        interpreter.resize_tensor_input(detail["index"], list(clip.shape))
        pixels = clip
    else:
        pixels = clip[None]
    interpreter.allocate_tensors()
    if detail["dtype"] == np.int8:
        pixels = (pixels.astype(np.int16) - 128).astype(np.int8)  # scale 1, zero point -128: the same pixel values
    interpreter.set_tensor(detail["index"], quantize(pixels, detail) if detail["dtype"] == np.uint8 else pixels)
    return interpreter.invoke


def measure(settings: Settings) -> Report:
    calibration, _ = load_clips(synthetic_data(spec(settings, "none")), "train", 4)
    clips, _ = load_clips(synthetic_data(spec(settings, "none")), "val", 1)
    files = variant_files(settings, calibration)
    files[KERAS_APPLICATIONS_AGAIN] = files[KERAS_APPLICATIONS]
    calls = {name: invoke_call(path, clips[0], settings.threads) for name, path in files.items()}
    for name in (KERAS_APPLICATIONS, ONNX_ROUTE):
        calls[name + NO_XNNPACK] = invoke_call(files[name], clips[0], settings.threads, xnnpack=False)
    load_before = load_average()
    times = alternate_times(calls, settings.runs, settings.warmup)
    ms = {name: statistics.median(values) * 1000 for name, values in times.items()}
    fastest = {name: min(values) * 1000 for name, values in times.items()}  # the runs least disturbed by other processes
    reference = ms[KERAS_APPLICATIONS]

    def ops(name: str) -> str:
        counts = inspect_tflite(files[name.removesuffix(NO_XNNPACK)]).ops
        return ", ".join(f"{counts[op]} {op}" for op in SHOWN_OPS if counts[op])

    table = markdown_table(
        ["graph (uint8, 8 frames)", "median ms", "/ keras.applications", "fastest run, ms", "/ keras.applications", "ops that differ"],
        [
            [
                name,
                f"{value:.2f}",
                f"{value / reference:.2f}",
                f"{fastest[name]:.2f}",
                f"{fastest[name] / fastest[KERAS_APPLICATIONS]:.2f}",
                ops(name),
            ]
            for name, value in ms.items()
        ],
    )
    command = f"python -m bench.graph_bisect{settings.flag}"
    shipped_twin = ms[SHIPPED]
    row = Row(
        "13",
        f"clip latency, uint8, plain MobileNetV2: ours (keras route) / keras.applications ({settings.label})",
        f"{shipped_twin / reference:.2f} (ours {shipped_twin:.1f} ms, keras.applications {reference:.1f} ms; "
        f"onnx route {ms[ONNX_ROUTE] / reference:.2f})",
        "<= 1.05",
        shipped_twin / reference <= 1.05,
        command,
    )
    finding = findings(ms)
    row.why = finding
    details = [
        f"**Where the plain uint8 graph loses time against keras.applications** ({settings.label}; median of {settings.runs} "
        f"runs in turns after {settings.warmup} warm-up runs; load average before the timed runs {load_before}, after {load_average()}). "
        f"{finding}\n\n{table}"
    ]
    return Report([row], details)


def findings(ms: dict[str, float]) -> str:
    """The bisection's reading, each figure a difference between two variants that differ in one thing only."""
    bare = "twin, no normalization"
    bare_tf_padding = "twin, no normalization, TF padding"
    costs = {
        "normalization over the last axis": ms[AS_IT_WAS] - ms[bare],
        "normalization over rows": ms[ROWS] - ms[bare],
        "normalization folded": ms[SHIPPED] - ms[bare],
        "PADs (twin)": ms[bare] - ms[bare_tf_padding],
        "stem PAD": ms[BARE_DEPTHWISE_TF] - ms[bare_tf_padding],
        "the depthwise PADs": ms[bare] - ms[BARE_DEPTHWISE_TF],
        "the depthwise PADs, folded": ms[SHIPPED] - ms[SHIPPED_DEPTHWISE_TF],
        "PADs (keras.applications)": ms[KERAS_APPLICATIONS_SYMMETRIC] - ms[KERAS_APPLICATIONS],
        "temporal MEAN": ms[bare_tf_padding] - ms["twin, no normalization, TF padding, no temporal MEAN"],
        "QUANTIZE in and out": ms[AS_IT_WAS] - ms["twin, last-axis normalization, int8 in and out"],
        "default BatchNorm statistics": ms["twin, last-axis normalization, default BatchNorm statistics"] - ms[AS_IT_WAS],
    }
    return (
        f"Each figure is the difference between two variants that differ in that one thing; the same graph in two "
        f"interpreters differs by {ms[KERAS_APPLICATIONS_AGAIN] - ms[KERAS_APPLICATIONS]:+.1f} ms in this run, so a figure "
        f"that small is noise. The normalization "
        f"`(x - mean) / std` as it was, 3 values broadcast over the last axis: {costs['normalization over the last axis']:+.1f} ms "
        f"of the twin's {ms[AS_IT_WAS]:.1f} ms; the same SUB and MUL over rows of W x 3 values: {costs['normalization over rows']:+.1f} ms; "
        f"folded into the first convolution (tf_reference now): {costs['normalization folded']:+.1f} ms. "
        f"PyTorch's symmetric PADs instead of TF padding: {costs['PADs (twin)']:+.1f} ms in the twin, "
        f"{costs['PADs (keras.applications)']:+.1f} ms in keras.applications; of the twin's, the first convolution's PAD "
        f"{costs['stem PAD']:+.1f} ms and the four strided depthwise layers' {costs['the depthwise PADs']:+.1f} ms beside an "
        f"unnormalized stem, {costs['the depthwise PADs, folded']:+.1f} ms beside the folded stem as shipped (with TF padding on "
        f"those four layers alone, the stem left exact, the twin runs {ms[SHIPPED_DEPTHWISE_TF] / ms[KERAS_APPLICATIONS]:.2f}x "
        f"keras.applications). The temporal MEAN: {costs['temporal MEAN']:+.1f} ms; "
        f"the QUANTIZE ops of uint8 in and out: {costs['QUANTIZE in and out']:+.1f} ms; default instead of fitted BatchNorm "
        f"statistics: {costs['default BatchNorm statistics']:+.1f} ms. Without normalization and with TF padding the twin is "
        f"{ms[bare_tf_padding] - ms[KERAS_APPLICATIONS]:+.1f} ms from keras.applications. The onnx route, whose export folds the "
        f"normalization the same way (conversion/export_onnx.py), runs {ms[ONNX_ROUTE]:.1f} ms. With XNNPACK off keras.applications takes "
        f"{ms[KERAS_APPLICATIONS + NO_XNNPACK]:.0f} ms and the onnx route {ms[ONNX_ROUTE + NO_XNNPACK]:.0f} ms: "
        f"the difference that matters is in what XNNPACK runs."
    )


def main(argv: list[str] | None = None) -> Report:
    return run_alone("python -m bench.graph_bisect", __doc__, measure, argv)


if __name__ == "__main__":
    main()
