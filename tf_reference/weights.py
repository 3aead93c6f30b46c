"""PyTorch MobileNetV2-TSM weights into the Keras reference model, by layer name.

Each Keras layer with weights is named after its torch state-dict prefix, so the torch keys of a
layer follow from its name and type. The load is all or nothing: every Keras weight must receive
exactly one torch tensor of the right shape and every torch tensor must be used, or a ValueError
names the layer (or key) and nothing is assigned.
"""

from collections.abc import Mapping
from pathlib import Path

import keras
import numpy as np
import torch

from tf_reference.model import IMAGENET_MEAN, IMAGENET_STD, STEM, TemporalShift, build_model
from tf_reference.streaming import build_streaming_model
from torch_tsm.model import MobileNetV2TSM, load_model

# torch layouts -> Keras layouts
_CONV = (2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
_DEPTHWISE = (2, 3, 0, 1)  # (channels, 1, kh, kw) -> (kh, kw, channels, 1)


def from_torch_checkpoint(path: str | Path, *, image_size: int | None = None, batch_size: int | None = None) -> keras.Model:
    """A Keras model with the architecture and weights of a torch_tsm training checkpoint."""
    return from_torch_model(load_model(path), image_size=image_size, batch_size=batch_size)


def from_torch_model(torch_model: MobileNetV2TSM, *, image_size: int | None = None, batch_size: int | None = None) -> keras.Model:
    """A Keras model with the architecture and weights of a torch_tsm MobileNetV2TSM."""
    keras_model = build_model(
        torch_model.num_classes,
        torch_model.num_segments,
        torch_model.width_mult,
        torch_model.shift,
        image_size=image_size,
        batch_size=batch_size,
    )
    load_torch_state_dict(keras_model, torch_model.state_dict())
    return keras_model


def streaming_from_torch_model(torch_model: MobileNetV2TSM) -> keras.Model:
    """The per-frame streaming Keras model (tf_reference.streaming) with the weights of a causal torch model."""
    if torch_model.shift != "causal":
        raise ValueError(f"a streaming model needs a model trained with shift='causal' (this one has {torch_model.shift!r})")
    if torch_model.image_size is None:
        raise ValueError("the model does not know its input size (model.image_size); load it with load_model")
    keras_model = build_streaming_model(torch_model.num_classes, torch_model.width_mult, torch_model.image_size)
    load_torch_state_dict(keras_model, torch_model.state_dict())
    return keras_model


def load_torch_checkpoint(keras_model: keras.Model, path: str | Path) -> None:
    """Load a torch_tsm training checkpoint into a model from tf_reference.build_model."""
    torch_model = load_model(path)
    num_segments = keras_model.input_shape[1]
    if num_segments != torch_model.num_segments:
        raise ValueError(f"{path} has {torch_model.num_segments} frames per clip; the Keras model takes {num_segments}")
    for layer in keras_model.layers:
        if isinstance(layer, TemporalShift) and layer.mode != torch_model.shift:
            raise ValueError(f"layer {layer.name}: shift {layer.mode!r}, but {path} was trained with {torch_model.shift!r}")
    load_torch_state_dict(keras_model, torch_model.state_dict())


def load_torch_state_dict(keras_model: keras.Model, state_dict: Mapping[str, torch.Tensor | np.ndarray]) -> None:
    """Assign a torch MobileNetV2(-TSM) state dict to a model from tf_reference.build_model."""
    # BatchNorm's update counter is training bookkeeping, not a weight: Keras has no counterpart.
    tensors = {key: _to_numpy(value) for key, value in state_dict.items() if not key.endswith(".num_batches_tracked")}
    assignments = []
    for layer in keras_model.layers:
        if not layer.weights:
            continue
        sources = _torch_sources(layer)
        if {id(variable) for variable, _, _ in sources} != {id(weight) for weight in layer.weights}:
            raise ValueError(f"layer {layer.name}: its weights {[w.path for w in layer.weights]} do not match the torch mapping")
        for variable, key, layout in sources:
            if key not in tensors:
                raise ValueError(f"layer {layer.name}: the torch state dict has no {key!r}")
            value = _fold_normalization(key, tensors[key], tensors)
            value = value.transpose(layout) if layout else value
            if value.shape != tuple(variable.shape):
                raise ValueError(
                    f"layer {layer.name}: torch {key!r} of shape {tensors[key].shape} gives {value.shape}, "
                    f"the Keras weight {variable.path!r} is {tuple(variable.shape)} (width, classes or architecture differ)"
                )
            assignments.append((variable, key, value))
    used = [key for _, key, _ in assignments]
    unused = sorted(set(tensors) - set(used))
    if unused:
        raise ValueError(f"torch tensors with no Keras layer: {unused}")
    for variable, _, value in assignments:
        variable.assign(value.astype(variable.dtype))


def _fold_normalization(key: str, value: np.ndarray, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
    """The torch tensor `key` as the Keras stem needs it, which takes raw pixels (tf_reference.model):
    conv(W, (x - mean) / std) = conv(W / std, x) - conv(W / std, mean), and that constant per output
    channel is added to the running mean of the BatchNorm that follows. Other tensors pass unchanged."""
    std = np.asarray(IMAGENET_STD, np.float64)  # folded in float64, rounded once when assigned
    if key == f"{STEM}.0.weight":  # (out, in, kh, kw)
        return value / std[None, :, None, None]
    if key == f"{STEM}.1.running_mean":
        kernel = tensors[f"{STEM}.0.weight"].astype(np.float64)
        return value + np.einsum("oikl,i->o", kernel, np.asarray(IMAGENET_MEAN, np.float64) / std)
    return value


def _torch_sources(layer: keras.layers.Layer) -> list[tuple[keras.Variable, str, tuple[int, ...] | None]]:
    # -> [(Keras variable, torch key, axes permutation from the torch layout or None)]
    prefix = layer.name
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [(layer.kernel, f"{prefix}.weight", _DEPTHWISE)]
    if isinstance(layer, keras.layers.Conv2D):
        return [(layer.kernel, f"{prefix}.weight", _CONV)]
    if isinstance(layer, keras.layers.BatchNormalization):
        return [
            (layer.gamma, f"{prefix}.weight", None),
            (layer.beta, f"{prefix}.bias", None),
            (layer.moving_mean, f"{prefix}.running_mean", None),
            (layer.moving_variance, f"{prefix}.running_var", None),
        ]
    if isinstance(layer, keras.layers.Dense):
        return [(layer.kernel, f"{prefix}.weight", (1, 0)), (layer.bias, f"{prefix}.bias", None)]
    raise ValueError(f"layer {layer.name}: no torch mapping for a {type(layer).__name__} with weights")


def _to_numpy(value: torch.Tensor | np.ndarray) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
