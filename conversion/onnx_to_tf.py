"""ONNX -> TensorFlow SavedModel with onnx2tf, offline, bounded in time and memory.

onnx2tf runs in a child process, in a scratch working directory:
- It checks its layout decisions on 20 sample images that it otherwise downloads from GitHub; it
  reads them from the working directory when present, so we write frames of real clips there. No
  download is ever attempted.
- A failing conversion can make it search for fixes with an appetite of tens of GB; a watchdog
  kills it past a time or memory limit, and the error names the ONNX node it failed on.
"""

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import psutil

from conversion.errors import ConversionError

SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"  # the name onnx2tf looks for


def onnx_to_saved_model(
    onnx_path: Path, output_dir: Path, sample_frames: np.ndarray, timeout_s: float = 600, max_memory_gb: float = 12
) -> None:
    """`sample_frames` (M, H, W, 3) uint8: real frames for onnx2tf's own layout check."""
    with tempfile.TemporaryDirectory(prefix="onnx2tf-") as scratch:
        np.save(Path(scratch) / SAMPLE_FILE, _onnx2tf_samples(sample_frames))
        command = [
            sys.executable,
            "-m",
            "onnx2tf",
            "-i",
            str(Path(onnx_path).resolve()),
            "-o",
            str(Path(output_dir).resolve()),
            "-nuo",  # the graph is already simplified (export_onnx)
            "--check_onnx_tf_outputs_sample_data_normalization",
            "denorm",  # our models take 0..255
            "-n",
            # No search for "accuracy corrections" on tensors whose dimensions look alike: on the shift's
            # (1, T, H*W, C) view (torch_tsm.shift.temporal_shift_conv) it picked wrong transposes (logits off
            # by half their scale); the graph is simplified and its layout unambiguous without it.
            "-dsm",
        ]
        log_path = Path(scratch) / "onnx2tf.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(command, cwd=scratch, stdout=log, stderr=subprocess.STDOUT)
            verdict = _watch(process, timeout_s, max_memory_gb)
        output = log_path.read_text(errors="replace")
    if verdict or process.returncode != 0 or not (Path(output_dir) / "saved_model.pb").is_file():
        raise ConversionError(_failure_message(verdict or f"exit code {process.returncode}", output))
    # onnx2tf also drops its own unchecked frames-in .tflite files there; ours are made from the SavedModel.
    for stray in Path(output_dir).glob("*.tflite"):
        stray.unlink()


def _onnx2tf_samples(frames: np.ndarray) -> np.ndarray:
    # (M, H, W, 3) uint8 -> (20, 128, 128, 3) float32 0..1, the layout of onnx2tf's own sample file
    picks = frames[np.arange(20) % len(frames)]
    return np.stack([cv2.resize(frame, (128, 128), interpolation=cv2.INTER_AREA) for frame in picks]).astype(np.float32) / 255


def _watch(process: subprocess.Popen, timeout_s: float, max_memory_gb: float) -> str | None:
    """Waits for the process; kills it (and its children) past the limits and says which one."""
    started = time.monotonic()
    watched = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            rss = sum(p.memory_info().rss for p in [watched, *watched.children(recursive=True)])
        except psutil.NoSuchProcess:
            rss = 0
        reason = None
        if time.monotonic() - started > timeout_s:
            reason = f"onnx2tf ran longer than {timeout_s:.0f} s"
        elif rss > max_memory_gb * 2**30:
            reason = f"onnx2tf used more than {max_memory_gb:g} GB of memory"
        if reason:
            for child in watched.children(recursive=True):
                child.kill()
            process.kill()
            process.wait()
            return reason
        time.sleep(0.2)
    return None


def _failure_message(reason: str, log: str) -> str:
    clean = re.sub(r"\x1b\[[0-9;]*m", "", log)
    nodes = re.findall(r"onnx_op_name:\s*(\S+)", clean)
    node = f" at ONNX node {nodes[-1]}" if nodes else ""
    errors = [line for line in clean.splitlines() if re.match(r"\s*(\w+Error|ERROR)", line)]
    detail = "\n".join(errors[-6:]) or "\n".join(clean.splitlines()[-15:])
    return f"onnx2tf failed{node} ({reason}):\n{detail}"
