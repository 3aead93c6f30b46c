"""Row 11: the streaming model's cost per frame, against a plain MobileNetV2 on one frame (its limit: the
shift buffers should cost next to nothing) and against the Bukva demo's way, the 8-frame clip model
re-run on a sliding window for every prediction.

All three uint8 models run in turns in this one process, on frames of the same real clip. The streaming
and the plain frame model do the work a live loop does per call (feeding the frame, reading the logits;
the streaming one its buffers too, carried over); the window's clip model is timed by its call alone.
Row 11a is measured twice: quiet, and with one core kept busy by a process of its own (row 11f).

    python -m bench.streaming_latency [--quick]
"""

import json
import shutil
import time
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from bench.common import WORK, Report, Settings, alternate_medians, quiet_and_busy_medians, ratio_row, run_alone
from bench.latency import keras_applications_call, tflite_call
from bench.models import ModelSpec, benchmark_models, converted_model, spec, synthetic_data, write_checkpoint
from conversion.inspect import inspect_tflite
from conversion.parity import STREAMING_FILES, tflite_stage
from conversion.streaming import convert_streaming
from runtime.clip import TFLiteRunner
from runtime.stream import StreamingTFLiteRunner
from torch_tsm.clips import load_clips
from torch_tsm.model import load_model


def streaming_model(settings: Settings, route: str) -> tuple[Path, float]:
    """The uint8 streaming model of a causal model at the run's settings by one conversion route
    (cached), and its conversion seconds."""
    causal = spec(settings, "causal")
    folder = WORK / f"streaming-{route}-{causal.key}"
    record = folder / "bench.json"
    model_file = STREAMING_FILES[route][tflite_stage(route, "u8")]
    if record.is_file() and (folder / model_file).is_file():
        return folder / model_file, json.loads(record.read_text())["seconds"]
    shutil.rmtree(folder, ignore_errors=True)
    checkpoint = write_checkpoint(causal, folder / "checkpoint" / "model.ckpt")
    started = time.perf_counter()
    calibration, _ = load_clips(synthetic_data(causal), "train", 8 if settings.quick else 16)
    held_out, _ = load_clips(synthetic_data(causal), "val", 8)
    convert_streaming(load_model(checkpoint), folder, calibration, (held_out, None), route)
    seconds = round(time.perf_counter() - started, 1)
    record.write_text(json.dumps({"seconds": seconds}))
    return folder / model_file, seconds


def plain_frame_model(settings: Settings) -> Path:
    """The uint8 plain MobileNetV2 (no shift) on one frame, (1, 1, S, S, 3) in, at the run's settings (cached):
    what the streaming model's per-frame time is held against."""
    return converted_model(ModelSpec("none", settings.num_classes, 1, settings.width_mult, settings.image_size), 16, 8).uint8


def extra_ops(stream_path: Path, plain_path: Path) -> dict[str, int]:
    """The ops of the streaming graph beyond the plain frame graph's, by kind: what its buffers add."""
    return dict(inspect_tflite(stream_path).ops - inspect_tflite(plain_path).ops)


def uint8_state_streaming_model(settings: Settings) -> Path:
    """The keras route's uint8 streaming model of the same checkpoint as TFLiteConverter gives it, before
    conversion.streaming.finish_uint8_interface: uint8 buffers, each joined to the graph by a QUANTIZE (cached).
    Timing only (its buffer inputs keep their calibrated quantization): it isolates what uint8 state would cost."""
    from conversion.streaming import calibration_inputs, calibration_streams, keras_step, quantized_streaming_tflite
    from runtime.stream import TorchStreamRunner
    from tf_reference import streaming_from_torch_model
    from torch_tsm.streaming import StreamingTSM

    stream_path, _ = streaming_model(settings, "keras")
    path = stream_path.parent / "uint8_state_streaming.tflite"
    if path.is_file():
        return path
    model = load_model(stream_path.parent / "checkpoint" / "model.ckpt")
    calibration, _ = load_clips(synthetic_data(spec(settings, "causal")), "train", 4)
    steps = calibration_inputs(TorchStreamRunner(StreamingTSM(model), settings.image_size), calibration_streams(calibration))
    keras_model = streaming_from_torch_model(model)  # kept alive: the step function refers to its variables
    path.write_bytes(quantized_streaming_tflite(keras_step(keras_model), steps))
    return path


def raw_call(path: Path, threads: int):
    """A call that runs a model on zero inputs and reads every output (timing only)."""
    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))

    def call() -> None:
        interpreter.invoke()
        for detail in interpreter.get_output_details():
            interpreter.get_tensor(detail["index"])

    return call


def measure(settings: Settings) -> Report:
    stream_path, conversion_seconds = streaming_model(settings, "onnx")
    keras_path, keras_seconds = streaming_model(settings, "keras")
    single = plain_frame_model(settings)
    clip_model = benchmark_models(settings)["bidirectional"]
    clips, _ = load_clips(synthetic_data(spec(settings, "none")), "val", 1)
    clip = clips[0]

    single_frame, _ = tflite_call(single, clip[:1], settings.threads)
    window, _ = tflite_call(clip_model.uint8, clip, settings.threads)
    stream = live_stream(stream_path, clip, settings.threads)
    calls = {
        "stream": stream,
        "keras": live_stream(keras_path, clip, settings.threads),
        "single": single_frame,  # its call alone, as keras.applications' beside it: rows 11d and 11e's two factors
        "window": window,
        "keras.applications": keras_applications_call(settings, clip[:1]),
    }
    seconds = alternate_medians(calls, settings.runs, settings.warmup)
    # Rows 11a, 11f, 11g and 11h in groups of their own: with many interpreters in turns on 2 cores, the idle
    # threads of one slowed the next (the plain frame took 2.2 ms in one interpreter and 4.0 ms in another in
    # the same run; row 11a read 1.11-1.13 among six interpreters). Calls of a frame are short and a busy
    # core's time slices long: 10x the runs, for a median that holds.
    quiet, busy = quiet_and_busy_medians(
        {"stream": stream, "single": live_frame(single, clip, settings.threads)}, 10 * settings.runs, settings.warmup
    )
    isolated = {
        "keras, int8 state": raw_call(keras_path, settings.threads),
        "keras, uint8 state": raw_call(uint8_state_streaming_model(settings), settings.threads),
        "single, raw": raw_call(single, settings.threads),
    }
    seconds |= alternate_medians(isolated, 2 * settings.runs, settings.warmup)

    command = f"python -m bench.streaming_latency{settings.flag}"
    rows = [
        ratio_row(
            "11a",
            "per-frame latency, uint8 streaming TSM / plain MobileNetV2 on one frame (each a live loop's call: frame in, "
            "logits out, the buffers carried over)",
            (quiet["stream"], quiet["single"]),
            ("streaming", "plain frame"),
            1.05,
            True,
            command,
        ),
        ratio_row(
            "11f",
            "the same, one core kept busy by a process of its own",
            (busy["stream"], busy["single"]),
            ("streaming", "plain frame"),
            1.05,
            True,
            command,
        ),
        ratio_row(
            "11b",
            "cost per prediction, 8-frame sliding window (clip model) / streaming",
            (seconds["window"], seconds["stream"]),
            ("window", "streaming"),
            None,
            True,
            command,
        ),
        ratio_row(
            "11c",
            "per-frame latency, uint8 streaming: keras route / onnx route",
            (seconds["keras"], seconds["stream"]),
            ("keras route", "onnx route"),
            None,
            True,
            command,
        ),
        ratio_row(
            "11d",
            "per-frame latency, uint8 streaming (onnx route) / keras.applications' MobileNetV2 on one frame",
            (seconds["stream"], seconds["keras.applications"]),
            ("streaming", "keras.applications"),
            1.10,
            True,
            command,
        ),
        ratio_row(
            "11e",
            "per-frame latency, uint8 streaming (keras route) / keras.applications' MobileNetV2 on one frame",
            (seconds["keras"], seconds["keras.applications"]),
            ("streaming", "keras.applications"),
            1.10,
            True,
            command,
        ),
        ratio_row(
            "11g",
            "the keras route's streaming model as shipped (int8 buffers, uint8 frame and logits) / plain MobileNetV2 on one "
            "frame, model calls alone",
            (seconds["keras, int8 state"], seconds["single, raw"]),
            ("int8 state", "plain frame"),
            None,
            True,
            command,
        ),
        ratio_row(
            "11h",
            "the same model with uint8 buffers, each joined to the graph by a QUANTIZE (as the converter gives it) / plain "
            "MobileNetV2 on one frame, model calls alone (for the record: what the 20 QUANTIZE cost)",
            (seconds["keras, uint8 state"], seconds["single, raw"]),
            ("uint8 state", "plain frame"),
            None,
            True,
            command,
        ),
    ]
    ops = inspect_tflite(stream_path).ops
    extra = extra_ops(stream_path, single)
    for row in rows[:2]:
        if row.met is False:
            row.why = (
                f"The streaming graph adds {', '.join(f'{n} {name}' for name, n in sorted(extra.items()))} over the plain one: "
                "per shifted block, the concatenation of its buffer (the block's input at the frame before) with this frame's input "
                "along the height, and the depthwise convolution dilated by the height that takes the shifted channels from it "
                "(rows 11g and 11h time the model calls alone, with the shipped int8 buffers and with uint8 ones; row 11k times "
                "this form in Keras twins, row 11l the form of channel slices it replaced, and row 11i any one op a block)."
            )
    backbone = seconds["single"] / seconds["keras.applications"]
    for row, path, name in ((rows[4], stream_path, "stream"), (rows[5], keras_path, "keras")):
        if row.met is False:
            row.why = (
                "Its graph still normalizes the frame with a SUB and a MUL, 3 values broadcast over the last axis, which the "
                "clip graphs no longer do (row 13, python -m bench.graph_bisect, measures what that costs)."
                if inspect_tflite(path).ops["SUB"]
                else why_streaming_slower(backbone, seconds[name] / seconds["single"], extra)
            )
    details = [
        f"Streaming uint8 model: {stream_path.stat().st_size / 1e6:.2f} MB, ops {dict(ops.most_common())}; converted in {conversion_seconds:.0f} s. "
        f"Ops it has beyond the plain single-frame model: {extra}.",
        f"Keras-route streaming uint8 model: {keras_path.stat().st_size / 1e6:.2f} MB, ops {dict(inspect_tflite(keras_path).ops.most_common())}; converted in {keras_seconds:.0f} s.",
    ]
    return Report(rows, details)


def why_streaming_slower(backbone: float, streaming: float, extra: dict[str, int]) -> str:
    """A streaming / keras.applications ratio as its two factors, and which of them carries the excess."""
    added = ", ".join(f"{n} {op}" for op, n in sorted(extra.items()))
    reading = (
        f"the larger factor is the streaming step's own: the ops its graph adds ({added}) at one frame's size, where each "
        f"op's fixed cost weighs more than in an 8-frame clip (row 1), and the live loop's feeding of frame and buffers "
        f"(row 11g times the model calls alone)"
        if streaming > backbone
        else "the larger factor is our plain single-frame graph against TensorFlow's own, the same backbone (row 13 compares "
        "the two on 8-frame clips), not the streaming part"
    )
    return (
        f"The ratio is our plain MobileNetV2's single frame against keras.applications' ({backbone:.2f}) times the streaming "
        f"graph's live step against that plain frame's call in the same turns ({streaming:.2f}): {reading}."
    )


def live_stream(path: Path, clip: np.ndarray, threads: int):
    """A call that feeds a streaming model the next frame of a live stream, its buffers from the call before."""
    stream = StreamingTFLiteRunner(path, threads)
    state = {"buffers": stream.zero_buffers(), "frame": 0}

    def next_frame() -> None:
        _, state["buffers"] = stream.step(clip[state["frame"] % len(clip)], state["buffers"])
        state["frame"] += 1

    return next_frame


def live_frame(path: Path, clip: np.ndarray, threads: int):
    """A call that feeds a plain single-frame model the next frame and reads its logits, as predict runs a clip
    model (runtime.clip.TFLiteRunner): the live loop's work without buffers, which row 11a holds the streaming
    step against."""
    runner = TFLiteRunner(path, threads)
    state = {"frame": 0}

    def next_frame() -> None:
        runner(clip[state["frame"] % len(clip)][None, None])  # (1, 1, S, S, 3): a clip of one frame
        state["frame"] += 1

    return next_frame


def main(argv: list[str] | None = None) -> Report:
    return run_alone("python -m bench.streaming_latency", __doc__, measure, argv)


if __name__ == "__main__":
    main()
