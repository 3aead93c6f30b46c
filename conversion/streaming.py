"""The streaming (online TSM) model -> float32 and uint8 TFLite, by either route:
onnx (PyTorch -> ONNX -> onnx2tf SavedModel -> TFLite) or keras (the native Keras twin,
tf_reference.streaming, with the checkpoint's weights -> TFLite).

One call of the streaming model processes one frame:

    inputs   frame (1, H, W, 3) raw RGB, buffer_0 .. buffer_{B-1}
    outputs  logits (1, K), new_buffer_0 .. new_buffer_{B-1}

`new_buffer_i` is fed back as `buffer_i` for the next frame; zeros start a stream. Buffers are NHWC
in TensorFlow and TFLite (onnx2tf lays out every 4-D tensor that way, Keras is NHWC), NCHW in PyTorch
and ONNX.

uint8 model: the frame goes in as raw uint8 pixels (scale 1, zero point 0, as the clip model) and the
logits come out uint8; every buffer is int8, the type the graph computes in, with the SAME quantization
on its input and its output, so the bytes of an output go back in unchanged, nothing drifts over a long
stream and no op converts them at the 2 x B buffer ends (finish_uint8_interface). Calibration uses
real streams (calibration clips played frame by frame with the buffers carried over), since what a
buffer holds depends on the frames before.

Every stage is checked against the PyTorch clip model (parity.py bounds: T frames from zero buffers,
per-frame logits averaged == the clip logits) by the conversion pipeline (conversion.pipeline, of which
StreamingPlan is a plan): the output folder receives the route's models (STREAMING_FILES: two TFLite
models, and the ONNX model on the onnx route) and labels.txt only when every stage has passed.
"""

from collections.abc import Iterable
from pathlib import Path

import keras  # noqa: E402  (after torch: see conversion/__init__.py)
import numpy as np
import tensorflow as tf  # noqa: E402
import torch
from ai_edge_litert.schema_py_generated import BuiltinOperator  # noqa: E402
from tensorflow.lite.tools import flatbuffer_utils  # noqa: E402

from conversion.errors import ConversionError
from conversion.export_onnx import OPSET, check_and_simplify, shift_constants_unreported
from conversion.inspect import Inspection
from conversion.onnx_to_tf import onnx_to_saved_model  # noqa: E402
from conversion.parity import FLOAT_MAX_ABS_NORMALIZED, STREAMING_FILES, StageChecker
from conversion.pipeline import Plan, run_plan
from conversion.tflite import function_converter  # noqa: E402
from runtime.stream import OnnxStreamRunner, StreamingTFLiteRunner, TFStreamRunner, TorchStreamRunner, input_names, output_names
from tf_reference import streaming_from_torch_model
from torch_tsm.model import MobileNetV2TSM
from torch_tsm.streaming import StreamingTSM

CLIPS_PER_CALIBRATION_STREAM = 4  # calibration streams start from zeros, then carry buffers across clips


def export_streaming_onnx(streaming: StreamingTSM, path: Path, image_size: int) -> None:
    """Writes a checked, simplified ONNX model of one streaming step (NCHW frame and buffers)."""
    buffers = streaming.zero_buffers(image_size)
    names = input_names(len(buffers)), output_names(len(buffers))
    with shift_constants_unreported():
        torch.onnx.export(
            streaming.eval(),
            (torch.zeros(1, 3, image_size, image_size), *buffers),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=names[0],
            output_names=names[1],
        )
    check_and_simplify(path)


def calibration_streams(clips: np.ndarray) -> list[np.ndarray]:
    # (M, T, S, S, 3) -> streams of (CLIPS_PER_CALIBRATION_STREAM * T, S, S, 3): fresh starts and long histories
    return [
        clips[i : i + CLIPS_PER_CALIBRATION_STREAM].reshape(-1, *clips.shape[2:])
        for i in range(0, len(clips), CLIPS_PER_CALIBRATION_STREAM)
    ]


def calibration_inputs(reference: TorchStreamRunner, streams: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Every step of the calibration streams as the float TFLite model sees it, by input name: the
    frame and the NHWC buffers that the frames before it left (the TFLite input order is not ours)."""
    steps = []
    for stream in streams:
        buffers = reference.zero_buffers()
        for frame in stream:
            nhwc = [b.transpose(0, 2, 3, 1) for b in buffers]
            steps.append(dict(zip(input_names(len(buffers)), [frame[None].astype(np.float32), *nhwc])))
            _, buffers = reference.step(frame, buffers)
    return steps


def buffer_layouts(saved_model_dir: Path, onnx_runner: OnnxStreamRunner) -> list[str]:
    """The layout, "NHWC" or "NCHW", in which each buffer input of onnx2tf's SavedModel takes its values.

    onnx2tf transposes 4-D inputs to NHWC, but where it cannot tell the layouts apart (C == H == W,
    e.g. a (1, 4, 4, 4) buffer) it treats the NHWC input as NCHW once more inside the graph. So every
    buffer is checked with numbers: a random buffer, alone, must give the ONNX model's logits.
    """
    saved = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    specs = saved.structured_input_signature[1]
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (onnx_runner.image_size, onnx_runner.image_size, 3), dtype=np.uint8)
    layouts = []
    for i, shape in enumerate(onnx_runner.buffer_shapes):
        buffers = onnx_runner.zero_buffers()
        buffers[i] = rng.normal(0, 1, shape).astype(np.float32)  # (1, C, H, W)
        expected, _ = onnx_runner.step(frame, buffers)
        candidates = {"NHWC": buffers[i].transpose(0, 2, 3, 1), "NCHW": buffers[i]}
        fitting = [
            layout
            for layout, value in candidates.items()
            if tuple(specs[f"buffer_{i}"].shape) == value.shape and _matches(_saved_model_logits(saved, frame, buffers, i, value), expected)
        ]
        if not fitting:
            raise ConversionError(f"onnx2tf's buffer_{i} input gives other logits than ONNX in either layout")
        layouts.append(fitting[0])
    return layouts


def _saved_model_logits(saved, frame: np.ndarray, buffers: list[np.ndarray], index: int, value: np.ndarray) -> np.ndarray:
    # (H, W, 3) uint8, NCHW buffers (all zero but `index`, given as `value`) -> (K,) logits
    feed = {f"buffer_{i}": (value if i == index else b.transpose(0, 2, 3, 1)) for i, b in enumerate(buffers)}
    outputs = saved(frame=tf.constant(frame[None], tf.float32), **{name: tf.constant(v) for name, v in feed.items()})
    return outputs["output_0"].numpy()[0]


def _matches(logits: np.ndarray, reference: np.ndarray) -> bool:
    return float(np.abs(logits - reference).max()) / max(1.0, float(np.abs(reference).max())) <= FLOAT_MAX_ABS_NORMALIZED


def saved_model_step(saved_model_dir: Path, layouts: list[str]):
    """A concrete function (frame, buffer_i...) -> {logits, new_buffer_i...} around the SavedModel,
    with every buffer NHWC on both sides (onnx2tf's outputs are NHWC; `layouts` from buffer_layouts)."""
    loaded = tf.saved_model.load(str(saved_model_dir))
    saved = loaded.signatures["serving_default"]
    names = input_names(len(layouts))
    # Buffer input shapes from the outputs they are fed from: output_{i+1} is new_buffer_i, NHWC.
    shapes = [
        saved.structured_input_signature[1]["frame"].shape,
        *(saved.structured_outputs[f"output_{i + 1}"].shape for i in range(len(layouts))),
    ]
    signature = [tf.TensorSpec(shape, tf.float32, name=name) for name, shape in zip(names, shapes)]

    @tf.function(input_signature=signature)
    def step(frame, *buffers):
        feed = {f"buffer_{i}": tf.transpose(b, (0, 3, 1, 2)) if layouts[i] == "NCHW" else b for i, b in enumerate(buffers)}
        outputs = saved(frame=frame, **feed)
        return {"logits": outputs["output_0"], **{f"new_buffer_{i}": outputs[f"output_{i + 1}"] for i in range(len(layouts))}}

    return step.get_concrete_function(), loaded


def keras_step(model: keras.Model):
    """The same concrete function around the streaming Keras twin, whose buffers are NHWC already."""
    names = input_names(len(model.inputs) - 1)
    signature = [tf.TensorSpec(tensor.shape, tf.float32, name=name) for name, tensor in zip(names, model.inputs)]

    @tf.function(input_signature=signature)
    def step(frame, *buffers):
        logits, *new_buffers = model([frame, *buffers], training=False)
        return {"logits": logits, **{f"new_buffer_{i}": b for i, b in enumerate(new_buffers)}}

    return step.get_concrete_function()


def to_float32_streaming_tflite(function) -> bytes:
    """`function` from saved_model_step or keras_step."""
    with function_converter(function) as converter:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return converter.convert()


def to_uint8_streaming_tflite(function, steps: list[dict[str, np.ndarray]]) -> bytes:
    """`steps`: calibration_inputs of real streams, so that every buffer is calibrated on what it holds."""
    return finish_uint8_interface(quantized_streaming_tflite(function, steps))


def quantized_streaming_tflite(function, steps: list[dict[str, np.ndarray]]) -> bytes:
    """The full-integer model as TFLiteConverter gives it: uint8 at every input and output."""
    with function_converter(function) as converter:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: iter(steps)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.uint8
        return converter.convert()


def finish_uint8_interface(model_bytes: bytes) -> bytes:
    """The uint8 model's interface as the stream needs it: the frame takes raw pixels (scale 1, zero point
    0), and the buffers go in and out as the graph's own int8 tensors.

    The converter gives every input and output the one type asked of it: each uint8 buffer_i then feeds a
    QUANTIZE (uint8 -> int8) and each new_buffer_i comes out of one (int8 -> uint8), 20 small ops that
    only add or take 128 (bench.streaming_latency measures what they cost). Those ops are removed: the
    int8 tensor inside becomes the input or output itself. new_buffer_i is the block's
    input itself and buffer_i feeds a concatenation with it, and the quantizer gives a concatenation's
    inputs its output's quantization, so buffer_i and new_buffer_i are quantized alike: an output's bytes
    go back in unchanged (check_buffer_quantization checks it on the written model).

    The frame feeds only QUANTIZE ops (uint8 -> int8, with the calibrated parameters), which requantize
    from whatever the input declares: declaring scale 1, zero point 0 makes them take raw pixels. (A
    fake-quant node pinning the frame instead leaves a DEQUANTIZE/QUANTIZE float island before the
    normalization when the frame goes straight into it.)
    """
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    graph, signature = model.subgraphs[0], model.signatureDefs[0]
    quantize_codes = {
        i for i, code in enumerate(model.operatorCodes) if max(code.builtinCode, code.deprecatedBuiltinCode) == BuiltinOperator.QUANTIZE
    }

    def quantize_ops(tensor: int, side: str) -> list:
        # the ops reading `tensor` (side "inputs") or writing it ("outputs"), which must all be QUANTIZE
        ops = [op for op in graph.operators if tensor in getattr(op, side)]
        if not ops or any(op.opcodeIndex not in quantize_codes for op in ops):
            raise ConversionError(f"the uint8 tensor {graph.tensors[tensor].name.decode()} is not joined to the graph by QUANTIZE ops only")
        return ops

    removed = []
    for entry in signature.inputs:
        ops = quantize_ops(entry.tensorIndex, "inputs")
        if entry.name.decode() == "frame":
            graph.tensors[entry.tensorIndex].quantization.scale = [1.0]
            graph.tensors[entry.tensorIndex].quantization.zeroPoint = [0]
            continue
        (op,) = ops
        _replace_interface_tensor(graph, entry, op.outputs[0])
        removed.append(op)
    for entry in signature.outputs:
        if entry.name.decode() != "logits":
            (op,) = quantize_ops(entry.tensorIndex, "outputs")
            _replace_interface_tensor(graph, entry, op.inputs[0])
            removed.append(op)
    graph.operators = [op for op in graph.operators if not any(op is gone for gone in removed)]
    _drop_unused_tensors(graph, signature)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _replace_interface_tensor(graph, entry, inner: int) -> None:
    # The signature's `entry` and the graph's inputs or outputs name the int8 tensor `inner` instead of
    # its uint8 twin, which gives it its name and is left unused.
    twin = entry.tensorIndex
    graph.tensors[inner].name = graph.tensors[twin].name
    graph.inputs = [inner if i == twin else i for i in graph.inputs]
    graph.outputs = [inner if i == twin else i for i in graph.outputs]
    entry.tensorIndex = inner


def _drop_unused_tensors(graph, signature) -> None:
    # Keeps the tensors that an op, the graph or the signature still names, renumbered in their order.
    ops = graph.operators
    used = sorted(
        {*graph.inputs, *graph.outputs, *(i for op in ops for i in [*op.inputs, *op.outputs, *(op.intermediates or [])] if i >= 0)}
    )
    new_index = {old: new for new, old in enumerate(used)}
    graph.tensors = [graph.tensors[i] for i in used]
    graph.inputs, graph.outputs = [new_index[i] for i in graph.inputs], [new_index[i] for i in graph.outputs]
    for op in ops:
        op.inputs, op.outputs = [new_index.get(i, -1) for i in op.inputs], [new_index[i] for i in op.outputs]
        op.intermediates = [new_index[i] for i in op.intermediates] if op.intermediates is not None else None
    for entry in [*signature.inputs, *signature.outputs]:
        entry.tensorIndex = new_index[entry.tensorIndex]


def check_buffer_quantization(runner: StreamingTFLiteRunner) -> None:
    """Each new_buffer_i must carry exactly buffer_i's quantization, else feeding it back would drift."""
    frame = runner.inputs["frame"]["quantization"]
    if frame != (1.0, 0):
        raise ConversionError(f"the uint8 frame input should take raw pixels (scale 1, zero point 0), has {frame}")
    for i in range(runner.num_buffers):
        given, taken = runner.outputs[f"new_buffer_{i}"]["quantization"], runner.inputs[f"buffer_{i}"]["quantization"]
        if given != taken:
            raise ConversionError(f"new_buffer_{i} is quantized as {given} but buffer_{i} as {taken}: feeding it back would drift")


# --- the pipeline --------------------------------------------------------------------------------


def convert_streaming(
    model: MobileNetV2TSM,
    output_dir: str | Path,
    calibration_clips: Iterable[np.ndarray],
    held_out: tuple[np.ndarray, np.ndarray | None] | None = None,
    route: str = "onnx",
    keep_failed_uint8: bool = False,
) -> dict:
    """Converts a causal-shift `model` into streaming TFLite models in `output_dir`; returns the figures
    added to its model card (under "streaming", then the route).

    calibration_clips: (T, S, S, 3) uint8 clips, preprocessed as at inference; played as streams.
    held_out: (clips (M, T, S, S, 3) uint8, labels (M,) or None) to check parity on; the calibration
    clips when not given.
    route: "onnx" (ONNX -> onnx2tf SavedModel -> TFLite) or "keras" (the native Keras twin -> TFLite).
    keep_failed_uint8: as conversion.to_tflite.convert.
    """
    return run_plan(StreamingPlan(model.eval(), np.stack(list(calibration_clips)), route), output_dir, held_out, keep_failed_uint8)


class StreamingPlan(Plan):
    """The streaming model, one frame and its buffers -> logits and new buffers (STREAMING_FILES[route])."""

    section, scratch_prefix = "streaming", ".converting-streaming-"

    def __init__(self, model: MobileNetV2TSM, calibration: np.ndarray, route: str) -> None:
        if route not in STREAMING_FILES:
            raise ValueError(f"unknown route {route!r}; expected one of {tuple(STREAMING_FILES)}")
        size = model.image_size
        if size is None:
            raise ValueError("the model does not know its input size (model.image_size); load it with load_model")
        self.streaming = StreamingTSM(model)  # refuses a model without the causal shift
        if calibration.shape[2:] != (size, size, 3) or calibration.dtype != np.uint8:
            raise ValueError(f"calibration clips must be uint8 (T, {size}, {size}, 3); got {calibration.dtype} {calibration.shape[1:]}")
        super().__init__(model, calibration, route)
        self.files = dict(STREAMING_FILES[route])

    def write_tflite(self, staging: Path, checker: StageChecker) -> None:
        size = self.model.image_size
        checker.check("stream-torch", TorchStreamRunner(self.streaming, size))
        if self.route == "onnx":
            function, owner = _onnx_route(self.streaming, staging, self.calibration, checker)
        else:
            function, owner = _keras_route(self.model, checker)  # owner: holds the variables the function reads
        steps = calibration_inputs(TorchStreamRunner(self.streaming, size), calibration_streams(self.calibration))
        f32, u8 = self.tflite_stages
        (staging / self.files[f32]).write_bytes(to_float32_streaming_tflite(function))
        (staging / self.files[u8]).write_bytes(to_uint8_streaming_tflite(function, steps))

    def tflite_runner(self, path: Path) -> StreamingTFLiteRunner:
        return StreamingTFLiteRunner(path)

    def check_tflite(self, staging: Path) -> None:
        check_buffer_quantization(StreamingTFLiteRunner(staging / self.files[self.tflite_stages[1]]))

    def figures(self, uint8: Inspection) -> dict:
        buffers = self.streaming.num_buffers
        return {
            "num_segments": self.model.num_segments,  # T: a decision is the mean of T frame logits
            "inputs": input_names(buffers),
            "outputs": output_names(buffers),
            "feedback": {f"new_buffer_{i}": f"buffer_{i}" for i in range(buffers)},
        }


def _onnx_route(streaming: StreamingTSM, staging: Path, calibration: np.ndarray, checker: StageChecker):
    # -> the SavedModel's step function and the loaded SavedModel behind it, each stage checked
    size = streaming.model.image_size
    onnx_path, saved_model = staging / STREAMING_FILES["onnx"]["stream-onnx"], staging / "saved_model_streaming"
    export_streaming_onnx(streaming, onnx_path, size)
    onnx_runner = OnnxStreamRunner(onnx_path)
    checker.check("stream-onnx", onnx_runner)
    onnx_to_saved_model(onnx_path, saved_model, calibration.reshape(-1, size, size, 3))
    function, loaded = saved_model_step(saved_model, buffer_layouts(saved_model, onnx_runner))
    checker.check("stream-tf", TFStreamRunner(function))
    return function, loaded


def _keras_route(model: MobileNetV2TSM, checker: StageChecker):
    # -> the Keras twin's step function and the Keras model behind it, checked
    keras_model = streaming_from_torch_model(model)
    function = keras_step(keras_model)
    checker.check("stream-keras", TFStreamRunner(function))
    return function, keras_model
