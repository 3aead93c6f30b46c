"""Writes the small TFLite models of conftest's undeployable_tflite fixture into a folder, in a process of
its own: `python -m tests.undeployable FOLDER`. In the test session's process, after the conversions of
test_api and test_bad_input, TensorFlow refused to emit the Flex op (measured: "'tf.Erf' op is neither a
custom op nor a flex op"), though either file before it alone leaves it able to; the cause is not known."""

import sys
from pathlib import Path

import numpy as np

import conversion  # noqa: F401  (torch's compiler before TensorFlow: see conversion/__init__.py)

# isort: split
import tensorflow as tf


def convert(function, ops: list, uint8: bool = False) -> bytes:
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], function)
    converter.target_spec.supported_ops = ops
    if uint8:  # TFLITE_BUILTINS (not _INT8 only): an op without an integer kernel stays float
        shape = function.input_signature[0].shape
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([np.random.default_rng(i).uniform(0, 255, shape).astype(np.float32)] for i in range(8))
        converter.inference_input_type = converter.inference_output_type = tf.uint8
    return converter.convert()


@tf.function(input_signature=[tf.TensorSpec((1, 8, 4), tf.float32)])
def flex(x):
    return tf.math.erf(x) * 2.0  # no builtin kernel: a Flex op when Select-TF ops are allowed


@tf.function(input_signature=[tf.TensorSpec((1, 16), tf.float32)])
def float_island(x):
    return tf.sin(x * 0.01 + 1.0) * 3.0 + 1.0  # SIN has no integer kernel


@tf.function(input_signature=[tf.TensorSpec((1, 16), tf.float32)])
def clean(x):
    return (x * 0.01 + 1.0) * 3.0 + 1.0


@tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32)])
def dynamic(x):
    return tf.reshape(x, (tf.shape(x)[0] * 2, 2)) + 1.0


def write_models(folder: Path) -> None:
    builtins = [tf.lite.OpsSet.TFLITE_BUILTINS]
    models = {
        "flex": convert(flex, [*builtins, tf.lite.OpsSet.SELECT_TF_OPS]),
        "float_island": convert(float_island, builtins, uint8=True),
        "clean": convert(clean, builtins, uint8=True),
        "dynamic": convert(dynamic, builtins),
    }
    for name, model in models.items():
        (folder / f"{name}.tflite").write_bytes(model)


if __name__ == "__main__":
    write_models(Path(sys.argv[1]))
