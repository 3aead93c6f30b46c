"""Rows 1-4: clip latency of the TFLite models (uint8 and float32, TSM and plain MobileNetV2) and onnxruntime.

All six models run one after another in turns in this one process, on the same real clip, with the
same thread count; each figure is the median of the timed runs, and the rows are ratios of them.
The uint8 ratios are measured twice: quiet, and with one core kept busy by a process of its own
(bench.common.busy_core), as a phone's other work would (rows 1c and 1d).

    python -m bench.latency [--quick]
"""

import statistics
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from bench.common import Report, Settings, alternate_medians, alternate_times, busy_core, markdown_table, ratio_row, run_alone
from bench.models import benchmark_models, keras_applications_input, keras_applications_model, spec, synthetic_data
from conversion.inspect import inspect_tflite
from runtime.clip import quantize
from torch_tsm.clips import load_clips

# The ops a shift can add around each shifted block: data movement (slices, zero padding of one frame,
# concatenation, the view's reshapes) and the one depthwise convolution along time of temporal_shift_conv
SHIFT_OPS = ("STRIDED_SLICE", "PAD", "CONCATENATION", "SPLIT", "SLICE", "GATHER", "TRANSPOSE", "RESHAPE", "CONV_2D", "DEPTHWISE_CONV_2D")
TARGET = 1.03  # TSM / plain and TSM / keras.applications, uint8, quiet and busy


def tflite_call(path: Path, clip: np.ndarray, threads: int) -> tuple[Callable[[], None], Interpreter]:
    # clip (T, S, S, 3) uint8 -> an argument-free call that runs the model once on it
    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], quantize(clip[None], detail))
    return interpreter.invoke, interpreter


def onnx_call(path: Path, clip: np.ndarray, threads: int) -> Callable[[], None]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    # Its idle threads would otherwise spin after each run and slow whatever runs next in this process.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    frames = np.ascontiguousarray(clip.transpose(0, 3, 1, 2), dtype=np.float32)
    return lambda: session.run(None, {"frames": frames})


def delegate_partitions(interpreter: Interpreter) -> int:
    # XNNPACK takes over the graph in partitions; each leaves one DELEGATE node in the execution plan
    return sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())


def measure(settings: Settings) -> Report:
    models = benchmark_models(settings)
    clips, _ = load_clips(synthetic_data(spec(settings, "none")), "val", 1)
    clip = clips[0]
    calls: dict[str, Callable[[], object]] = {}
    partitions: dict[str, int] = {}
    for shift, converted in models.items():
        name = "TSM" if shift != "none" else "plain"
        for precision, path in (("uint8", converted.uint8), ("float32", converted.float32)):
            calls[f"{name} {precision}"], interpreter = tflite_call(path, clip, settings.threads)
            partitions[f"{name} {precision}"] = delegate_partitions(interpreter)
        calls[f"{name} onnxruntime"] = onnx_call(converted.onnx, clip, settings.threads)
    calls["keras.applications uint8"] = keras_applications_call(settings, clip)
    calls["keras.applications float32"] = keras_applications_call(settings, clip, uint8=False)
    times = alternate_times(calls, settings.runs, settings.warmup)
    seconds = {name: statistics.median(values) for name, values in times.items()}
    fastest = {name: min(values) for name, values in times.items()}
    uint8_calls = {name: calls[name] for name in ("TSM uint8", "plain uint8", "keras.applications uint8")}
    with busy_core():  # the quiet figures are the ones above, in the same turns as the rest
        busy = alternate_medians(uint8_calls, settings.runs, settings.warmup)

    command = f"python -m bench.latency{settings.flag}"
    speed_up = ratio_row(
        "3",
        "uint8 speed-up over float32 TFLite, TSM (float32 / uint8 latency)",
        (seconds["TSM float32"], seconds["TSM uint8"]),
        ("float32", "uint8"),
        2.3,
        False,
        command,
    )
    rows = [
        ratio_row(
            "1",
            f"clip latency, uint8 TFLite, TSM / plain MobileNetV2 ({settings.label})",
            (seconds["TSM uint8"], seconds["plain uint8"]),
            ("TSM", "plain"),
            TARGET,
            True,
            command,
        ),
        ratio_row(
            "1c",
            "the same, one core kept busy by a process of its own",
            (busy["TSM uint8"], busy["plain uint8"]),
            ("TSM", "plain"),
            TARGET,
            True,
            command,
        ),
        ratio_row(
            "2",
            "clip latency, float32 TFLite, TSM / plain",
            (seconds["TSM float32"], seconds["plain float32"]),
            ("TSM", "plain"),
            1.10,
            True,
            command,
        ),
        ratio_row(
            "1b",
            "clip latency, uint8 TFLite, TSM (ours) / keras.applications' MobileNetV2 (TFLiteConverter)",
            (seconds["TSM uint8"], seconds["keras.applications uint8"]),
            ("TSM", "keras.applications"),
            TARGET,
            True,
            command,
        ),
        ratio_row(
            "1d",
            "the same, one core kept busy by a process of its own",
            (busy["TSM uint8"], busy["keras.applications uint8"]),
            ("TSM", "keras.applications"),
            TARGET,
            True,
            command,
        ),
        speed_up,
        ratio_row(
            "3b",
            "uint8 speed-up over float32 TFLite of keras.applications' MobileNetV2 on this CPU (for the record: what the CPU allows)",
            (seconds["keras.applications float32"], seconds["keras.applications uint8"]),
            ("float32", "uint8"),
            None,
            True,
            command,
        ),
        ratio_row(
            "4",
            "onnxruntime float32 / TFLite float32 latency, TSM (for the record)",
            (seconds["TSM onnxruntime"], seconds["TSM float32"]),
            ("onnxruntime", "TFLite"),
            None,
            True,
            command,
        ),
    ]
    shift_ops = extra_ops(models["bidirectional"].uint8, models["none"].uint8)
    for row, precision in ((rows[0], "uint8"), (rows[2], "float32")):
        if not row.met:
            # Other processes on this shared machine inflate some runs; the fastest runs are the least disturbed.
            fastest_ratio = fastest[f"TSM {precision}"] / fastest[f"plain {precision}"]
            row.why = f"Ratio of the fastest runs: {fastest_ratio:.2f}. " + why_slower(shift_ops, partitions)
    if not rows[1].met:
        quiet = seconds["TSM uint8"] / seconds["plain uint8"]
        rows[1].why = f"Quiet, the same two graphs run {quiet:.2f}x (row 1). " + why_slower(shift_ops, partitions)
    for row, times in ((rows[3], seconds), (rows[4], busy)):
        if not row.met:
            # TSM / keras.applications is (TSM / our plain graph) x (our plain graph / keras.applications'):
            # the shift's share and the backbone conversion's share, measured in the same run.
            row.why = (
                f"It is TSM / our plain graph ({times['TSM uint8'] / times['plain uint8']:.2f}) times our plain graph / keras.applications' "
                f"({times['plain uint8'] / times['keras.applications uint8']:.2f}), in the same run: the second is the backbone's conversion, "
                "not the shift (`python -m bench.graph_bisect` times its differences apart, row 13)."
            )
    if not speed_up.met:
        # The same ratio for the plain backbone and for TensorFlow's own MobileNetV2 tells whether the shift,
        # our graph or the CPU is short of it.
        plain_speedup = seconds["plain float32"] / seconds["plain uint8"]
        keras_speedup = seconds["keras.applications float32"] / seconds["keras.applications uint8"]
        speed_up.why = (
            f"The plain MobileNetV2 gets {plain_speedup:.2f}x and keras.applications' MobileNetV2, as TensorFlow's own converter "
            f"makes it, {keras_speedup:.2f}x (row 3b), in the same run. Where TensorFlow's own model falls as short, the "
            f"limit is this CPU's integer arithmetic in XNNPACK (the Machine table lists its vector extensions), not our graph."
        )
    timing = markdown_table(
        ["model", "median ms per clip", "fastest run, ms"],
        [[name, f"{seconds[name] * 1000:.2f}", f"{fastest[name] * 1000:.2f}"] for name in seconds],
    )
    graph = markdown_table(["model", "XNNPACK partitions"], [[name, str(count)] for name, count in partitions.items()])
    details = [
        f"**Latency ({settings.label}; median of {settings.runs} alternating runs after {settings.warmup} warm-up runs, one clip per call)**\n\n{timing}",
        f"**What the shift adds to the uint8 graph** (ops in TSM beyond plain MobileNetV2): {format_ops(shift_ops)}. "
        f"Each shifted block views its input as (1, T, H*W, C) (a RESHAPE), runs one depthwise convolution along time "
        f"with fixed 0/1 taps (torch_tsm.shift.temporal_shift_conv; onnx2tf writes it as a grouped CONV_2D), and reshapes back.\n\n{graph}",
        "**One core busy** (rows 1c, 1d; median ms per clip): " + ", ".join(f"{name} {value * 1000:.2f}" for name, value in busy.items()),
    ]
    return Report(rows, details)


def keras_applications_call(settings: Settings, clip: np.ndarray, uint8: bool = True) -> Callable[[], None]:
    """keras.applications' MobileNetV2 in uint8 (or float32) on the same T frames (bench.models.keras_applications_model)."""
    interpreter = Interpreter(model_content=keras_applications_model(settings, clip, uint8=uint8), num_threads=settings.threads)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], [len(clip), settings.image_size, settings.image_size, 3])
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], clip if uint8 else keras_applications_input(clip))
    return interpreter.invoke


def extra_ops(tsm: Path, plain: Path) -> Counter:
    return inspect_tflite(tsm).ops - inspect_tflite(plain).ops


def format_ops(ops: Counter) -> str:
    return ", ".join(f"{count} {name}" for name, count in ops.most_common()) or "none"


def why_slower(shift_ops: Counter, partitions: dict[str, int]) -> str:
    copies = {name: count for name, count in shift_ops.items() if name in SHIFT_OPS}
    split = [name for name, count in partitions.items() if count > 1]
    reason = (
        f"The TSM graph runs the plain graph's ops plus {format_ops(Counter(copies))}: the shift, one more pass over each shifted "
        "block's input (`python -m bench.shift_bisect` times the shift's convolution and its view's reshapes apart; its row 1e, "
        "one depthwise pass of identity taps in place per shifted block, is the least that any one op per block costs)."
    )
    if split:
        reason += f" XNNPACK splits {', '.join(split)} into several partitions, so part of the graph runs on the slower builtin kernels."
    else:
        reason += " XNNPACK takes each whole graph as one partition, so no op falls back to builtin kernels: the difference is the cost of these ops."
    return reason


def main(argv: list[str] | None = None) -> Report:
    return run_alone("python -m bench.latency", __doc__, measure, argv)


if __name__ == "__main__":
    main()
