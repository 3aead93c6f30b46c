"""The Temporal Shift Module (Lin, Gan, Han, ICCV 2019), zero-filled as in the paper.

Frames of a batch of clips are stacked on the first axis, `(N*T, C, H, W)`, as the 2-D backbone
sees them. Shifting a fold of channels one frame along time mixes information between neighbouring
frames at zero FLOPs and zero parameters.

Written as a channel split, `F.pad` along the first axis and a channel concatenation only: the
formulation measured to survive ONNX export, onnxsim and onnx2tf unchanged (no 5-D reshapes, no
transposes, no gathers). Slicing channels and frames in one expression (`x[1:, :fold]`) is avoided on
purpose: onnxsim fuses the two slices into one two-axis Slice, whose axes onnx2tf 1.28 swaps.
Training uses this function.

`temporal_shift_conv` is the same function written as ONE depthwise convolution along time: the exported
graphs use it (torch_tsm.model.export_form), since in a TFLite graph the slices, pads and concatenation
above are 8 ops per shifted block and it is 1 (plus the 2 reshapes of its view). tests/test_shift.py
checks that the two are equal, bit for bit, on random tensors of several stacked clips, in every mode.

`causal_shift_step` is one frame of the causal shift as a live stream runs it (torch_tsm.streaming),
also one convolution; tested bit for bit against the same frame-by-frame loop.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

SHIFT_MODES = ("bidirectional", "causal", "none")


def temporal_shift(x: Tensor, num_segments: int, fold_div: int = 8, mode: str = "bidirectional") -> Tensor:
    # (N*T, C, H, W) -> (N*T, C, H, W)
    if not _shifts(x, num_segments, mode):
        return x
    channels = x.shape[1]
    fold = channels // fold_div
    if mode == "causal":
        shifted, rest = x.split([fold, channels - fold], dim=1)
        return torch.cat([_from_previous_frame(shifted, num_segments), rest], dim=1)
    to_next, to_previous, rest = x.split([fold, fold, channels - 2 * fold], dim=1)
    return torch.cat([_from_next_frame(to_next, num_segments), _from_previous_frame(to_previous, num_segments), rest], dim=1)


def temporal_shift_conv(x: Tensor, num_segments: int, fold_div: int = 8, mode: str = "bidirectional") -> Tensor:
    """temporal_shift as a depthwise convolution along time with fixed 0/1 taps (the export form).

    Frames viewed as (N, C, T, H*W): a (3, 1) depthwise kernel whose taps pick frame t+1, t or t-1 per
    channel, zero-padded by one frame at each end of every clip, as the paper's shift. Each output is
    1 * one input + 0 * two others: exact in float32, and a clip never sees its neighbour (no mask).

    The view is reached through channels-last (permute, reshape, permute): onnx2tf cancels both
    permutes against its own NCHW -> NHWC layout, so the TFLite graph holds RESHAPE, the convolution,
    RESHAPE and no TRANSPOSE (with the permute straight to (C, T, H, W) it held 4 TRANSPOSE per block).
    """
    # (N*T, C, H, W) -> (N*T, C, H, W)
    if not _shifts(x, num_segments, mode):
        return x
    frames, channels, height, width = x.shape
    kernel = shift_taps(channels, fold_div, mode).to(x).view(channels, 1, 3, 1)
    clips = x.permute(0, 2, 3, 1).reshape(frames // num_segments, num_segments, height * width, channels).permute(0, 3, 1, 2)
    shifted = F.conv2d(clips, kernel, padding=(1, 0), groups=channels)
    return shifted.permute(0, 2, 3, 1).reshape(frames, height, width, channels).permute(0, 3, 1, 2)


def causal_shift_step(x: Tensor, previous: Tensor, fold_div: int = 8) -> Tensor:
    """One frame of the causal shift in a live stream: the first C // fold_div channels of `x` replaced by
    those of `previous`, the block's input at the frame before (zeros at the start of a stream).

    Written as ONE depthwise convolution, as temporal_shift_conv: the two frames stacked along the height,
    (N, C, 2H, W), and per channel two taps (frame t-1, frame t) dilated by H, so that output row r takes
    row r of one frame or of the other. Exact in float32, as temporal_shift_conv. In the streaming TFLite
    model that is a concatenation and a convolution per shifted block where channel slices and a
    concatenation took three ops, and it runs faster (BENCHMARKS.md, rows 11k and 11l).
    """
    # (N, C, H, W) frame t, (N, C, H, W) frame t-1 -> (N, C, H, W)
    channels, height = x.shape[1], x.shape[2]
    kernel = shift_taps(channels, fold_div, "causal")[:, :2].to(x).view(channels, 1, 2, 1)
    return F.conv2d(torch.cat([previous, x], dim=2), kernel, dilation=(height, 1), groups=channels)


def shift_taps(channels: int, fold_div: int = 8, mode: str = "bidirectional") -> Tensor:
    """(C, 3) float32: per channel, the weights of frames t-1, t, t+1 in the shifted frame t (one 1, two 0s).
    Built from Python lists: an export traces it as one constant (in-place writes would trace as ScatterND)."""
    fold = channels // fold_div
    previous, itself, following = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]
    if mode == "causal":
        rows = [previous] * fold + [itself] * (channels - fold)
    elif mode == "bidirectional":
        rows = [following] * fold + [previous] * fold + [itself] * (channels - 2 * fold)
    else:
        rows = [itself] * channels
    return torch.tensor(rows)


def _shifts(x: Tensor, num_segments: int, mode: str) -> bool:
    """Whether `mode` shifts at all (not "none"); a mode or a frame count that cannot be shifted raises."""
    if mode not in SHIFT_MODES:
        raise ValueError(f"unknown shift mode {mode!r}; expected one of {SHIFT_MODES}")
    if mode != "none" and x.shape[0] % num_segments:
        raise ValueError(f"first axis {x.shape[0]} is not a whole number of {num_segments}-frame clips")
    return mode != "none"


def _from_previous_frame(x: Tensor, num_segments: int) -> Tensor:
    # (N*T, F, H, W) -> (N*T, F, H, W): frame t holds frame t-1, zeros at t = 0
    shifted = F.pad(x[:-1], (0, 0, 0, 0, 0, 0, 1, 0))
    return _cut_clip_boundaries(shifted, num_segments, first_frame_empty=True)


def _from_next_frame(x: Tensor, num_segments: int) -> Tensor:
    # (N*T, F, H, W) -> (N*T, F, H, W): frame t holds frame t+1, zeros at t = T-1
    shifted = F.pad(x[1:], (0, 0, 0, 0, 0, 0, 0, 1))
    return _cut_clip_boundaries(shifted, num_segments, first_frame_empty=False)


def _cut_clip_boundaries(shifted: Tensor, num_segments: int, first_frame_empty: bool) -> Tensor:
    # (N*T, F, H, W) -> (N*T, F, H, W)
    # With several clips stacked, the pad only empties the ends of the whole stack; the frames at the
    # inner clip boundaries received a neighbouring clip's frame and are zeroed here. A single clip
    # (the exported graph) needs no mask, so none is traced.
    if shifted.shape[0] == num_segments:
        return shifted
    frame_index = torch.arange(shifted.shape[0], device=shifted.device) % num_segments
    empty = frame_index == (0 if first_frame_empty else num_segments - 1)
    return shifted * (~empty).to(shifted.dtype).view(-1, 1, 1, 1)
