"""Rows 8-9: peak memory of a training run, and of the data pipeline alone as the dataset grows 4x.

Each measured run is a child process; its whole process tree (DataLoader workers included) is sampled
twice a second. The figure is the peak of the summed PSS (shared pages split between the processes that
share them, so forked workers are not counted twice); the summed RSS, an upper bound, is given beside it.

    python -m bench.memory [--quick]
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

import psutil

from bench.common import WORK, Report, Row, Settings, markdown_table, settings

TRAINING_TARGET_GB = 8
PIPELINE_TARGET = 0.05
PIPELINE_CLIPS = 400  # and 4x as many
PIPELINE_BATCHES = 6


def peak_memory(command: list[str]) -> tuple[float, float]:
    """Runs `command`; its peak (summed PSS, summed RSS) in GB over the process tree. Fails if it fails."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = psutil.Process(process.pid)
    peak_pss = peak_rss = 0.0
    while process.poll() is None:
        pss = rss = 0
        for member in [root, *root.children(recursive=True)]:
            try:
                info = member.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            pss, rss = pss + info.pss, rss + info.rss
        peak_pss, peak_rss = max(peak_pss, pss / 1e9), max(peak_rss, rss / 1e9)
        time.sleep(0.5)
    errors = process.stderr.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{errors[-3000:]}")
    return peak_pss, peak_rss


def training_command(settings: Settings, precision: str) -> list[str]:
    # 48 training clips at batch 16: three steps, one validation pass, and the model card's evaluation.
    output = WORK / "memory-training-run"
    shutil.rmtree(output, ignore_errors=True)  # torch_tsm.train refuses to overwrite a finished run
    return [
        sys.executable,
        "-m",
        "torch_tsm.train",
        "--output",
        str(output),
        "--image-size",
        str(settings.image_size),
        "--width-mult",
        str(settings.width_mult),
        "--num-segments",
        str(settings.num_segments),
        "--batch-size",
        "16",
        "--synthetic-clips",
        "48",
        "16",
        "--max-epochs",
        "1",
        "--num-workers",
        "2",
        "--precision",
        precision,
        # Clips alone, as the row says: the default causal recipe adds a batch of 26-frame windows of continuous
        # video to each step (half the clips' batch: 208 more frames here), which a 24 GB machine cannot hold at
        # 224 px, and its model card then plays 80 continuous videos through the model (slow on a CPU at 224 px).
        # The shift's direction changes neither the memory nor the time of a step.
        "--shift",
        "bidirectional",
    ]


def pipeline_command(settings: Settings, clips: int) -> list[str]:
    return [sys.executable, "-m", "bench.memory", "--pipeline", str(clips), "--image-size", str(settings.image_size)]


def run_pipeline(clips: int, image_size: int) -> None:
    """The data pipeline alone, as training uses it: a shuffled DataLoader with 2 workers, batch 16."""
    from torch_tsm.datamodule import ClipDataModule

    data = ClipDataModule("synthetic", image_size=image_size, batch_size=16, num_workers=2, synthetic_sizes=(clips, 16))
    data.setup("fit")
    for index, _ in enumerate(data.train_dataloader()):
        if index + 1 == PIPELINE_BATCHES:
            break


def measure(settings: Settings) -> Report:
    command = f"python -m bench.memory{settings.flag}"
    rows, peaks = [], []
    for number, precision in (("8", "32-true"), ("8b", "bf16-mixed")):
        train = training_command(settings, precision)
        pss, rss = peak_memory(train)
        peaks.append(pss)
        rows.append(
            Row(
                number,
                f"peak memory of a training run, batch 16 x {settings.num_segments} frames x {settings.image_size} px, width {settings.width_mult}, "
                f"3 steps + validation, --precision {precision}",
                f"{pss:.2f} GB (summed RSS {rss:.2f} GB)",
                f"<= {TRAINING_TARGET_GB} GB",
                pss <= TRAINING_TARGET_GB,
                command,
            )
        )
    rows[0].why = (
        f"The peak is the backward pass's activations, not data: a batch of 16 clips is {16 * settings.num_segments} frames through "
        f"MobileNetV2, about {peaks[0] * 1000 / (16 * settings.num_segments):.0f} MB a frame in float32 at this size, everything "
        f"included (row 9: the data pipeline does not grow with the dataset, which was the original project's 28 GB). "
        f"--precision bf16-mixed (row 8b) keeps activations in bfloat16; a smaller --batch-size cuts it further."
    )
    small, large = (peak_memory(pipeline_command(settings, clips)) for clips in (PIPELINE_CLIPS, 4 * PIPELINE_CLIPS))
    growth = large[0] / small[0] - 1
    pipeline = Row(
        "9",
        f"data pipeline alone, {PIPELINE_CLIPS} -> {4 * PIPELINE_CLIPS} training clips, batch 16, {PIPELINE_BATCHES} batches, 2 workers, {settings.image_size} px",
        f"{growth:+.1%} ({small[0]:.2f} -> {large[0]:.2f} GB)",
        f"<= +{PIPELINE_TARGET:.0%}",
        growth <= PIPELINE_TARGET,
        command,
    )
    detail = (
        f"**Memory runs**: training: `{' '.join(['python', *train[1:4], os.path.relpath(train[4]), *train[5:-1]])} PRECISION` (the built-in dataset has 10 classes, not 34: "
        f"the classifier is 0.1 MB either way). Pipeline: `python -m bench.memory --pipeline CLIPS --image-size {settings.image_size}`; "
        f"the built-in dataset's records are (seed, index) and frames are rendered in the workers, the same ClipDataset / "
        f"DataLoader path that decodes Bukva videos or frame folders one clip at a time."
    )
    return Report([*rows, pipeline], [detail])


def main(argv: list[str] | None = None) -> Report | None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="64 px, width 0.5: a smoke test")
    parser.add_argument("--pipeline", type=int, metavar="CLIPS", help="internal: run only the data pipeline over CLIPS training clips")
    parser.add_argument("--image-size", type=int, default=224, help="with --pipeline")
    args = parser.parse_args(argv)
    if args.pipeline:
        run_pipeline(args.pipeline, args.image_size)
        return None
    report = measure(settings(args.quick))
    print(
        markdown_table(
            ["#", "measure", "figure", "target", "verdict"], [[r.number, r.measure, r.figure, r.target, r.verdict] for r in report.rows]
        )
    )
    print("\n\n".join(report.details))
    return report


if __name__ == "__main__":
    main()
