"""Online TSM: a model trained with the causal shift, run one frame at a time.

With `shift="causal"`, each shifted block replaces the first C//8 channels of its input with those of
the previous frame (zeros at the first frame). A live stream has no clip, so each shifted block keeps
a buffer holding the previous frame's input and takes those channels from it for the current frame
(torch_tsm.shift.causal_shift_step: the whole input is kept, so that the block hands on its input as it
is and the shift is one convolution, no channel slices):

    frame t (1, 3, H, W), buffers of frame t-1  ->  logits of frame t (1, K), buffers of frame t

Every frame goes through the backbone exactly once. Started from zero buffers, the per-frame logits of
T frames are exactly the clip model's per-frame logits, so their mean is the clip model's output; on a
longer stream they are the per-frame logits of the clip model run on the whole stream as one clip.

The streaming model reuses the trained model's modules (same weights, no copy of the architecture); its first
convolution takes raw pixels, the normalization folded in (FoldedStem), as in the exported clip model.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torch_tsm.model import FoldedStem, MobileNetV2TSM, ShiftedInvertedResidual
from torch_tsm.shift import causal_shift_step


class StreamingTSM(nn.Module):
    """`forward(frame, *buffers) -> (logits, *new_buffers)`; one buffer per shifted block, in order."""

    def __init__(self, model: MobileNetV2TSM) -> None:
        super().__init__()
        if model.shift != "causal":
            raise ValueError(
                f"a streaming model needs a model trained with shift='causal' (this one has {model.shift!r}): "
                "a bidirectional shift looks at the next frame, which a live stream does not have yet"
            )
        self.model = model.eval()
        self.stem = FoldedStem(model)  # features[0] with the normalization folded in, as the exported clip model
        self.num_buffers = len(model.shifted_blocks())

    def forward(self, frame: Tensor, *buffers: Tensor) -> tuple[Tensor, ...]:
        # (N, 3, H, W) pixels 0..255, num_buffers x (N, C_i, H_i, W_i) -> (N, K), num_buffers x (N, C_i, H_i, W_i); N = 1 live
        if len(buffers) != self.num_buffers:
            raise ValueError(f"the streaming model takes {self.num_buffers} buffers, got {len(buffers)}")
        x = self.stem(frame)
        new_buffers = []
        for module in self.model.features[1:]:
            if isinstance(module, ShiftedInvertedResidual):
                x, carried = _shifted_block_step(module, x, buffers[len(new_buffers)])
                new_buffers.append(carried)
            else:
                x = module(x)
        # The model's head, as in MobileNetV2TSM.forward_frames.
        pooled = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return (self.model.classifier(pooled), *new_buffers)

    def play(self, clips: Tensor, buffers: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        # (N, T, 3, H, W) pixels 0..255, buffers of N streams -> (N, T, K) frame logits, the buffers after frame T-1
        frame_logits = []
        for t in range(clips.shape[1]):
            logits, *buffers = self(clips[:, t], *buffers)
            frame_logits.append(logits)
        return torch.stack(frame_logits, dim=1), buffers

    @torch.no_grad()
    def zero_buffers(self, image_size: int) -> list[Tensor]:
        # -> num_buffers x (1, C_i, H_i, W_i) zeros: the state at the start of a stream
        x = torch.zeros(1, 3, image_size, image_size)
        shapes = []
        for module in self.model.features:
            if isinstance(module, ShiftedInvertedResidual):
                shapes.append(tuple(x.shape))
                x = x + module.conv(x)  # shapes only: the shift does not change them
            else:
                x = module(x)
        return [torch.zeros(shape) for shape in shapes]


def _shifted_block_step(block: ShiftedInvertedResidual, x: Tensor, previous: Tensor) -> tuple[Tensor, Tensor]:
    # (N, C, H, W) this frame's block input, (N, C, H, W) the previous frame's -> block output (N, C, H, W), new buffer: x
    return x + block.conv(causal_shift_step(x, previous)), x


class Stream:
    """Keeps the buffers between calls: `stream(frame)` gives that frame's logits."""

    def __init__(self, model: StreamingTSM, image_size: int) -> None:
        self.model = model
        self.image_size = image_size
        self.reset()

    def reset(self) -> None:
        self.buffers = self.model.zero_buffers(self.image_size)

    @torch.no_grad()
    def __call__(self, frame: Tensor) -> Tensor:
        # (1, 3, H, W) pixels 0..255 -> (1, K) logits of this frame
        logits, *self.buffers = self.model(frame, *self.buffers)
        return logits
