"""MobileNetV2-TSM in native Keras (NHWC): the TensorFlow twin of torch_tsm.model.

    (N, T, H, W, 3) RGB 0..255
      -> frames (N*T, H, W, 3)
      -> MobileNetV2 features, the ImageNet normalization folded into the first convolution (STEM),
         with the temporal shift at the start of the residual branch
         of each inverted-residual block that has a skip connection
      -> global average pool -> dropout -> dense   per-frame logits (N*T, K)
      -> mean over the T frames                    clip logits (N, K)

The normalization `(x - mean) / std` of torch_tsm is not a layer here. As a SUB and a MUL over every
pixel, 3 values broadcast over the last axis, it made a uint8 graph of normalization + first convolution
on 8 x 224 x 224 x 3 pixels 1.5x slower than the same graph without it (66 against 44 ms, in turns in one
process on a machine at load 5); folded as below it cost nothing measurable (44.1 ms). The first
convolution takes raw pixels, its kernel divided by std per input channel, and the mean moves into the
running mean of the BatchNorm after it (tf_reference.weights folds both): the same function up to float
rounding; in training BatchNorm's batch statistics absorb the shift, and the kernel trains in the folded
parametrization. PyTorch pads the normalized pixels with zeros, which are raw pixels equal to the mean:
so the border is a frame of the mean (MeanPadding), two concatenations of constants.

Every layer is named after its PyTorch state-dict prefix (`features.3.conv.1.0` is the depthwise
conv of block 3, `features.3` the block's output), so tf_reference.weights maps weights by name and
an activation can be compared with its torch twin by name. This module does not import torch.
"""

from collections.abc import Callable

import keras  # Keras 3, what tf.keras is with TF 2.21
import numpy as np
import tensorflow as tf

# Copied from torch_tsm.model and torch_tsm.shift, which import torch.
IMAGENET_MEAN = (123.675, 116.28, 103.53)  # in 0..255 pixel units
IMAGENET_STD = (58.395, 57.12, 57.375)
SHIFT_MODES = ("bidirectional", "causal", "none")
FOLD_DIV = 8  # the shift moves C // 8 channels each way
STEM = "features.0"  # the first convolution, which takes raw pixels (the normalization folded in)

# (block input, block name) -> the input of the block's residual branch: the temporal shift
ShiftFn = Callable[[tf.Tensor, str], tf.Tensor]

BN_EPSILON = 1e-5  # torch.nn.BatchNorm2d's default
BN_MOMENTUM = 0.9  # Keras keeps `momentum` of the old statistics; torch's momentum 0.1 is the share of the new
DROPOUT = 0.2

# torchvision's MobileNetV2: t expansion, c output channels, n repeats, s stride of the first repeat
INVERTED_RESIDUAL_SETTING = (
    # t, c, n, s
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def build_model(
    num_classes: int,
    num_segments: int = 8,
    width_mult: float = 1.0,
    shift: str = "bidirectional",
    *,
    image_size: int | None = None,
    batch_size: int | None = None,
) -> keras.Model:
    """The Keras MobileNetV2-TSM. `image_size` and `batch_size` fix those input dimensions (None: any);
    a converter wants them fixed, and with `batch_size=1` the shift needs no clip-boundary mask."""
    if shift not in SHIFT_MODES:
        raise ValueError(f"unknown shift mode {shift!r}; expected one of {SHIFT_MODES}")
    clips = keras.Input((num_segments, image_size, image_size, 3), batch_size=batch_size, name="clips")
    x = ClipsToFrames(name="frames")(clips)
    x = features(x, width_mult, lambda y, name: TemporalShift(num_segments, shift, name=f"{name}.shift")(y))
    logits = MeanOverFrames(num_segments, name="clip_logits")(classifier(x, num_classes))
    return keras.Model(clips, logits, name="mobilenetv2_tsm")


def features(pixels: tf.Tensor, width_mult: float, shift: ShiftFn) -> tf.Tensor:
    # (N*T, H, W, 3) RGB 0..255 -> (N*T, H/32, W/32, last_channel)
    x = MeanPadding(name=f"{STEM}.0.pad")(pixels)
    x = keras.layers.Conv2D(_make_divisible(32 * width_mult), 3, 2, padding="valid", use_bias=False, name=f"{STEM}.0")(x)
    x = _batch_norm(x, name=f"{STEM}.1")
    x = keras.layers.ReLU(6.0, name=f"{STEM}.2")(x)
    index = 1
    for expand_ratio, channels, repeats, first_stride in INVERTED_RESIDUAL_SETTING:
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            out_channels = _make_divisible(channels * width_mult)
            x = _inverted_residual(x, out_channels, stride, expand_ratio, shift, name=f"features.{index}")
            index += 1
    last_channel = _make_divisible(1280 * max(1.0, width_mult))
    return _conv_bn_relu6(x, last_channel, kernel_size=1, stride=1, name=f"features.{index}")


def classifier(x: tf.Tensor, num_classes: int) -> tf.Tensor:
    # (N*T, h, w, last_channel) -> (N*T, K) per-frame logits
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(DROPOUT, name="classifier.0")(x)
    return keras.layers.Dense(num_classes, name="classifier.1")(x)


def _inverted_residual(x: tf.Tensor, out_channels: int, stride: int, expand_ratio: int, shift: ShiftFn, name: str) -> tf.Tensor:
    # (N*T, H, W, C) -> (N*T, H/stride, W/stride, out_channels)
    in_channels = x.shape[-1]
    hidden = int(round(in_channels * expand_ratio))
    use_res_connect = stride == 1 and in_channels == out_channels
    y = shift(x, name) if use_res_connect else x
    index = 0
    if expand_ratio != 1:
        y = _conv_bn_relu6(y, hidden, kernel_size=1, stride=1, name=f"{name}.conv.0")  # pw
        index = 1
    y = _depthwise_bn_relu6(y, stride, name=f"{name}.conv.{index}")  # dw
    y = _conv(y, out_channels, kernel_size=1, stride=1, name=f"{name}.conv.{index + 1}")  # pw-linear
    y = _batch_norm(y, name=f"{name}.conv.{index + 2}")
    return keras.layers.Add(name=name)([x, y]) if use_res_connect else y


def _conv_bn_relu6(x: tf.Tensor, filters: int, kernel_size: int, stride: int, name: str) -> tf.Tensor:
    # (N*T, H, W, C) -> (N*T, H/stride, W/stride, filters): torchvision's Conv2dNormActivation
    x = _conv(x, filters, kernel_size, stride, name=f"{name}.0")
    x = _batch_norm(x, name=f"{name}.1")
    return keras.layers.ReLU(6.0, name=f"{name}.2")(x)


def _depthwise_bn_relu6(x: tf.Tensor, stride: int, name: str) -> tf.Tensor:
    # (N*T, H, W, C) -> (N*T, H/stride, W/stride, C): Conv2dNormActivation with groups=C
    x, padding = _torch_padding(x, kernel_size=3, stride=stride, name=f"{name}.0")
    x = keras.layers.DepthwiseConv2D(3, stride, padding=padding, use_bias=False, name=f"{name}.0")(x)
    x = _batch_norm(x, name=f"{name}.1")
    return keras.layers.ReLU(6.0, name=f"{name}.2")(x)


def _conv(x: tf.Tensor, filters: int, kernel_size: int, stride: int, name: str) -> tf.Tensor:
    # (N*T, H, W, C) -> (N*T, H/stride, W/stride, filters)
    x, padding = _torch_padding(x, kernel_size, stride, name)
    return keras.layers.Conv2D(filters, kernel_size, stride, padding=padding, use_bias=False, name=name)(x)


def _batch_norm(x: tf.Tensor, name: str) -> tf.Tensor:
    # (N*T, H, W, C) -> (N*T, H, W, C)
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def _torch_padding(x: tf.Tensor, kernel_size: int, stride: int, name: str) -> tuple[tf.Tensor, str]:
    # (N*T, H, W, C) -> (N*T, H', W', C) and the padding mode for the conv that follows.
    # PyTorch pads (k-1)/2 on every side. Keras "same" does too at stride 1, but at stride 2 on an even
    # size it pads one row and column, at the bottom and right only: pad explicitly there, convolve "valid".
    if kernel_size == 1:
        return x, "valid"
    if stride == 1:
        return x, "same"
    return keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}.pad")(x), "valid"


def shift_taps(channels: int, fold_div: int = FOLD_DIV, mode: str = "bidirectional") -> np.ndarray:
    """(C, 3) float32: per channel, the weights of frames t-1, t, t+1 in the shifted frame t, as
    torch_tsm.shift.shift_taps (copied: this module does not import torch)."""
    fold = channels // fold_div
    taps = np.zeros((channels, 3), np.float32)
    taps[:, 1] = 1  # the frame itself
    if mode == "causal":
        taps[:fold] = (1, 0, 0)  # from the previous frame
    elif mode == "bidirectional":
        taps[:fold] = (0, 0, 1)  # from the next frame
        taps[fold : 2 * fold] = (1, 0, 0)  # from the previous frame
    return taps


def _make_divisible(value: float, divisor: int = 8) -> int:
    # torchvision.models._utils._make_divisible: round to a multiple of 8, never more than 10% down
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


@keras.saving.register_keras_serializable(package="tf_reference")
class TemporalShift(keras.layers.Layer):
    """torch_tsm.shift.temporal_shift on channels-last frames: zero-filled, no wrap-around.

    bidirectional: channels [0, C/8) take the next frame, [C/8, 2C/8) the previous one;
    causal: channels [0, C/8) take the previous frame; none: identity.
    Written as torch_tsm.shift.temporal_shift_conv, the export form: the frames viewed as (N, T, H*W, C)
    and ONE depthwise convolution along time with fixed 0/1 taps, zero-padded by one frame at each end of
    every clip. Exact in float32 (each output is 1 * one input + 0 * two others) and, in TFLite, a
    DEPTHWISE_CONV_2D between two RESHAPEs where channel slices, pads and a concatenation took 8 ops per
    block (measured in BENCHMARKS.md). A clip never sees its neighbour, so stacked clips need no mask.
    """

    def __init__(self, num_segments: int, mode: str = "bidirectional", fold_div: int = FOLD_DIV, **kwargs) -> None:
        super().__init__(**kwargs)
        if mode not in SHIFT_MODES:
            raise ValueError(f"unknown shift mode {mode!r}; expected one of {SHIFT_MODES}")
        self.num_segments = num_segments
        self.mode = mode
        self.fold_div = fold_div

    def call(self, x: tf.Tensor) -> tf.Tensor:
        # (N*T, H, W, C) -> (N*T, H, W, C)
        if self.mode == "none":
            return x
        if x.shape[0] is not None and x.shape[0] % self.num_segments:
            raise ValueError(f"first axis {x.shape[0]} is not a whole number of {self.num_segments}-frame clips")
        height, width = (x.shape[axis] or tf.shape(x)[axis] for axis in (1, 2))  # static where known
        channels = x.shape[-1]
        clips = tf.reshape(x, [-1, self.num_segments, height * width, channels])
        kernel = tf.constant(shift_taps(channels, self.fold_div, self.mode).T[:, None, :, None], x.dtype)  # (3, 1, C, 1)
        shifted = tf.nn.depthwise_conv2d(clips, kernel, strides=[1, 1, 1, 1], padding="SAME")
        return tf.reshape(shifted, [-1, height, width, channels])

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "num_segments": self.num_segments, "mode": self.mode, "fold_div": self.fold_div}


@keras.saving.register_keras_serializable(package="tf_reference")
class MeanPadding(keras.layers.Layer):
    """A one-pixel border of the ImageNet mean around raw frames: PyTorch's zero padding of normalized pixels."""

    def call(self, pixels: tf.Tensor) -> tf.Tensor:
        # (N, H, W, 3) -> (N, H + 2, W + 2, 3)
        batch, height, width = (pixels.shape[axis] or tf.shape(pixels)[axis] for axis in range(3))  # static where known
        mean = tf.constant(IMAGENET_MEAN, pixels.dtype)
        rows = tf.broadcast_to(mean, [batch, 1, width, 3])
        x = tf.concat([rows, pixels, rows], axis=1)
        columns = tf.broadcast_to(mean, [batch, height + 2, 1, 3])
        return tf.concat([columns, x, columns], axis=2)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        n, h, w, c = input_shape
        return (n, h + 2 if h is not None else None, w + 2 if w is not None else None, c)


@keras.saving.register_keras_serializable(package="tf_reference")
class ClipsToFrames(keras.layers.Layer):
    """Stack the frames of all clips on the first axis, as the 2-D backbone sees them."""

    def call(self, clips: tf.Tensor) -> tf.Tensor:
        # (N, T, H, W, C) -> (N*T, H, W, C)
        frame_shape = [clips.shape[axis] or tf.shape(clips)[axis] for axis in (2, 3, 4)]  # static where known
        return tf.reshape(clips, [-1, *frame_shape])

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        n, t = input_shape[:2]
        return (n * t if n is not None else None, *input_shape[2:])


@keras.saving.register_keras_serializable(package="tf_reference")
class MeanOverFrames(keras.layers.Layer):
    """Clip logits: the mean of the per-frame logits over the T frames of each clip."""

    def __init__(self, num_segments: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_segments = num_segments

    def call(self, frame_logits: tf.Tensor) -> tf.Tensor:
        # (N*T, K) -> (N, K)
        per_clip = tf.reshape(frame_logits, [-1, self.num_segments, frame_logits.shape[-1]])
        return tf.reduce_mean(per_clip, axis=1)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        n_frames, classes = input_shape
        return (n_frames // self.num_segments if n_frames is not None else None, classes)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_segments": self.num_segments}
