"""One interface over every runtime a clip model can run in: clips (N, T, H, W, 3) uint8 -> logits (N, K).

A training checkpoint (PyTorch), an ONNX file (onnxruntime), a SavedModel folder (TensorFlow) or a
.tflite file (LiteRT); runtime.models.open_model picks the runner by the file. Every runner takes the
same raw pixels, so parity, evaluation and prediction share one data path.
"""

from pathlib import Path

import numpy as np
import torch

from torch_tsm.model import MobileNetV2TSM


def onnx_session(path: Path, threads: int = 2):
    """The ONNX Runtime session of every ONNX runner, clip and streaming: on the CPU, `threads` threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    # Its idle threads would otherwise spin after each run and slow whatever runs next in this process.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class Runner:
    """Checks the clips fit the model (a clear error instead of a runtime's own), then runs them."""

    streaming = False  # runtime.stream's runners step frame by frame too
    num_segments: int
    image_size: int
    num_classes: int
    labels: list[str] | None = None  # None: the file names no classes (runtime.models.open_model looks beside it)

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        # (N, T, S, S, 3) uint8 -> (N, K) float logits
        expected = (self.num_segments, self.image_size, self.image_size, 3)
        if clips.ndim != 5 or clips.shape[1:] != expected:
            raise ValueError(
                f"{type(self).__name__} takes clips of (T, H, W, 3) = {expected} (square frames of the "
                f"model's training size); got {clips.shape[1:]}"
            )
        return self.run(clips)

    def run(self, clips: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class TorchRunner(Runner):
    def __init__(self, model: MobileNetV2TSM) -> None:
        self.model = model.eval()
        self.num_segments = model.num_segments
        self.image_size = model.image_size
        self.num_classes = model.num_classes
        self.labels = model.labels

    @torch.no_grad()
    def run(self, clips: np.ndarray) -> np.ndarray:
        # (N, T, H, W, 3) uint8 -> (N, K)
        pixels = torch.from_numpy(np.ascontiguousarray(clips)).permute(0, 1, 4, 2, 3).float()
        return self.model(pixels).numpy()


class OnnxRunner(Runner):
    def __init__(self, path: Path, threads: int = 2) -> None:
        self.session = onnx_session(path, threads)
        shape = self.session.get_inputs()[0].shape  # (T, 3, H, W)
        self.num_segments, self.image_size = shape[0], shape[2]
        self.num_classes = self.session.get_outputs()[0].shape[-1]  # logits (1, K)

    def run(self, clips: np.ndarray) -> np.ndarray:
        # (N, T, H, W, 3) uint8 -> (N, K), one clip at a time (the graph holds one clip)
        return np.concatenate([self.session.run(None, {"frames": clip.transpose(0, 3, 1, 2).astype(np.float32)})[0] for clip in clips])


class SavedModelRunner(Runner):
    """The onnx2tf SavedModel: frames (T, H, W, 3) float in, logits (1, K) out."""

    def __init__(self, path: Path) -> None:
        import tensorflow as tf

        self.tf = tf
        self.function = tf.saved_model.load(str(path)).signatures["serving_default"]
        shape = self.function.structured_input_signature[1]["frames"].shape
        self.num_segments, self.image_size = shape[0], shape[1]
        self.num_classes = next(iter(self.function.structured_outputs.values())).shape[-1]  # logits (1, K)

    def run(self, clips: np.ndarray) -> np.ndarray:
        # (N, T, H, W, 3) uint8 -> (N, K); the SavedModel's one output is the logits, whatever its name
        return np.concatenate(
            [next(iter(self.function(frames=self.tf.constant(clip, self.tf.float32)).values())).numpy() for clip in clips]
        )


class KerasRunner(Runner):
    """The native Keras twin (tf_reference), clip in, logits out."""

    def __init__(self, model) -> None:
        import tensorflow as tf

        self.model = model
        _, self.num_segments, self.image_size = model.input_shape[:3]
        self.num_classes = model.output_shape[-1]
        # The model's layers traced once into a graph: a clip takes ~15 ms, where an eager call takes ~300 ms.
        self.function = tf.function(
            lambda clip: model(clip, training=False), input_signature=[tf.TensorSpec((1, *model.input_shape[1:]), tf.float32)]
        )

    def run(self, clips: np.ndarray) -> np.ndarray:
        # (N, T, H, W, 3) uint8 -> (N, K), one clip at a time (the model may be built for batch 1)
        return np.concatenate([np.asarray(self.function(clip[None].astype(np.float32))) for clip in clips])


class TFLiteRunner(Runner):
    """A clip TFLite model, float32 or uint8, with (de)quantization by the model's own parameters."""

    def __init__(self, path: Path, threads: int = 2) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        inputs = self.interpreter.get_input_details()
        shape = list(inputs[0]["shape"]) if len(inputs) == 1 else None
        if shape is None or len(shape) != 5 or shape[0] != 1 or shape[2] != shape[3] or shape[4] != 3:
            # anything else would be fed wrong pixels
            found = ", ".join(f"{tensor['name']} {list(tensor['shape'])}" for tensor in inputs)
            raise ValueError(
                f"{path}: its input ({found}) does not fit: expected a clip (1, T, S, S, 3) or a streaming model (frame + buffers)"
            )
        self.input = inputs[0]
        self.output = self.interpreter.get_output_details()[0]
        self.num_segments, self.image_size = int(self.input["shape"][1]), int(self.input["shape"][2])
        self.num_classes = int(self.output["shape"][-1])

    def run(self, clips: np.ndarray) -> np.ndarray:
        return np.concatenate([self._run(clip[None]) for clip in clips])

    def _run(self, clip: np.ndarray) -> np.ndarray:
        # (1, T, H, W, 3) uint8 -> (1, K) float logits
        self.interpreter.set_tensor(self.input["index"], quantize(clip, self.input))
        self.interpreter.invoke()
        return dequantize(self.interpreter.get_tensor(self.output["index"]), self.output)


def quantize(values: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if detail["dtype"] == np.float32:
        return values.astype(np.float32)
    if (scale, zero_point) == (1.0, 0) and values.dtype == detail["dtype"]:
        return values  # raw pixels map 1:1
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(values / scale + zero_point), info.min, info.max).astype(detail["dtype"])


def dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if detail["dtype"] == np.float32:
        return values
    return (values.astype(np.float32) - zero_point) * scale
