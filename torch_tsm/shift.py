"""The Temporal Shift Module (Lin, Gan, Han, ICCV 2019), zero-filled as in the paper.

Frames of a batch of clips are stacked on the first axis, `(N*T, C, H, W)`, as the 2-D backbone
sees them. Shifting a fold of channels one frame along time mixes information between neighbouring
frames at zero FLOPs and zero parameters.

Written with `F.pad` along the first axis, slices and a channel concatenation only: this is the one
formulation measured to survive ONNX export and onnx2tf unchanged (no 5-D reshapes, no transposes,
no gathers). Training and export use this same function.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

SHIFT_MODES = ("bidirectional", "causal", "none")


def temporal_shift(x: Tensor, num_segments: int, fold_div: int = 8, mode: str = "bidirectional") -> Tensor:
    # (N*T, C, H, W) -> (N*T, C, H, W)
    if mode not in SHIFT_MODES:
        raise ValueError(f"unknown shift mode {mode!r}; expected one of {SHIFT_MODES}")
    if mode == "none":
        return x
    if x.shape[0] % num_segments:
        raise ValueError(f"first axis {x.shape[0]} is not a whole number of {num_segments}-frame clips")
    fold = x.shape[1] // fold_div
    if mode == "causal":
        return torch.cat([_from_previous_frame(x[:, :fold], num_segments), x[:, fold:]], dim=1)
    from_next = _from_next_frame(x[:, :fold], num_segments)
    from_previous = _from_previous_frame(x[:, fold : 2 * fold], num_segments)
    return torch.cat([from_next, from_previous, x[:, 2 * fold :]], dim=1)


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
