"""A native Keras MobileNetV2-TSM that loads PyTorch checkpoints: the TensorFlow reference model."""

# Order matters: torchvision (through triton's C extension) segfaults when it is imported after
# tensorflow (measured here with torch 2.14.1 / torchvision 0.29.1 / TF 2.21), so the torch side loads first.
import torch_tsm.model  # noqa: F401  isort: skip

from tf_reference.model import build_model
from tf_reference.streaming import build_streaming_model
from tf_reference.weights import (
    from_torch_checkpoint,
    from_torch_model,
    load_torch_checkpoint,
    load_torch_state_dict,
    streaming_from_torch_model,
)

__all__ = [
    "build_model",
    "build_streaming_model",
    "from_torch_checkpoint",
    "from_torch_model",
    "load_torch_checkpoint",
    "load_torch_state_dict",
    "streaming_from_torch_model",
]
