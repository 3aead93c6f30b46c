"""Row 15: the page's per-frame model call (LiteRT.js in headless Chromium, WebAssembly) against the same
uint8 streaming model in Python LiteRT, on the same frames, at the same thread counts.

The page (runtime.web) runs on the fake camera playing a held-out clip at the model's size, with
?record=N: it times each call from its input tensors in to its outputs read (runtime/web_page/model.js),
as live_stream times Python's runner.step here; then Python's runner runs the frames the page fed, in
the same order, timed per call. Medians after the warm-up frames. Then, camera stopped, the page's own
model code runs the same frames back to back in the same page (REPLAY): the model alone, without the
camera, video and drawing working beside it in the browser's processes. Whether the page is cross-origin
isolated (the server's COOP/COEP headers, which WebAssembly threads need) and whether the browser has
relaxed SIMD are read from the page. Needs Chromium, chromedriver, Selenium and LiteRT.js
(runtime.browser.missing says which is absent; the row then says so).

    python -m bench.web_latency [--quick]
"""

import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import Report, Row, Settings, ratio_row, run_alone
from bench.models import spec, synthetic_data
from bench.streaming_latency import streaming_model
from runtime import browser
from runtime.clip import quantize
from runtime.stream import StreamingTFLiteRunner
from torch_tsm.clips import load_clips

COMMAND = "python -m bench.web_latency"
TARGET = 2.0  # the issue's: the page's per-frame model time at most twice Python's, on the same CPU


def measure(settings: Settings) -> Report:
    command = f"{COMMAND}{settings.flag}"
    reason = browser.missing()
    if reason:
        return Report(
            [
                Row(
                    "15",
                    "per-frame model time, LiteRT.js in Chromium / Python LiteRT",
                    f"not measured: {reason}",
                    f"<= {TARGET:g}",
                    None,
                    command,
                )
            ]
        )
    path, _ = streaming_model(settings, "onnx")
    clips, _ = load_clips(synthetic_data(spec(settings, "causal")), "val", 1)
    frames = settings.warmup + settings.runs
    figures = {threads: page_and_python(path, clips[0], threads, frames, settings.warmup) for threads in (settings.threads, 1)}
    page, alone, python, runtime, agree = figures[settings.threads]
    one_page, one_alone, one_python = figures[1][:3]
    rows = [
        ratio_row(
            "15a",
            f"per-frame model time, uint8 streaming, LiteRT.js {runtime['litertjs']} in headless Chromium ({describe(runtime)}) / Python LiteRT, "
            f"{settings.threads} threads each, same frames",
            (page, python),
            ("page", "Python"),
            TARGET,
            True,
            command,
        ),
        ratio_row("15b", "the same, 1 thread each (for the record)", (one_page, one_python), ("page", "Python"), None, True, command),
        ratio_row(
            "15c",
            f"the page's model alone, the same frames back to back, camera stopped / Python LiteRT, {settings.threads} threads each (for the record)",
            (alone, python),
            ("page", "Python"),
            None,
            True,
            command,
        ),
    ]
    if rows[0].met is False:
        rows[0].why = (
            f"{'The model alone in the page (row 15c) is within the target: the excess is the live page working beside it' if alone / python <= TARGET else 'The model alone in the page (row 15c) misses it too: the excess is WebAssembly against native code'} "
            f"({describe(runtime)}); with 1 thread each the live ratio is {one_page / one_python:.2f}, the model alone {one_alone / one_python:.2f}."
        )
    details = [
        f"Row 15: {path.name} ({path.stat().st_size / 1e6:.2f} MB, {settings.image_size} px) on the {frames} frames of a held-out clip "
        f"played by Chromium's fake camera ({browser_version()}); {settings.warmup} warm-up frames, medians of the other {settings.runs}. "
        f"The page's uint8 logits against Python's on the frames it fed: {agree}. Cross-origin isolated: {'yes' if runtime['isolated'] else 'no'} "
        "(COOP same-origin and COEP require-corp from runtime.web's server; without them LiteRT.js runs one thread)."
    ]
    return Report(rows, details)


# The page's StreamModel (model.js) on the frames it recorded, one call after another: each call's ms.
REPLAY = """
const done = arguments[arguments.length - 1];
const { loadModel } = await import("/model.js");
const model = await loadModel(tsm.manifest, tsm.runtime.threads);
const times = [];
for (const frame of tsm.frames) {
  const input = Uint8Array.from(atob(frame.input), (c) => c.charCodeAt(0));
  times.push((await model.step(input)).ms);
}
done(times);
"""


def page_and_python(path: Path, clip: np.ndarray, threads: int, frames: int, warmup: int) -> tuple[float, float, float, dict, str]:
    """Median seconds of a frame in the live page, in the page replaying its frames, and in Python, at
    `threads`; the page's runtime; and how its logits agree with Python's."""
    with tempfile.TemporaryDirectory() as scratch:
        camera = Path(scratch) / "camera.y4m"
        browser.write_y4m(np.ascontiguousarray(np.concatenate([clip] * -(-frames // len(clip)))), camera)
        with browser.chromium(camera) as driver, browser.served(path.parent) as url:
            page = browser.open_page(driver, f"{url}/?step=1&threads={threads}&record={frames}", frames, timeout_s=600)
            if page["state"] != "running":
                raise RuntimeError(f"the page stopped: {page['error']}")
            driver.set_script_timeout(600)
            replayed = driver.execute_async_script(REPLAY)
    got = browser.recorded(page)
    runner = StreamingTFLiteRunner(path, threads)
    buffers, seconds, logits = runner.zero_buffers(), [], []
    for frame in got.inputs:
        started = time.perf_counter()
        frame_logits, buffers = runner.step(frame, buffers)
        seconds.append(time.perf_counter() - started)
        logits.append(frame_logits)
    expected = quantize(np.stack(logits), runner.outputs["logits"]).astype(int)
    agree = f"top-1 on {np.mean(got.logits.argmax(1) == expected.argmax(1)):.0%} of frames, max |uint8 difference| {np.abs(got.logits.astype(int) - expected).max()}"
    runtime = {**page["runtime"], "litertjs": page["manifest"]["litertjs"]}
    return (
        statistics.median(got.ms[warmup:]) / 1000,
        statistics.median(replayed[warmup:]) / 1000,
        statistics.median(seconds[warmup:]),
        runtime,
        agree,
    )


def describe(runtime: dict) -> str:
    return f"WebAssembly, {runtime['threads']} thread{'s' if runtime['threads'] > 1 else ''}, {runtime['simd']}, {'' if runtime['isolated'] else 'not '}cross-origin isolated"


def browser_version() -> str:
    name = next(name for name in browser.CHROMIUM if shutil.which(name))
    return subprocess.run([name, "--version"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> Report:
    return run_alone(COMMAND, __doc__, measure, argv)


if __name__ == "__main__":
    main()
