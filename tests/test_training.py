"""End-to-end training runs on tiny generated data: learning, DDP on CPU, kill-and-resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from torch_tsm.model import load_model
from torch_tsm.train import main

TINY = ["--image-size", "32", "--width-mult", "0.35", "--num-workers", "0", "--batch-size", "8"]


def train_command(output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch_tsm.train", "--output", str(output), *TINY, *extra]


def saved_step(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"]


def test_short_training_run_learns(trained_run):
    output = trained_run
    card = json.loads((output / "model_card.json").read_text(encoding="utf-8"))
    assert card["validation"]["accuracy"] >= 0.9  # 10 classes: chance is 0.1
    assert card["validation"]["direction_pair_accuracy"] >= 0.9  # chance is 0.5: the shift at work
    assert (output / "labels.txt").read_text(encoding="utf-8").split() == card["labels"]
    assert {"best.ckpt", "last.ckpt", "logs"} <= {p.name for p in output.iterdir()}
    model = load_model(output / "best.ckpt")
    assert model.image_size == 64 and model.num_segments == 8 and model.labels == card["labels"]


def test_existing_run_is_not_overwritten(tmp_path):
    (tmp_path / "best.ckpt").write_bytes(b"")
    with pytest.raises(SystemExit, match="already holds a trained model"):
        main(["--output", str(tmp_path)])


def test_ddp_two_processes_on_cpu(tmp_path):
    output = tmp_path / "ddp"
    run = subprocess.run(
        train_command(output, "--synthetic-clips", "32", "16", "--max-epochs", "1", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"),
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in run.stderr + run.stdout or "world_size=2" in run.stderr + run.stdout
    # 32 clips, batch 8, 2 processes: each process takes 16 clips, 2 steps.
    assert saved_step(output / "last.ckpt") == 2


def test_killed_run_resumes_to_the_same_step_count(tmp_path):
    common = ["--synthetic-clips", "192", "16", "--max-epochs", "2", "--checkpoint-every", "3"]
    subprocess.run(train_command(tmp_path / "whole", *common), check=True, capture_output=True, timeout=600)
    expected = saved_step(tmp_path / "whole" / "last.ckpt")
    assert expected == 2 * 192 // 8

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(train_command(interrupted, *common), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if 6 <= saved_step(interrupted / "last.ckpt") < expected // 2:
                break
        except Exception:  # not written yet, or being written
            pass
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)  # mid-epoch, no chance to clean up
    process.wait()
    killed_at = saved_step(interrupted / "last.ckpt")
    assert 0 < killed_at < expected

    subprocess.run(train_command(interrupted, *common, "--resume", str(interrupted / "last.ckpt")), check=True, capture_output=True, timeout=600)
    assert saved_step(interrupted / "last.ckpt") == expected
