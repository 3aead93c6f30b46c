"""PyTorch -> ONNX: one clip of T frames, fixed shapes, checked, simplified, verified with onnxruntime.

The ONNX graph takes the clip as a batch of frames, `frames (T, 3, H, W)` float 0..255, and returns
`logits (1, K)`. A 4-D frame batch is what onnx2tf lays out reliably (NCHW -> NHWC); the clip axis
(1, T, H, W, 3) of the TFLite model is added afterwards in TensorFlow, as a plain reshape.
"""

from contextlib import AbstractContextManager
from pathlib import Path

import onnx
import onnxsim
import torch
from torch import Tensor, nn

from conversion.errors import ConversionError
from torch_tsm.cli import ignoring_warning
from torch_tsm.model import FoldedStem, MobileNetV2TSM

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


def export_onnx(model: MobileNetV2TSM, path: Path, image_size: int) -> None:
    """Writes a checked, simplified ONNX model of one clip of `image_size` frames."""
    example = torch.zeros(model.num_segments, 3, image_size, image_size)
    # The wrapper must be in eval mode too: the exporter restores the wrapper's mode afterwards, and a
    # fresh module is in training mode, which would leave `model` training (BatchNorm on batch stats).
    with unfolded_slices_unreported():
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
