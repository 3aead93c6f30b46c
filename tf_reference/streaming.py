"""Online MobileNetV2-TSM in native Keras: the TensorFlow twin of torch_tsm.streaming.

One call processes one frame of a live stream, for a model trained with the causal shift:

    frame (1, H, W, 3) RGB 0..255, buffer_0 .. buffer_{B-1}
      -> logits (1, K) of this frame, new_buffer_0 .. new_buffer_{B-1}

Each shifted block takes the first C // 8 channels of its input from `buffer_i` (those channels of
the previous frame, zeros at the start of a stream) and hands its own first C // 8 channels on as
`new_buffer_i`. Buffers are NHWC, (1, H_i, W_i, C_i // 8). The layers are those of
tf_reference.model with the same names, so tf_reference.weights loads a torch checkpoint unchanged.
"""

import keras
import tensorflow as tf

from tf_reference.model import FOLD_DIV, classifier, features


def build_streaming_model(num_classes: int, width_mult: float, image_size: int) -> keras.Model:
    """`model([frame, *buffers]) -> [logits, *new_buffers]`; the buffers in block order."""
    frame = keras.Input(batch_shape=(1, image_size, image_size, 3), name="frame")
    buffers: list[keras.KerasTensor] = []
    new_buffers: list[keras.KerasTensor] = []

    def shift_from_buffer(x: tf.Tensor, name: str) -> tf.Tensor:
        # (1, H, W, C) -> (1, H, W, C); adds this block's buffer input and output
        buffer = keras.Input(batch_shape=(1, *x.shape[1:3], x.shape[-1] // FOLD_DIV), name=f"buffer_{len(buffers)}")
        shifted, carried = BufferedShift(name=f"{name}.shift")(x, buffer)
        buffers.append(buffer)
        new_buffers.append(carried)
        return shifted

    logits = classifier(features(frame, width_mult, shift_from_buffer), num_classes)
    return keras.Model([frame, *buffers], [logits, *new_buffers], name="mobilenetv2_tsm_streaming")


@keras.saving.register_keras_serializable(package="tf_reference")
class BufferedShift(keras.layers.Layer):
    """The causal shift for one frame: the first C // 8 channels come from the previous frame's buffer.
    Channel slices and a concatenation, as torch_tsm.streaming: TFLite builtins only."""

    def call(self, x: tf.Tensor, buffer: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # (1, H, W, C), (1, H, W, C // 8) -> shifted (1, H, W, C), new buffer (1, H, W, C // 8)
        fold = buffer.shape[-1]
        return tf.concat([buffer, x[..., fold:]], axis=-1), x[..., :fold]

    def compute_output_shape(self, x_shape: tuple, buffer_shape: tuple) -> tuple[tuple, tuple]:
        return x_shape, buffer_shape
