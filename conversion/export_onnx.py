"""PyTorch -> ONNX: one clip of T frames, fixed shapes, checked, simplified, verified with onnxruntime.

The ONNX graph takes the clip as a batch of frames, `frames (T, 3, H, W)` float 0..255, and returns
`logits (1, K)`. A 4-D frame batch is what onnx2tf lays out reliably (NCHW -> NHWC); the clip axis
(1, T, H, W, 3) of the TFLite model is added afterwards in TensorFlow, as a plain reshape.
"""

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import onnx
import onnxsim
import torch
from torch import Tensor, nn

from conversion.errors import ConversionError
from torch_tsm.cli import ignoring_warning
from torch_tsm.model import FoldedStem, MobileNetV2TSM, export_form
from torch_tsm.shift import temporal_shift, temporal_shift_conv

OPSET = 17


class ClipAsFrames(nn.Module):
    """The clip model seen from one clip's frames: what is exported, with the normalization folded into the
    first convolution (FoldedStem)."""

    def __init__(self, model: MobileNetV2TSM) -> None:
        super().__init__()
        self.model = model
        self.stem = FoldedStem(model)

    def forward(self, frames: Tensor) -> Tensor:
        # (T, 3, H, W) pixels 0..255 -> (1, K) clip logits
        x = self.model.features[1:](self.stem(frames))
        frame_logits = self.model.classifier(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))
        return frame_logits.mean(dim=0, keepdim=True)


def onnx2tf_shift(x: Tensor, num_segments: int, fold_div: int = 8, mode: str = "bidirectional") -> Tensor:
    """temporal_shift_conv, except where onnx2tf would lay its view out wrongly: the slice form there.

    The convolution's view goes (T, C, H, W) -> (T, H, W, C) -> (1, T, H*W, C) -> (1, C, T, H*W). onnx2tf
    guesses the layout of a tensor whose last three dimensions are all equal; on C == H == W (the demo
    model's 16 x 16 x 16 block at 64 px, width 0.5) it guessed wrong and the logits were off by 0.1 at a scale
    of 0.2, with or without its strict mode; likewise T == H*W == C. The slice form converts there.
    """
    # (N*T, C, H, W) -> (N*T, C, H, W)
    return (temporal_shift if onnx2tf_ambiguous(*x.shape[1:], num_segments) else temporal_shift_conv)(x, num_segments, fold_div, mode)


def onnx2tf_ambiguous(channels: int, height: int, width: int, num_segments: int) -> bool:
    """Whether the conv form's view of a (C, H, W) block has dimensions that onnx2tf cannot tell apart."""
    return channels == height == width or num_segments == height * width == channels


def export_onnx(model: MobileNetV2TSM, path: Path, image_size: int) -> None:
    """Writes a checked, simplified ONNX model of one clip of `image_size` frames."""
    example = torch.zeros(model.num_segments, 3, image_size, image_size)
    # The wrapper must be in eval mode too: the exporter restores the wrapper's mode afterwards, and a
    # fresh module is in training mode, which would leave `model` training (BatchNorm on batch stats).
    # The shift as one depthwise convolution along time (export_form): the same function as in training.
    with unfolded_slices_unreported(), shift_constants_unreported(), export_form(model, onnx2tf_shift):
        torch.onnx.export(
            ClipAsFrames(model).eval(),
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["frames"],
            output_names=["logits"],
        )
    check_and_simplify(path)


def unfolded_slices_unreported() -> AbstractContextManager[None]:
    """The exporter warns, once per pass, that it does not constant-fold slices with steps other than 1;
    nobody can act on that: onnxsim folds what can be folded right after (check_and_simplify)."""
    return ignoring_warning("Constant folding - Only steps=1 can be constant folded", UserWarning)


@contextmanager
def shift_constants_unreported() -> Iterator[None]:
    """The tracer warns that the shift's checks of a block's shape (a whole number of clips, onnx2tf_shift's
    choice of form) and its taps (torch_tsm.shift.shift_taps) become constants: so they should, the exported
    graph has fixed shapes and fixed taps by design."""
    with (
        ignoring_warning("Converting a tensor to a Python boolean", torch.jit.TracerWarning),
        ignoring_warning("torch.tensor results are registered as constants", torch.jit.TracerWarning),
    ):
        yield


def check_and_simplify(path: Path) -> None:
    """onnx.checker before and after onnxsim, in place.

    Simplified here rather than left to onnx2tf: it calls the `onnxsim` command only if it is on PATH,
    and silently goes on with the raw graph otherwise, whose layout it then gets wrong.
    """
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    simplified, ok = onnxsim.simplify(graph)
    if not ok:
        raise ConversionError(f"onnxsim could not verify the simplified graph of {path}")
    onnx.checker.check_model(simplified, full_check=True)
    onnx.save(simplified, str(path))
