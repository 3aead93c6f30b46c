"""What every benchmark shares: the settings of a run, alternating timing, result rows, the machine."""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

WORK = Path(__file__).parent / ".work"  # cached converted models and scratch runs; safe to delete


@dataclass(frozen=True)
class Settings:
    """Issue 6 measures at 224 px, width 1.0, 8 frames, 34 classes, 2 threads; --quick shrinks it for smoke tests."""

    quick: bool
    image_size: int
    width_mult: float
    num_segments: int = 8
    num_classes: int = 34
    threads: int = 2
    runs: int = 30  # timed runs per figure, after `warmup` untimed ones
    warmup: int = 3

    @property
    def flag(self) -> str:
        runs = f" --runs {self.runs}" if self.runs != settings(self.quick).runs else ""
        return (" --quick" if self.quick else "") + runs

    @property
    def label(self) -> str:
        return (
            f"{self.image_size} px, width {self.width_mult}, {self.num_segments} frames, {self.num_classes} classes, {self.threads} threads"
        )


def settings(quick: bool) -> Settings:
    return (
        Settings(quick=True, image_size=64, width_mult=0.5, runs=10, warmup=2)
        if quick
        else Settings(quick=False, image_size=224, width_mult=1.0)
    )


@dataclass
class Row:
    number: str
    measure: str
    figure: str
    target: str = ""
    met: bool | None = None  # None: no target (for the record)
    command: str = ""
    why: str = ""  # for a missed target: what the diagnostics say

    @property
    def verdict(self) -> str:
        return {None: "", True: "met", False: "**MISSED**"}[self.met]


@dataclass
class Report:
    """What one benchmark module returns: its rows and markdown paragraphs of supporting detail."""

    rows: list[Row]
    details: list[str] = field(default_factory=list)


def alternate_medians(calls: dict[str, Callable[[], object]], runs: int, warmup: int) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in alternate_times(calls, runs, warmup).items()}


def alternate_times(calls: dict[str, Callable[[], object]], runs: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of every timed call. The calls take turns, one run each, starting with a different one each
    round, so that a load change on this shared machine hits every figure of a comparison alike."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for run in range(runs):
        for name in names[run % len(names) :] + names[: run % len(names)]:
            started = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - started)
    return times


# A process of its own that keeps one core busy: what a phone's other work does to our threads.
# It ends by itself after `seconds`, whatever happens to the benchmark that started it.
_SPIN = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"


@contextmanager
def busy_core(seconds: float = 600) -> Iterator[None]:
    """One core kept busy by a spinning child process for the block (bounded: it exits after `seconds`).

    Threads are pinned, so that every call timed in the block meets the same contest: this thread on one
    core; the spinner and every other thread of this process (the runtimes' workers, made before the
    block) on another. Left to the scheduler, each interpreter's worker stayed on the busy core or off it
    for a whole run, by chance, and a busy ratio said which pool shared the core, not which graph is
    faster (`python -m bench.busy_threads`; row 11f read 0.56, 1.53 and 2.04 in three runs unpinned).
    """
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []  # Linux only: elsewhere, unpinned
    pinned = len(cpus) > 1
    spinner = subprocess.Popen([sys.executable, "-c", _SPIN, str(seconds)])
    try:
        if pinned:
            _pin_threads(main={cpus[0]}, others={cpus[-1]}, spinner=spinner.pid)
        time.sleep(0.2)  # let it start spinning before anything is timed
        yield
    finally:
        spinner.kill()
        spinner.wait()
        if pinned:
            _pin_threads(main=set(cpus), others=set(cpus))


def _pin_threads(main: set[int], others: set[int], spinner: int | None = None) -> None:
    # Linux: a thread id is a target of sched_setaffinity like a process id; 0 is the calling thread.
    if spinner is not None:
        os.sched_setaffinity(spinner, others)
    os.sched_setaffinity(0, main)
    for thread in map(int, os.listdir("/proc/self/task")):
        if thread != threading.get_native_id():
            with suppress(ProcessLookupError):  # it ended meanwhile
                os.sched_setaffinity(thread, others)


def quiet_and_busy_medians(calls: dict[str, Callable[[], object]], runs: int, warmup: int) -> tuple[dict[str, float], dict[str, float]]:
    """alternate_medians twice: quiet, then with one core kept busy by a process of its own (busy_core)."""
    quiet = alternate_medians(calls, runs, warmup)
    with busy_core():
        busy = alternate_medians(calls, runs, warmup)
    return quiet, busy


def ratio_row(
    number: str, measure: str, seconds: tuple[float, float], names: tuple[str, str], target: float | None, at_most: bool, command: str
) -> Row:
    """A row for seconds[0] / seconds[1] against `<= target` (at_most) or `>= target`; no target: for the record."""
    ratio = seconds[0] / seconds[1]
    figure = f"{ratio:.2f} ({names[0]} {seconds[0] * 1000:.1f} ms, {names[1]} {seconds[1] * 1000:.1f} ms)"
    if target is None:
        return Row(number, measure, figure, command=command)
    met = bool(ratio <= target if at_most else ratio >= target)  # a numpy ratio gives numpy.bool_, which `is False` misses
    return Row(number, measure, figure, f"{'<=' if at_most else '>='} {target:g}", met, command)


# The vector extensions that XNNPACK's kernels pick from at run time: the uint8 speed-up over float32 is the
# CPU's as much as the graph's (BENCHMARKS.md, rows 3 and 3b), so every run records them.
VECTOR_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


def machine() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), platform.processor())
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), []))
    packages = ("torch", "torchvision", "pytorch-lightning", "tensorflow", "ai-edge-litert", "onnx", "onnxruntime", "onnx2tf", "numpy")
    return {
        "CPU": cpu,
        "vector extensions": ", ".join(flag for flag in VECTOR_FLAGS if flag in flags) or "none of " + ", ".join(VECTOR_FLAGS),
        "cores available": str(len(os.sched_getaffinity(0))),
        "memory": f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        "OS": platform.platform(),
        "Python": platform.python_version(),
        **{name: metadata.version(name) for name in packages},
    }


def load_average() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def run_alone(prog: str, description: str, measure: Callable[["Settings"], Report], argv: list[str] | None) -> Report:
    """The command line of one benchmark module run on its own: `python -m bench.NAME [--quick] [--runs N]`."""
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64 px, width 0.5, fewer runs: a smoke test")
    parser.add_argument("--runs", type=int, help="timed runs behind each median (default: 30; --quick: 10): more, for steadier ratios")
    args = parser.parse_args(argv)
    chosen = settings(args.quick)
    report = measure(replace(chosen, runs=args.runs) if args.runs else chosen)
    print(
        markdown_table(
            ["#", "measure", "figure", "target", "verdict"], [[r.number, r.measure, r.figure, r.target, r.verdict] for r in report.rows]
        )
    )
    print("\n\n".join(report.details))
    return report
