"""MobileNetV2-TSM: torchvision's MobileNetV2 with a temporal shift in its residual blocks.

(N, T, 3, H, W) RGB 0..255
  -> normalize (ImageNet mean/std)      inside the model: every runtime takes raw pixels
  -> MobileNetV2 features on N*T frames, with the shift at the start of the residual branch
     of each inverted-residual block that has a skip connection (10 blocks at width 1.0)
  -> global average pool -> dropout -> linear   per-frame logits (N*T, K)
  -> mean over the T frames                     clip logits (N, K)
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import MobileNet_V2_Weights, mobilenet_v2
from torchvision.models.mobilenetv2 import InvertedResidual

from torch_tsm.errors import UserError, reading
from torch_tsm.shift import SHIFT_MODES, temporal_shift, temporal_shift_conv

# (frames (N*T, C, H, W), num_segments, mode=...) -> shifted frames: temporal_shift or temporal_shift_conv
ShiftFn = Callable[..., Tensor]

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # in 0..255 pixel units
IMAGENET_STD = (58.395, 57.12, 57.375)


class ShiftedInvertedResidual(nn.Module):
    """An inverted-residual block whose residual branch sees temporally shifted input.

    It keeps torchvision's `conv` submodule, so state-dict keys match torchvision's MobileNetV2.
    """

    def __init__(self, block: InvertedResidual, num_segments: int, shift: str) -> None:
        super().__init__()
        if not block.use_res_connect:
            raise ValueError("the shift goes only into blocks with a residual connection")
        self.conv = block.conv
        self.num_segments = num_segments
        self.shift = shift
        self.shift_fn: ShiftFn = temporal_shift  # export_form swaps in the export form, the same function

    def forward(self, x: Tensor) -> Tensor:
        # (N*T, C, H, W) -> (N*T, C, H, W)
        return x + self.conv(self.shift_fn(x, self.num_segments, mode=self.shift))


class MobileNetV2TSM(nn.Module):
    def __init__(self, num_classes: int, num_segments: int = 8, width_mult: float = 1.0, shift: str = "bidirectional") -> None:
        super().__init__()
        if shift not in SHIFT_MODES:
            raise ValueError(f"unknown shift mode {shift!r}; expected one of {SHIFT_MODES}")
        backbone = mobilenet_v2(num_classes=num_classes, width_mult=width_mult)
        for index, block in enumerate(backbone.features):
            if isinstance(block, InvertedResidual) and block.use_res_connect:
                backbone.features[index] = ShiftedInvertedResidual(block, num_segments, shift)
        self.features = backbone.features
        self.classifier = backbone.classifier
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.num_classes = num_classes
        self.num_segments = num_segments
        self.width_mult = width_mult
        self.shift = shift
        # Filled by load_model / training so that a model carries what it needs to be used.
        self.labels: list[str] = [f"class_{i}" for i in range(num_classes)]
        self.image_size: int | None = None

    def forward_frames(self, frames: Tensor) -> Tensor:
        # (N*T, 3, H, W) pixels 0..255 -> (N*T, K) per-frame logits
        x = self.features((frames - self.mean) / self.std)
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)

    def forward(self, clips: Tensor) -> Tensor:
        # (N, T, 3, H, W) pixels 0..255 -> (N, K) clip logits
        n, t = clips.shape[:2]
        if t != self.num_segments:
            raise ValueError(f"model expects {self.num_segments} frames per clip, got {t}")
        frame_logits = self.forward_frames(clips.flatten(0, 1))
        return frame_logits.view(n, t, -1).mean(dim=1)

    def frame_logits(self, clips: Tensor) -> Tensor:
        # (N, L, 3, H, W) pixels 0..255 -> (N, L, K) per-frame logits of clips of any length L, the shift
        # crossing every frame boundary within a clip. With the causal shift, this is what the streaming
        # model computes frame by frame over the same L frames (torch_tsm.streaming).
        n, length = clips.shape[:2]
        blocks = self.shifted_blocks()
        for block in blocks:
            block.num_segments = length
        try:
            return self.forward_frames(clips.flatten(0, 1)).view(n, length, -1)
        finally:
            for block in blocks:
                block.num_segments = self.num_segments

    def shifted_blocks(self) -> list[ShiftedInvertedResidual]:
        return [m for m in self.features if isinstance(m, ShiftedInvertedResidual)]


@contextmanager
def export_form(model: MobileNetV2TSM, shift_fn: ShiftFn = temporal_shift_conv) -> Iterator[MobileNetV2TSM]:
    """Within the block, `model`'s shift is `shift_fn`, by default torch_tsm.shift.temporal_shift_conv: the same
    function as one depthwise convolution along time, the form an exported graph takes (one convolution per
    shifted block in TFLite instead of 8 slices, pads and concatenations). Training keeps the slice form."""
    blocks = model.shifted_blocks()
    for block in blocks:
        block.shift_fn = shift_fn
    try:
        yield model
    finally:
        for block in blocks:
            block.shift_fn = temporal_shift


class FoldedStem(nn.Module):
    """`model.features[0]` on raw pixels, the ImageNet normalization folded in (as tf_reference's stem).

    The normalization `(x - mean) / std` becomes, after onnx2tf, a SUB and a MUL over every pixel with 3
    values broadcast over the channels-last axis: slow in XNNPACK's uint8 kernels (tf_reference.model gives
    the measurement; bench/graph_bisect.py compares the whole graphs). Used where a graph is exported
    (conversion/export_onnx.py); training keeps features[0], whose state dict is torchvision's.

    conv(W, (x - mean) / std) = conv(W / std, x) - conv(W / std, mean): the kernel is divided by std per
    input channel, and the constant goes into the BatchNorm's running mean, which onnxsim folds into the
    convolution. The zero padding of normalized pixels is a border of the mean in raw
    pixels: two concatenations of constants, no arithmetic on the pixels at all.
    """

    def __init__(self, model: MobileNetV2TSM) -> None:
        super().__init__()
        conv, batch_norm, activation = model.features[0]
        # Folded in float64 and rounded once, as tf_reference.weights folds: the two give the same float32 weights.
        kernel, std = conv.weight.detach().double(), model.std.double().view(1, -1, 1, 1)
        self.conv = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, padding=0, bias=False)
        self.conv.weight.data = (kernel / std).float()
        self.batch_norm = nn.BatchNorm2d(batch_norm.num_features, batch_norm.eps).eval()
        self.batch_norm.load_state_dict(batch_norm.state_dict())
        offset = (kernel * (model.mean.double().view(1, -1, 1, 1) / std)).sum(dim=(1, 2, 3))
        self.batch_norm.running_mean.copy_((batch_norm.running_mean.double() + offset).float())
        self.activation = activation
        self.register_buffer("mean", model.mean.view(1, -1, 1, 1).detach().clone(), persistent=False)
        self.padding = conv.padding

    def forward(self, frames: Tensor) -> Tensor:
        # (N, 3, H, W) pixels 0..255 -> (N, C, H', W'), as model.features[0]((frames - mean) / std)
        n, c, h, w = frames.shape
        pad_h, pad_w = self.padding
        rows = self.mean.expand(n, c, pad_h, w)
        x = torch.cat([rows, frames, rows], dim=2)
        columns = self.mean.expand(n, c, h + 2 * pad_h, pad_w)
        x = torch.cat([columns, x, columns], dim=3)
        return self.activation(self.batch_norm(self.conv(x)))


def build_model(
    num_classes: int,
    num_segments: int = 8,
    width_mult: float = 1.0,
    shift: str = "bidirectional",
    pretrained: str | Path | None = None,
) -> MobileNetV2TSM:
    """A MobileNetV2-TSM, optionally starting from ImageNet ("imagenet") or a local state dict (a path)."""
    model = MobileNetV2TSM(num_classes, num_segments, width_mult, shift)
    if pretrained is not None:
        state = _imagenet_state_dict(width_mult) if pretrained == "imagenet" else _read_state_dict(Path(pretrained))
        # The classifier is task specific: keep ours unless the shapes match (e.g. a fine-tune of our own model).
        own = model.state_dict()
        backbone = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
        missing = [k for k in own if k.startswith("features.") and k not in backbone]
        if missing:
            raise UserError(f"{pretrained}: these pretrained weights do not fit this model (e.g. {missing[0]}); check --width-mult")
        model.load_state_dict(backbone, strict=False)
    return model


def _imagenet_state_dict(width_mult: float) -> dict[str, Tensor]:
    if width_mult != 1.0:
        raise UserError("--pretrained imagenet: torchvision's ImageNet weights exist only for width_mult=1.0")
    try:
        return MobileNet_V2_Weights.IMAGENET1K_V2.get_state_dict(progress=False)
    except Exception as error:  # no network, proxy, corrupt cache: say what to do instead
        raise UserError(
            f"--pretrained imagenet: could not fetch torchvision's ImageNet weights for MobileNetV2 ({error}). "
            "Download them once where a network is available, or pass a local state-dict file to --pretrained."
        ) from error


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    with reading(path, "weights file"):
        payload = safe_torch_load(path)
    return _network_state(payload.get("state_dict", payload) if isinstance(payload, dict) else payload)


def _network_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    # A training checkpoint of ours holds the network under the LightningModule's attribute name, `model.`.
    return {key.removeprefix("model."): value for key, value in state.items()}


def safe_torch_load(path: Path) -> dict:
    """torch.load that never unpickles arbitrary objects; a clear error for missing or unsafe files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"refusing to load {path}: it is not a plain weights file "
            f"(it may carry pickled Python objects, which are never executed here): {error}"
        ) from error


def load_model(path: str | Path) -> MobileNetV2TSM:
    """A trained checkpoint (written by torch_tsm.train) back as an eval-mode model."""
    checkpoint = safe_torch_load(Path(path))
    try:
        config = checkpoint["hyper_parameters"]
        state = _network_state(checkpoint["state_dict"])
        model = MobileNetV2TSM(len(config["labels"]), config["num_segments"], config["width_mult"], config["shift"])
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a torch_tsm training checkpoint (missing {error})") from error
    model.load_state_dict(state)
    model.labels = list(config["labels"])
    model.image_size = config["image_size"]
    return model.eval()
