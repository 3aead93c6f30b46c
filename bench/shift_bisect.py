"""What the shift's one convolution costs in the uint8 clip graph, and what its view's reshapes cost.

Keras twins (tf_reference) of the same random network, converted to full-integer uint8 TFLite by
TFLiteConverter and timed in turns in this one process (224 px, width 1.0, 8 frames, 2 threads),
quiet and with one core busy:

- plain: no shift;
- shift: the shipped TemporalShift, RESHAPE to (1, T, H*W, C), a (3, 1) depthwise convolution, RESHAPE;
- view, identity taps: the same two RESHAPEs around a depthwise convolution of one tap of 1 (the
  reshapes and one pass over the block input, without the shift);
- in place, identity taps: that convolution on the frames as they are, no reshapes;
- shift again: the shift graph a second time, converted again (the noise floor of the comparison).

    python -m bench.shift_bisect [--quick] [--runs N]
"""

import statistics

import numpy as np

from bench.common import Report, Settings, alternate_times, busy_core, markdown_table, run_alone
from conversion.inspect import inspect_tflite

VARIANTS = ("plain", "shift", "view, identity taps", "in place, identity taps", "shift again")


def twin(settings: Settings, variant: str):
    """The Keras clip model (1, T, S, S, 3) -> (1, K) with the variant's op at each shifted block."""
    import keras
    import tensorflow as tf

    from tf_reference import model as twin_model

    t = settings.num_segments

    def identity(x: tf.Tensor, in_place: bool) -> tf.Tensor:
        _, h, w, c = x.shape
        kernel = tf.ones((1, 1, c, 1), x.dtype)
        if in_place:
            return tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME")
        view = tf.nn.depthwise_conv2d(tf.reshape(x, (1, t, h * w, c)), kernel, [1, 1, 1, 1], "SAME")
        return tf.reshape(view, (t, h, w, c))

    def shift(x: tf.Tensor, name: str) -> tf.Tensor:
        if variant == "plain":
            return x
        if variant.startswith("shift"):
            return twin_model.TemporalShift(t, "bidirectional", name=f"{name}.shift")(x)
        in_place = variant.startswith("in place")
        return keras.layers.Lambda(lambda y: identity(y, in_place), name=f"{name}.identity")(x)

    clips = keras.Input((t, settings.image_size, settings.image_size, 3), batch_size=1)
    x = twin_model.ClipsToFrames()(clips)
    x = twin_model.features(x, settings.width_mult, shift)
    return keras.Model(clips, twin_model.MeanOverFrames(t)(twin_model.classifier(x, settings.num_classes)))


def uint8_tflite(model, clips: np.ndarray) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([clip[None].astype(np.float32)] for clip in clips)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.uint8
    return converter.convert()


def measure(settings: Settings) -> Report:
    from ai_edge_litert.interpreter import Interpreter

    from bench.common import WORK
    from bench.models import spec, synthetic_data
    from torch_tsm.clips import load_clips

    clips, _ = load_clips(synthetic_data(spec(settings, "none")), "val", 4)
    calls, ops = {}, {}
    folder = WORK / "shift-bisect"
    folder.mkdir(parents=True, exist_ok=True)
    for variant in VARIANTS:
        path = folder / f"{variant.replace(' ', '_').replace(',', '')}-{settings.image_size}px.tflite"
        path.write_bytes(uint8_tflite(twin(settings, variant), clips))
        ops[variant] = inspect_tflite(path).ops
        interpreter = Interpreter(model_path=str(path), num_threads=settings.threads)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], clips[:1])
        calls[variant] = interpreter.invoke
    quiet = {name: statistics.median(v) for name, v in alternate_times(calls, settings.runs, settings.warmup).items()}
    with busy_core():
        busy = {name: statistics.median(v) for name, v in alternate_times(calls, settings.runs, settings.warmup).items()}
    extra = {name: ops[name] - ops["plain"] for name in VARIANTS}
    rows = [
        [
            name,
            f"{quiet[name] * 1000:.2f}",
            f"{quiet[name] / quiet['plain']:.3f}",
            f"{busy[name] * 1000:.2f}",
            f"{busy[name] / busy['plain']:.3f}",
            ", ".join(f"{n} {op}" for op, n in extra[name].most_common()) or "-",
        ]
        for name in VARIANTS
    ]
    table = markdown_table(["graph (uint8, Keras twin)", "quiet ms", "/ plain", "busy ms", "/ plain", "ops beyond plain"], rows)
    return Report([], [f"**The shift's cost, bisected** ({settings.label}; medians of {settings.runs} runs in turns)\n\n{table}"])


def main(argv: list[str] | None = None) -> Report:
    return run_alone("python -m bench.shift_bisect", __doc__, measure, argv)


if __name__ == "__main__":
    main()
