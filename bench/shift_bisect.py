"""Rows 1e, 1f and 11i-11l: what the shift costs in the uint8 graphs, bisected, and what any one op per
shifted block costs at all: the floor under rows 1, 1c, 14 and 11a.

Keras twins (tf_reference) of the same random network, converted to full-integer TFLite by
TFLiteConverter and timed in turns in this one process (224 px, width 1.0, 2 threads), quiet and with
one core busy. The clip (8 frames, uint8 in and out):

- plain: no shift;
- shift: the shipped TemporalShift, RESHAPE to (1, T, H*W, C), a (3, 1) depthwise convolution, RESHAPE;
- view, identity taps: the same two RESHAPEs around a depthwise convolution of one tap of 1 (the
  reshapes and one pass over the block input, without the shift);
- in place, identity taps: that convolution on the frames as they are, no reshapes: one op per shifted
  block that moves nothing along time, the least any shift written as an op can cost;
- shift again: the shift graph a second time, converted again (the noise floor of the comparison).

One frame, as the streaming model runs it (int8 in and out, the model calls alone, its buffers fed zeros):
plain; in place, identity taps; the shipped streaming shift (tf_reference.streaming.BufferedShift: the
buffer holds the block's whole input at the frame before, and a concatenation of the two along the
height feeds one depthwise convolution of two taps dilated by H); and the form it replaced, two channel
slices and a concatenation per block with buffers of C/8 channels.

    python -m bench.shift_bisect [--quick] [--runs N]
"""

from dataclasses import replace

import numpy as np

from bench.common import Report, Row, Settings, markdown_table, quiet_and_busy_medians, run_alone
from conversion.inspect import inspect_tflite

PLAIN, IN_PLACE = "plain", "in place, identity taps"
DILATED, SLICED = (
    "buffered: a concatenation and a dilated depthwise convolution (shipped)",
    "buffered: 2 slices and a concatenation (before)",
)
CLIP_VARIANTS = (PLAIN, "shift", "view, identity taps", IN_PLACE, "shift again")
FRAME_VARIANTS = (PLAIN, IN_PLACE, DILATED, SLICED)
COMMAND = "python -m bench.shift_bisect"


def identity(x, frames: int, in_place: bool):
    # (T, H, W, C) -> the same values, through one depthwise convolution of one tap of 1 (on the (1, T, H*W, C) view, or in place)
    import tensorflow as tf

    _, h, w, c = x.shape
    kernel = tf.ones((1, 1, c, 1), x.dtype)
    if in_place:
        return tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME")
    view = tf.nn.depthwise_conv2d(tf.reshape(x, (1, frames, h * w, c)), kernel, [1, 1, 1, 1], "SAME")
    return tf.reshape(view, (frames, h, w, c))


def sliced_shift(x, previous_fold):
    # (1, H, W, C) this frame's block input, (1, H, W, C // 8) the first C // 8 channels of the previous frame's ->
    # shifted (1, H, W, C), this frame's first C // 8 channels: the streaming shift as it was, channel slices
    import tensorflow as tf

    fold = previous_fold.shape[-1]
    return tf.concat([previous_fold, x[..., fold:]], axis=-1), x[..., :fold]


def clip_twin(settings: Settings, variant: str):
    """The Keras clip model (1, T, S, S, 3) -> (1, K) with the variant's op at each shifted block."""
    import keras

    from tf_reference import model as twin_model

    t = settings.num_segments

    def shift(x, name: str):
        if variant == PLAIN:
            return x
        if variant.startswith("shift"):
            return twin_model.TemporalShift(t, "bidirectional", name=f"{name}.shift")(x)
        return keras.layers.Lambda(lambda y: identity(y, t, variant == IN_PLACE), name=f"{name}.identity")(x)

    clips = keras.Input((t, settings.image_size, settings.image_size, 3), batch_size=1, name="clips")
    x = twin_model.features(twin_model.ClipsToFrames()(clips), settings.width_mult, shift)
    return keras.Model(clips, twin_model.MeanOverFrames(t)(twin_model.classifier(x, settings.num_classes)))


def frame_twin(settings: Settings, variant: str):
    """The Keras frame model (1, S, S, 3) [and a buffer per shifted block] -> (1, K) [and the new buffers]."""
    import keras

    from tf_reference import model as twin_model
    from tf_reference.model import FOLD_DIV
    from tf_reference.streaming import BufferedShift

    buffers, new_buffers = [], []

    def shift(x, name: str):
        if variant == PLAIN:
            return x
        if variant == IN_PLACE:
            return keras.layers.Lambda(lambda y: identity(y, 1, True), name=f"{name}.identity")(x)
        channels = x.shape[-1] // FOLD_DIV if variant == SLICED else x.shape[-1]
        buffer = keras.Input(batch_shape=(1, *x.shape[1:3], channels), name=f"buffer_{len(buffers):02d}")
        buffers.append(buffer)
        if variant == SLICED:
            shifted, carried = keras.layers.Lambda(lambda pair: sliced_shift(*pair), name=f"{name}.shift")([x, buffer])
        else:
            shifted, carried = BufferedShift(name=f"{name}.shift")(x, buffer)
        new_buffers.append(carried)
        return shifted

    frame = keras.Input(batch_shape=(1, settings.image_size, settings.image_size, 3), name="frame")
    logits = twin_model.classifier(twin_model.features(frame, settings.width_mult, shift), settings.num_classes)
    return keras.Model([frame, *buffers], [logits, *new_buffers])


def full_integer_tflite(model, frames: np.ndarray, io_type: str) -> bytes:
    """`frames`: (M, ...) uint8 values of the model's first input, for calibration (the buffers: random)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)

    def samples():
        for value in frames:
            first = {model.inputs[0].name: value[None].astype(np.float32)}
            yield first | {t.name: rng.normal(0, 1, t.shape).astype(np.float32) for t in model.inputs[1:]}

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = samples
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = getattr(tf, io_type)
    return converter.convert()


def bisect(models: dict, frames: np.ndarray, io_type: str, settings: Settings, tag: str) -> tuple[dict, dict, dict]:
    """Each model converted and timed in turns, quiet and with one core busy -> (quiet, busy) median seconds,
    and the ops each adds to plain's."""
    from ai_edge_litert.interpreter import Interpreter

    from bench.common import WORK

    calls, ops = {}, {}
    folder = WORK / "shift-bisect"
    folder.mkdir(parents=True, exist_ok=True)
    for name, model in models.items():
        path = folder / f"{tag}-{''.join(c if c.isalnum() else '_' for c in name)}-{settings.image_size}px.tflite"
        path.write_bytes(full_integer_tflite(model, frames, io_type))
        ops[name] = inspect_tflite(path).ops
        interpreter = Interpreter(model_path=str(path), num_threads=settings.threads)
        interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        calls[name] = interpreter.invoke
    quiet, busy = quiet_and_busy_medians(calls, settings.runs, settings.warmup)
    return quiet, busy, {name: ops[name] - ops[PLAIN] for name in models}


def table(title: str, quiet: dict, busy: dict, extra: dict) -> str:
    rows = [
        [
            name,
            f"{quiet[name] * 1000:.2f}",
            f"{quiet[name] / quiet[PLAIN]:.3f}",
            f"{busy[name] * 1000:.2f}",
            f"{busy[name] / busy[PLAIN]:.3f}",
            ", ".join(f"{n} {op}" for op, n in extra[name].most_common()) or "-",
        ]
        for name in quiet
    ]
    return f"{title}\n\n" + markdown_table(["graph (Keras twin)", "quiet ms", "/ plain", "busy ms", "/ plain", "ops beyond plain"], rows)


def ratio_to_plain(number: str, what: str, seconds: dict, variant: str, unit: str) -> Row:
    figure = f"{seconds[variant] / seconds[PLAIN]:.3f} ({seconds[variant] * 1000:.2f} ms, plain {seconds[PLAIN] * 1000:.2f} ms {unit})"
    return Row(number, what, figure, command=COMMAND)


def measure(settings: Settings) -> Report:
    from bench.models import spec, synthetic_data
    from torch_tsm.clips import load_clips

    clips, _ = load_clips(synthetic_data(spec(settings, "none")), "val", 4)
    # Differences of a few percent between five graphs: more runs than a row of bench.latency, for steadier medians
    # (a frame costs ~8x less than a clip, so it gets more again).
    several = replace(settings, runs=2 * settings.runs)
    clip = bisect({v: clip_twin(settings, v) for v in CLIP_VARIANTS}, clips, "uint8", several, "clip")
    one = replace(settings, num_segments=1, runs=10 * settings.runs)
    frame = bisect({v: frame_twin(one, v) for v in FRAME_VARIANTS}, clips[:, 0], "int8", one, "frame")
    frame_label = f"{settings.image_size} px, width {settings.width_mult}, one frame, {settings.threads} threads"
    one_op = "one depthwise pass of identity taps in place (no shift, no reshape) per shifted block / plain MobileNetV2, Keras twins"
    busy = "the same, one core kept busy by a process of its own"
    rows = [
        ratio_to_plain("1e", f"any one op per shifted block, the clip: {one_op}, uint8 ({settings.label})", clip[0], IN_PLACE, "a clip"),
        ratio_to_plain("1f", busy, clip[1], IN_PLACE, "a clip"),
        ratio_to_plain("11i", f"any one op per shifted block, one frame: {one_op}, int8 ({frame_label})", frame[0], IN_PLACE, "a frame"),
        ratio_to_plain("11j", busy, frame[1], IN_PLACE, "a frame"),
        ratio_to_plain(
            "11k",
            f"the shipped streaming shift (a concatenation and a dilated depthwise convolution a block) / plain, model calls, int8 ({frame_label})",
            frame[0],
            DILATED,
            "a frame",
        ),
        ratio_to_plain(
            "11l",
            "the streaming shift it replaced (2 channel slices and a concatenation a block, buffers of C/8 channels) / plain, the same twins",
            frame[0],
            SLICED,
            "a frame",
        ),
    ]
    runs = f"medians of {several.runs} runs in turns"
    details = [
        table(f"**The shift's cost, bisected** (rows 1e, 1f; {settings.label}; uint8; {runs})", *clip),
        table(
            f"**One frame: one op per shifted block, and two forms of the streaming shift** (rows 11i-11l; {frame_label}; int8; "
            f"medians of {one.runs} runs in turns)",
            *frame,
        ),
    ]
    return Report(rows, details)


def main(argv: list[str] | None = None) -> Report:
    return run_alone(COMMAND, __doc__, measure, argv)


if __name__ == "__main__":
    main()
