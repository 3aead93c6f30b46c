"""The page of runtime.web in a real browser, headless: what tests/test_web.py and bench/web_latency.py share.

Debian's Chromium, driven by Selenium through Debian's chromedriver (the `dev` extra installs Selenium),
with a fake camera that plays a .y4m file (Chromium's --use-file-for-fake-video-capture) and grants
itself (--use-fake-ui-for-media-stream). The page keeps what it fed the model with ?record=N
(runtime/web_page/app.js); `recorded` reads it back as arrays.

A camera delivers YUV 4:2:0, not RGB: `camera_rgb` is what a clip's RGB frames become through it (our own
decoding of the .y4m written here), to compare with what the browser decoded.
"""

import base64
import contextlib
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from runtime.web import serve

CHROMIUM = ("chromium", "chromium-browser")
CHROMEDRIVER = "chromedriver"


def missing() -> str | None:
    """Why the page cannot be run in a browser here (for a test's skip), or None."""
    from runtime.web import LITERTJS

    if not any(shutil.which(name) for name in CHROMIUM) or not shutil.which(CHROMEDRIVER):
        return "Chromium and chromedriver not found (Debian: apt-get install chromium chromium-driver)"
    if not LITERTJS.is_dir():
        return f"LiteRT.js not installed in {LITERTJS} (make install runs npm; Debian: apt-get install npm)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "Selenium not installed (pip install -e '.[dev]')"
    return None


def write_y4m(frames: np.ndarray, path: Path, fps: int = 30) -> None:
    """(L, H, W, 3) RGB uint8, H and W even -> a .y4m video in 4:2:0, as a camera delivers it."""
    _, height, width, _ = frames.shape
    with open(path, "wb") as file:
        file.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            file.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())


def camera_rgb(frames: np.ndarray) -> np.ndarray:
    # (L, H, W, 3) RGB -> (L, H, W, 3) RGB through 4:2:0 and back: our decoding of write_y4m's frames
    return np.stack([cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420), cv2.COLOR_YUV2RGB_I420) for frame in frames])


@contextlib.contextmanager
def served(folder: Path) -> Iterator[str]:
    """runtime.web's server for `folder` on a free port of 127.0.0.1, in a thread: its base URL."""
    server = serve(folder, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)  # a quick shutdown
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def chromium(camera: Path, allow_camera: bool = True, width: int = 1000, height: int = 640) -> Iterator[object]:
    """Headless Chromium whose camera plays `camera` (.y4m), allowed without asking (or refused, as a user
    refuses it, with `allow_camera` False): a Selenium WebDriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = next(shutil.which(name) for name in CHROMIUM if shutil.which(name))
    for argument in (
        "--headless=new",
        "--no-sandbox",
        f"--window-size={width},{height}",
        "--hide-scrollbars",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={camera}",
        "--use-fake-ui-for-media-stream" if allow_camera else "--use-fake-ui-for-media-stream=deny",
        # nothing from outside: no component updates, sync, field trials or other background fetches
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver, url: str, frames: int, timeout_s: float = 120) -> dict:
    """Opens the page at `url` and waits until it has recorded `frames` frames, or stopped on an error:
    its window.tsm (state, error, manifest, runtime, frames)."""
    driver.get(url)
    return wait_for_frames(driver, frames, timeout_s)


def wait_for_frames(driver, frames: int, timeout_s: float = 120) -> dict:
    """The open page's window.tsm once it has recorded `frames` frames, or stopped on an error."""
    return _wait_for(driver, f"tsm.frames.length >= {frames}", f"{frames} frames recorded", timeout_s)


def wait_for_video(driver, timeout_s: float = 300) -> dict:
    """The open page's window.tsm once the video dropped on it has been decided to its end, or it stopped on an error."""
    return _wait_for(driver, "tsm.done", "the dropped video decided to its end", timeout_s)


def _wait_for(driver, condition: str, what: str, timeout_s: float) -> dict:
    # `condition`: a JavaScript expression on the page's window.tsm
    url = driver.current_url
    deadline = time.monotonic() + timeout_s
    while True:
        page = driver.execute_script(f"return {{state: tsm.state, reached: Boolean({condition}), recorded: tsm.frames.length}}")
        if page["state"] == "error" or page["reached"]:
            return driver.execute_script("return tsm")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}: not {what} after {timeout_s:.0f} s ({page['recorded']} frames recorded, state {page['state']})")
        time.sleep(0.2)


@dataclass
class Recorded:
    """What the page fed the model, frame by frame, and what came out."""

    camera: np.ndarray  # (N, H, W, 3) uint8 RGB: the camera frames as the browser decoded them
    inputs: np.ndarray  # (N, S, S, 3) uint8: the model's input, prepared by the page
    logits: np.ndarray  # (N, K) uint8: the model's output (a clip model: only frames that completed a clip)
    ms: np.ndarray  # (N,) the page's time per model call


def recorded(page: dict) -> Recorded:
    size = page["manifest"]["image_size"]
    frames = page["frames"]
    camera = [np.frombuffer(base64.b64decode(f["raw"]), np.uint8).reshape(f["height"], f["width"], 3) for f in frames]
    inputs = [np.frombuffer(base64.b64decode(f["input"]), np.uint8).reshape(size, size, 3) for f in frames]
    logits = [np.frombuffer(base64.b64decode(f["logits"]), np.uint8) for f in frames if f["logits"] is not None]
    return Recorded(np.stack(camera), np.stack(inputs), np.stack(logits), np.array([f["ms"] for f in frames if f["logits"] is not None]))
