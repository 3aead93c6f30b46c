"""Whether a busy-core ratio of calls of a few ms measures the graphs or the thread pools (rows 1c, 1d, 11f).

Every LiteRT interpreter keeps a thread pool of its own. Left to the operating system, with one core kept
busy, some pools' worker thread stayed on the busy core and others' not, and a 2-thread call whose worker
shared the core waited at each of its barriers: one call about doubled while the others held. So
bench.common.busy_core pins every worker to the busy core and the calling thread to the other. This times
the same three calls of row 11 (the streaming model as predict feeds it, the same streaming model's bare
invoke, the plain frame model's bare invoke) at 1 and 2 threads, in turns, quiet and busy, twice each:
pinned, the 2-thread calls should all slow alike under load. At 1 thread no call has a worker to wait on,
and quiet and busy agree.

    python -m bench.busy_threads [--quick] [--runs N]
"""

from contextlib import nullcontext

from bench.common import Report, Settings, alternate_medians, busy_core, markdown_table, run_alone
from bench.latency import tflite_call
from bench.models import spec, synthetic_data
from bench.streaming_latency import live_stream, plain_frame_model, raw_call, streaming_model
from torch_tsm.clips import load_clips

ROUNDS = ("quiet", "busy", "quiet", "busy")


def measure(settings: Settings) -> Report:
    stream_path, _ = streaming_model(settings, "onnx")
    plain_path = plain_frame_model(settings)
    clips, _ = load_clips(synthetic_data(spec(settings, "none")), "val", 1)
    frame = clips[0][:1]
    calls = {}
    for threads in (1, 2):
        calls[f"streaming, as predict feeds it, {threads} thread(s)"] = live_stream(stream_path, clips[0], threads)
        calls[f"streaming, bare invoke, {threads} thread(s)"] = raw_call(stream_path, threads)
        calls[f"plain frame, bare invoke, {threads} thread(s)"] = tflite_call(plain_path, frame, threads)[0]
    medians = []
    for round_name in ROUNDS:
        with busy_core() if round_name == "busy" else nullcontext():
            medians.append(alternate_medians(calls, settings.runs, settings.warmup))
    table = markdown_table(
        ["call", *(f"{name} {i // 2 + 1}, ms" for i, name in enumerate(ROUNDS))],
        [[name, *(f"{m[name] * 1000:.2f}" for m in medians)] for name in calls],
    )
    return Report([], [f"**Busy-core thread pools** ({settings.label}; medians of {settings.runs} runs in turns)\n\n{table}"])


def main(argv: list[str] | None = None) -> Report:
    return run_alone("python -m bench.busy_threads", __doc__, measure, argv)


if __name__ == "__main__":
    main()
