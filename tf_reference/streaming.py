"""Online MobileNetV2-TSM in native Keras: the TensorFlow twin of torch_tsm.streaming.

One call processes one frame of a live stream, for a model trained with the causal shift:

    frame (1, H, W, 3) RGB 0..255, buffer_0 .. buffer_{B-1}
      -> logits (1, K) of this frame, new_buffer_0 .. new_buffer_{B-1}

Each shifted block takes the first C // 8 channels of its input from `buffer_i` (the previous frame's
input of the block, zeros at the start of a stream) and hands its own input on as `new_buffer_i`.
Buffers are NHWC, (1, H_i, W_i, C_i). The layers are those of tf_reference.model with the same names,
so tf_reference.weights loads a torch checkpoint unchanged.
"""

import keras
import tensorflow as tf

from tf_reference.model import classifier, features, shift_taps


def build_streaming_model(num_classes: int, width_mult: float, image_size: int) -> keras.Model:
    """`model([frame, *buffers]) -> [logits, *new_buffers]`; the buffers in block order."""
    frame = keras.Input(batch_shape=(1, image_size, image_size, 3), name="frame")
    buffers: list[keras.KerasTensor] = []
    new_buffers: list[keras.KerasTensor] = []

    def shift_from_buffer(x: tf.Tensor, name: str) -> tf.Tensor:
        # (1, H, W, C) -> (1, H, W, C); adds this block's buffer input and output
        buffer = keras.Input(batch_shape=(1, *x.shape[1:]), name=f"buffer_{len(buffers)}")
        shifted, carried = BufferedShift(name=f"{name}.shift")(x, buffer)
        buffers.append(buffer)
        new_buffers.append(carried)
        return shifted

    logits = classifier(features(frame, width_mult, shift_from_buffer), num_classes)
    return keras.Model([frame, *buffers], [logits, *new_buffers], name="mobilenetv2_tsm_streaming")


@keras.saving.register_keras_serializable(package="tf_reference")
class BufferedShift(keras.layers.Layer):
    """The causal shift for one frame: the first C // 8 channels come from the previous frame's input.
    As torch_tsm.shift.causal_shift_step: the two frames stacked along the height and ONE depthwise
    convolution of two taps (frame t-1, frame t) dilated by H; in TFLite a CONCATENATION and a
    DEPTHWISE_CONV_2D, builtins that XNNPACK runs."""

    def call(self, x: tf.Tensor, buffer: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # (1, H, W, C) this frame's block input, (1, H, W, C) the previous frame's -> shifted (1, H, W, C), new buffer: x
        height, channels = x.shape[1], x.shape[-1]
        kernel = tf.constant(shift_taps(channels, mode="causal")[:, :2].T[:, None, :, None], x.dtype)  # (2, 1, C, 1)
        both = tf.concat([buffer, x], axis=1)
        return tf.nn.depthwise_conv2d(both, kernel, strides=[1, 1, 1, 1], padding="VALID", dilations=[height, 1]), x

    def compute_output_shape(self, x_shape: tuple, buffer_shape: tuple) -> tuple[tuple, tuple]:
        return x_shape, x_shape
