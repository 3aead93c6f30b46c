"""One interface over every runtime a streaming model runs in: one frame at a time, with its buffers.

One call of a streaming model (torch_tsm.streaming, and what conversion.streaming makes of it) processes
one frame:

    inputs   frame (1, H, W, 3) raw RGB, buffer_0 .. buffer_{B-1}
    outputs  logits (1, K), new_buffer_0 .. new_buffer_{B-1}

`new_buffer_i` goes back in as `buffer_i` with the next frame; zeros start a stream. Buffers are NHWC in
TensorFlow and TFLite, NCHW in PyTorch and ONNX. Called on clips, every runner plays each clip from zero
buffers and averages its per-frame logits, which is what the clip model computes: so parity measures a
streaming model with the same clips as a clip model (runtime.clip).
"""

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from runtime.clip import dequantize, onnx_session, quantize
from torch_tsm.streaming import StreamingTSM


def input_names(num_buffers: int) -> list[str]:
    return ["frame", *(f"buffer_{i}" for i in range(num_buffers))]


def output_names(num_buffers: int) -> list[str]:
    return ["logits", *(f"new_buffer_{i}" for i in range(num_buffers))]


class StreamRunner:
    """A streaming model in some runtime. `run_stream` gives per-frame logits; called on clips, it plays
    each clip from zero buffers and averages its per-frame logits, which is what the clip model computes."""

    streaming = True
    image_size: int
    num_classes: int
    num_segments: int  # T of the clip model it was made from: the file cannot tell (runtime.models.open_model)
    labels: list[str] | None = None

    def zero_buffers(self) -> list[np.ndarray]:
        raise NotImplementedError

    def step(self, frame: np.ndarray, buffers: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        # (H, W, 3) uint8, buffers -> (K,) float logits, new buffers
        raise NotImplementedError

    def run_stream(self, frames: Iterable[np.ndarray]) -> np.ndarray:
        # L x (H, W, 3) uint8 -> (L, K) per-frame logits, from zero buffers
        buffers, logits = self.zero_buffers(), []
        for frame in frames:
            if frame.shape != (self.image_size, self.image_size, 3):
                raise ValueError(f"{type(self).__name__} takes frames of (H, W, 3) = {(self.image_size,) * 2 + (3,)}; got {frame.shape}")
            frame_logits, buffers = self.step(frame, buffers)
            logits.append(frame_logits)
        return np.stack(logits)

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        # (N, T, H, W, 3) uint8 -> (N, K)
        return np.stack([self.run_stream(clip).mean(axis=0) for clip in clips])


class TorchStreamRunner(StreamRunner):
    def __init__(self, model: StreamingTSM, image_size: int) -> None:
        self.model = model.eval()
        self.image_size = image_size
        self.num_segments, self.num_classes, self.labels = model.model.num_segments, model.model.num_classes, model.model.labels

    def zero_buffers(self) -> list[np.ndarray]:
        return [buffer.numpy() for buffer in self.model.zero_buffers(self.image_size)]

    @torch.no_grad()
    def step(self, frame: np.ndarray, buffers: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        pixels = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
        logits, *new = self.model(pixels, *(torch.from_numpy(b) for b in buffers))
        return logits[0].numpy(), [b.numpy() for b in new]

    @torch.no_grad()
    def __call__(self, clips: np.ndarray, chunk: int = 32) -> np.ndarray:
        # (N, T, H, W, 3) uint8 -> (N, K): as StreamRunner, with `chunk` clips played side by side as a
        # batch of streams (PyTorch's streaming model takes any batch; a frame at a time is 10x slower)
        results = []
        for start in range(0, len(clips), chunk):
            pixels = torch.from_numpy(np.ascontiguousarray(clips[start : start + chunk])).permute(0, 1, 4, 2, 3).float()  # (n, T, 3, H, W)
            buffers = [zeros.expand(len(pixels), *zeros.shape[1:]) for zeros in self.model.zero_buffers(self.image_size)]
            results.append(self.model.play(pixels, buffers)[0].mean(1))
        return torch.cat(results).numpy()


class OnnxStreamRunner(StreamRunner):
    def __init__(self, path: Path, threads: int = 2) -> None:
        self.session = onnx_session(path, threads)
        inputs = self.session.get_inputs()
        self.names = [i.name for i in inputs]
        self.buffer_shapes = [tuple(i.shape) for i in inputs[1:]]
        self.image_size = inputs[0].shape[2]  # frame (1, 3, H, W)
        self.num_classes = self.session.get_outputs()[0].shape[-1]  # logits (1, K)

    def zero_buffers(self) -> list[np.ndarray]:
        return [np.zeros(shape, np.float32) for shape in self.buffer_shapes]

    def step(self, frame: np.ndarray, buffers: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        pixels = np.ascontiguousarray(frame.transpose(2, 0, 1)[None], dtype=np.float32)
        logits, *new = self.session.run(None, dict(zip(self.names, [pixels, *buffers])))
        return logits[0], new


class TFStreamRunner(StreamRunner):
    """A TensorFlow step function with the interface of the TFLite models (NHWC buffers): the onnx2tf
    SavedModel or the Keras twin, as conversion.streaming's saved_model_step and keras_step wrap them."""

    def __init__(self, function) -> None:
        self.function = function
        specs = self.function.structured_input_signature[0]
        self.buffer_shapes = [tuple(spec.shape) for spec in specs[1:]]
        self.image_size = specs[0].shape[1]

    def zero_buffers(self) -> list[np.ndarray]:
        return [np.zeros(shape, np.float32) for shape in self.buffer_shapes]

    def step(self, frame: np.ndarray, buffers: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        import tensorflow as tf

        outputs = self.function(tf.constant(frame[None], tf.float32), *(tf.constant(b) for b in buffers))
        return outputs["logits"].numpy()[0], [outputs[f"new_buffer_{i}"].numpy() for i in range(len(buffers))]


class StreamingTFLiteRunner(StreamRunner):
    """A streaming TFLite model, float32 or uint8, its inputs and outputs found by name in its signature.

    Buffers are kept in the model's own type (int8 in the uint8 model; uint8 in one converted before):
    outputs go back in as they are (the model gives each buffer the same quantization on both sides),
    so a long stream accumulates no rounding.
    """

    def __init__(self, path: Path, threads: int = 2) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        # Tensors are allocated once and set and read by index; the signature runner only names them: called,
        # it resizes and re-allocates every input on each frame (about 1% of a 224 px frame's step).
        self.interpreter.allocate_tensors()
        signature = self.interpreter.get_signature_runner()
        self.inputs, self.outputs = signature.get_input_details(), signature.get_output_details()
        if "frame" not in self.inputs or "logits" not in self.outputs:
            raise ValueError(f"{path} is not a streaming model (its signature has no 'frame' input and 'logits' output)")
        self.num_buffers = len(self.inputs) - 1
        self.buffer_inputs = [self.inputs[f"buffer_{i}"]["index"] for i in range(self.num_buffers)]
        self.buffer_outputs = [self.outputs[f"new_buffer_{i}"]["index"] for i in range(self.num_buffers)]
        self.image_size = int(self.inputs["frame"]["shape"][1])
        self.num_classes = int(self.outputs["logits"]["shape"][-1])

    def zero_buffers(self) -> list[np.ndarray]:
        # The quantized zero of each buffer: its zero point (zero is exactly representable).
        return [
            quantize(np.zeros(self.inputs[f"buffer_{i}"]["shape"], np.float32), self.inputs[f"buffer_{i}"]) for i in range(self.num_buffers)
        ]

    def step(self, frame: np.ndarray, buffers: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        self.interpreter.set_tensor(self.inputs["frame"]["index"], quantize(frame[None], self.inputs["frame"]))
        for index, buffer in zip(self.buffer_inputs, buffers, strict=True):
            self.interpreter.set_tensor(index, buffer)
        self.interpreter.invoke()
        logits = dequantize(self.interpreter.get_tensor(self.outputs["logits"]["index"]), self.outputs["logits"])[0]
        return logits, [self.interpreter.get_tensor(index) for index in self.buffer_outputs]


def is_streaming_file(path: Path) -> bool:
    """Whether a model file is a streaming model (.onnx or .tflite with a `frame` input beside buffers)."""
    suffix = path.suffix.lower()
    return (suffix == ".tflite" and is_streaming_tflite(path)) or (suffix == ".onnx" and is_streaming_onnx(path))


def is_streaming_onnx(path: Path) -> bool:
    """Whether an .onnx file is a streaming model (a `frame` input beside buffers) rather than a clip model."""
    import onnx

    names = [tensor.name for tensor in onnx.load(str(path), load_external_data=False).graph.input]
    return "frame" in names and len(names) > 1


def is_streaming_tflite(path: Path) -> bool:
    """Whether a .tflite file is a streaming model (a `frame` input beside buffers) rather than a clip model."""
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_path=str(path)).get_signature_list()
    return any("frame" in signature["inputs"] and len(signature["inputs"]) > 1 for signature in signatures.values())
