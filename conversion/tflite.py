"""A TensorFlow clip model -> float32 and full-integer uint8 TFLite models.

Two TF sources give a TFLiteConverter: the onnx2tf SavedModel, which takes the clip as T frames
(`saved_model_converter`), and the native Keras twin from tf_reference (`keras_converter`). Both
TFLite models take `clip (1, T, H, W, 3)` raw RGB pixels and return `logits (1, K)`:
- float32: pixels as float 0..255, logits as float.
- uint8: pixels as uint8 with input quantization scale 1, zero point 0, so a camera frame goes in
  unchanged; logits as uint8 with the output's scale and zero point
  (logit = scale * (q - zero_point); the arg-max is the arg-max of q).
Only TFLite builtin int8 kernels are allowed (no Select-TF ops): the converter fails rather than
produce a model that a stock LiteRT cannot run.
"""

import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from torch_tsm.cli import ignoring_warning, without_prints

# uint8_input -> a converter for the clip model; uint8_input pins the input range to 0..255.
ConverterSource = Callable[[bool], AbstractContextManager[tf.lite.TFLiteConverter]]


def to_float32_tflite(source: ConverterSource) -> bytes:
    with source(False) as converter:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        with without_prints():
            return converter.convert()


def to_uint8_tflite(source: ConverterSource, calibration_clips: np.ndarray, io_type: tf.DType = tf.uint8) -> bytes:
    """`calibration_clips` (M, T, S, S, 3) uint8: real clips preprocessed exactly as at inference.
    io_type: tf.int8 drops the QUANTIZE ops at the input and output (bench/graph_bisect.py measures them)."""
    if len(calibration_clips) == 0:
        raise ValueError("full-integer quantization needs calibration clips")

    def representative_dataset():
        for clip in tqdm(calibration_clips, desc="calibrating", unit="clip", leave=False):
            yield [clip[None].astype(np.float32)]

    with source(True) as converter:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = io_type
        # The warning is about quantized inputs' statistics, which the input range pin (uint8_input) provides.
        with without_prints(), ignoring_warning("Statistics for quantized inputs were expected", UserWarning):
            return converter.convert()


def saved_model_converter(saved_model_dir: Path, num_segments: int, image_size: int) -> ConverterSource:
    """The onnx2tf SavedModel (frames (T, H, W, 3) in) behind a clip signature (1, T, H, W, 3)."""

    @contextmanager
    def source(uint8_input: bool) -> Iterator[tf.lite.TFLiteConverter]:
        loaded = tf.saved_model.load(str(saved_model_dir))
        frames_logits = loaded.signatures["serving_default"]

        @tf.function(input_signature=[tf.TensorSpec((1, num_segments, image_size, image_size, 3), tf.float32, name="clip")])
        def serve(clip):
            # (1, T, H, W, 3) -> (1, K)
            clip = _pin_input_range(clip) if uint8_input else clip
            (logits,) = frames_logits(frames=tf.reshape(clip, (num_segments, image_size, image_size, 3))).values()
            return {"logits": logits}  # the one output; onnx2tf names it output_0

        with function_converter(serve.get_concrete_function()) as converter:
            yield converter

    return source


@contextmanager
def function_converter(function) -> Iterator[tf.lite.TFLiteConverter]:
    """A converter for a concrete function, its variables frozen into constants.

    Goes through a temporary SavedModel holding the function and the variables it captures, nothing
    else: a SavedModel that also held a Keras model would carry the model's own functions, some of
    which assign variables, and the converter then keeps every variable as a READ_VARIABLE op.
    """
    module = tf.Module()
    module.captured = list(function.variables)
    with tempfile.TemporaryDirectory(prefix="serving-") as folder:
        tf.saved_model.save(module, folder, signatures={"serving_default": function})
        yield tf.lite.TFLiteConverter.from_saved_model(folder)


def keras_converter(model: keras.Model) -> ConverterSource:
    """The native Keras twin, built with a fixed input (batch 1, image size).

    Through a concrete function rather than `from_keras_model`, which exports the whole Keras model
    (twice per conversion, for its signature) and takes half as long again for the same graph.
    """

    @contextmanager
    def source(uint8_input: bool) -> Iterator[tf.lite.TFLiteConverter]:
        @tf.function(input_signature=[tf.TensorSpec(model.input_shape, tf.float32, name="clip")])
        def serve(clip):
            # (1, T, H, W, 3) -> (1, K)
            clip = _pin_input_range(clip) if uint8_input else clip
            return {"logits": model(clip, training=False)}

        with function_converter(serve.get_concrete_function()) as converter:
            yield converter

    return source


def _pin_input_range(clip: tf.Tensor) -> tf.Tensor:
    # Fixes the input quantization to [0, 255] in steps of 1: scale 1, zero point 0, raw pixels in.
    return tf.quantization.fake_quant_with_min_max_args(clip, min=0.0, max=255.0, num_bits=8)
