"""The Python API on what users build themselves: conversion.to_tflite.convert on a build_model() model
trained in a plain PyTorch loop, which knows neither its input size nor its class names."""

import numpy as np
import pytest
import torch
from ai_edge_litert.interpreter import Interpreter

from conversion.to_tflite import convert
from tests.conftest import offline, smooth_clips
from torch_tsm.model import build_model

SEGMENTS, SIZE, CLASSES = 4, 32, 3


@pytest.fixture
def own_loop_model() -> torch.nn.Module:
    """build_model() and a few steps of the user's own training loop: no Lightning, no load_model."""
    torch.manual_seed(0)
    model = build_model(num_classes=CLASSES, num_segments=SEGMENTS, width_mult=0.35)
    clips, labels = smooth_clips(6, SEGMENTS, SIZE), torch.tensor([0, 1, 2, 0, 1, 2])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(clips), labels).backward()
        optimizer.step()
    return model


def calibration_clips(count: int, seed: int = 1) -> np.ndarray:
    # -> (M, T, S, S, 3) uint8, as the loaders give them
    return smooth_clips(count, SEGMENTS, SIZE, seed=seed).round().clamp(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()


def test_convert_takes_a_model_built_and_trained_by_hand(own_loop_model, tmp_path):
    assert own_loop_model.image_size is None
    with offline():
        figures = convert(own_loop_model, tmp_path, calibration_clips(8))
    assert own_loop_model.image_size == SIZE  # from the clips
    assert (tmp_path / "labels.txt").read_text(encoding="utf-8").splitlines() == ["class_0", "class_1", "class_2"]
    assert {row["stage"] for row in figures["parity"]} == {"onnx", "savedmodel", "tflite-f32", "tflite-u8"}
    assert all(row["verdict"] == "pass" for row in figures["parity"] if not row["stage"].endswith("u8"))
    interpreter = Interpreter(str(tmp_path / "model_uint8.tflite"))
    assert tuple(interpreter.get_input_details()[0]["shape"]) == (1, SEGMENTS, SIZE, SIZE, 3)
    assert tuple(interpreter.get_output_details()[0]["shape"]) == (1, CLASSES)


def test_convert_takes_the_size_and_labels_as_arguments_and_checks_them(own_loop_model, tmp_path):
    with pytest.raises(ValueError, match="2 labels for a model of 3 classes"):
        convert(own_loop_model, tmp_path, calibration_clips(2), labels=["a", "b"])
    with pytest.raises(ValueError, match=r"calibration clips must be uint8 \(T=4, 48, 48, 3\)"):
        convert(own_loop_model, tmp_path, calibration_clips(2), image_size=48)
    assert not any(tmp_path.iterdir())  # refused before any work
