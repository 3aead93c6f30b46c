"""SavedModel (onnx2tf output, frames in) -> float32 and full-integer uint8 TFLite models (clip in).

Both take `clip (1, T, H, W, 3)` raw RGB pixels and return `logits (1, K)`:
- float32: pixels as float 0..255, logits as float.
- uint8: pixels as uint8 with input quantization scale 1, zero point 0, so a camera frame goes in
  unchanged; logits as uint8 with the output's scale and zero point
  (logit = scale * (q - zero_point); the arg-max is the arg-max of q).
Only TFLite builtin int8 kernels are allowed (no Select-TF ops): the converter fails rather than
produce a model that a stock LiteRT cannot run.
"""

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm


def clip_function(saved_model_dir: Path, num_segments: int, image_size: int, uint8_input: bool):
    """A concrete function (1, T, S, S, 3) -> {"logits": (1, K)} around the frames-in SavedModel."""
    loaded = tf.saved_model.load(str(saved_model_dir))
    frames_logits = loaded.signatures["serving_default"]

    @tf.function(input_signature=[tf.TensorSpec((1, num_segments, image_size, image_size, 3), tf.float32, name="clip")])
    def clip_logits(clip):
        if uint8_input:
            # Pins the input quantization to [0, 255] in steps of 1: scale 1, zero point 0.
            clip = tf.quantization.fake_quant_with_min_max_args(clip, min=0.0, max=255.0, num_bits=8)
        frames = tf.reshape(clip, (num_segments, image_size, image_size, 3))
        (logits,) = frames_logits(frames=frames).values()  # one output; onnx2tf names it output_0
        return {"logits": logits}

    return clip_logits.get_concrete_function(), loaded


def to_float32_tflite(saved_model_dir: Path, num_segments: int, image_size: int) -> bytes:
    function, loaded = clip_function(saved_model_dir, num_segments, image_size, uint8_input=False)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], loaded)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def to_uint8_tflite(saved_model_dir: Path, num_segments: int, image_size: int, calibration_clips: Iterable[np.ndarray], count: int | None = None) -> bytes:
    """`calibration_clips`: (T, S, S, 3) uint8 clips preprocessed exactly as at inference."""
    function, loaded = clip_function(saved_model_dir, num_segments, image_size, uint8_input=True)
    clips = list(calibration_clips)
    if not clips:
        raise ValueError("full-integer quantization needs calibration clips")

    def representative_dataset():
        for clip in tqdm(clips, desc="calibrating", unit="clip", leave=False):
            yield [clip[None].astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], loaded)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    return converter.convert()
