"""Row 12: the data loader on real-size video, raw Full-HD against prepared frames (python -m torch_tsm.prepare).

Two generated 2.5 s, 30 fps Full-HD H.264 videos (landscape 1920x1080 and portrait 1080x1920, 15 Mbit/s
as phones record, libx264 through PyAV) stand in for Bukva's phone videos: a room (smooth light, a few
flat objects, fine texture), a person-sized shape and a moving hand-sized one, and sensor noise. Everything runs in this one process pinned to one core, as one DataLoader worker runs:
training clips (TSN sampling, 8 frames, letterbox, flip, colour jitter, blur) read by the training ClipDataset
from the videos and from their prepared frames, in turns, and the prepare step itself; and the colour
jitter alone, ours (OpenCV) against torchvision's tensor functions (row 12e).

With a CUDA GPU (the device machine), row 12d also trains for real: batch 64 at 224 px, width 1.0, from
prepared frames through the DataModule with every core as a worker, against the same steps fed from
one pre-loaded batch (compute only).

    python -m bench.loader [--quick]
"""

import os
import shutil
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from bench.common import WORK, Report, Row, Settings, alternate_times, run_alone
from torch_tsm.augment import BLUR_CHANCE, BLUR_SIGMA, FLIP_CHANCE, ClipAugmentation, defocus, jitter_colours, mirror
from torch_tsm.datamodule import BLUR_DEFAULT, PHOTOMETRIC_DEFAULT, ClipDataModule
from torch_tsm.datasets import BukvaEntry, ClipDataset, FrameFolderClip, VideoClip, collate_clips
from torch_tsm.frames import FrameTransform, read_image
from torch_tsm.lightning_module import TSMClassifier
from torch_tsm.prepare import Settings as PrepareSettings
from torch_tsm.prepare import prepare_video

FOLDER = WORK / "loader"
VIDEOS = {"landscape": (1920, 1080), "portrait": (1080, 1920)}
FRAMES, FPS = 75, 30
PREPARE = PrepareSettings(short_side=256, quality=90, source="trimmed")
TARGET_RATIO, TARGET_CLIPS_PER_SECOND, TARGET_GPU_SHARE = 30.0, 80.0, 0.90


def room_scene(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    # -> (height, width, 3) uint8: smooth lighting, flat rectangles (furniture, a door), low-amplitude texture
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    scene = np.stack([150 + 40 * x / width, 140 + 30 * y / height, 120 + 20 * (x + y) / (width + height)], axis=-1)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, width * 3 // 4)), int(rng.integers(0, height * 3 // 4))
        scene[y0 : y0 + height // 4, x0 : x0 + width // 5] = rng.integers(40, 220, 3)
    texture = cv2.resize(rng.normal(0, 6, (height // 4, width // 4)).astype(np.float32), (width, height))
    scene += texture[..., None]
    cv2.ellipse(scene, (width // 2, height // 2), (width // 8, height // 3), 0, 0, 360, (90, 110, 170), -1)  # a person
    return scene


def full_hd_video(name: str, size: tuple[int, int]) -> Path:
    """A cached H.264 (yuv420p, 15 Mbit/s) video of FRAMES frames at `size` (width, height)."""
    path = FOLDER / f"{name}.mp4"
    if path.is_file():
        return path
    import av  # bench extra: only the generation of the test videos needs it

    FOLDER.mkdir(parents=True, exist_ok=True)
    width, height = size
    rng = np.random.default_rng(0)
    scene = room_scene(width, height, rng)
    partial = path.with_suffix(".partial.mp4")
    with av.open(str(partial), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = width, height, "yuv420p", 15_000_000
        for i in range(FRAMES):
            frame = scene.copy()
            x, y = width // 3 + i * width // (3 * FRAMES), height // 3 + int(height // 10 * np.sin(i / 6))
            cv2.circle(frame, (x, y), min(size) // 12, (200, 160, 140), -1)  # a hand
            noisy = np.clip(frame + rng.normal(0, 2, frame.shape), 0, 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(noisy, format="rgb24")))
        container.mux(stream.encode())
    os.replace(partial, path)
    return path


def measure(settings: Settings) -> Report:
    videos = {name: full_hd_video(name, size) for name, size in VIDEOS.items()}
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})  # one core, as one DataLoader worker
    cv2.setNumThreads(1)
    try:
        prepare_seconds, prepared = prepare_all(videos)
        transform = FrameTransform(settings.image_size, "letterbox", train=True)
        augmentation = ClipAugmentation(flip=True, photometric=PHOTOMETRIC_DEFAULT, blur=BLUR_DEFAULT)  # training's defaults for Bukva
        raw_set = ClipDataset(
            [VideoClip(path, 0, FRAMES) for path in videos.values()], settings.num_segments, transform, augmentation=augmentation
        )
        frames_set = ClipDataset(
            [FrameFolderClip(frames, 0) for frames in prepared.values()], settings.num_segments, transform, augmentation=augmentation
        )
        repeats = 2 if settings.quick else 10  # prepared clips are fast: more of them per timed call
        calls = {"raw": lambda: read_all(raw_set, 1), "prepared": lambda: read_all(frames_set, repeats)}
        times = alternate_times(calls, runs=3 if settings.quick else 6, warmup=1)
        stages = stage_times(prepared, settings, transform)
        jitter = jitter_times(settings)
    finally:
        os.sched_setaffinity(0, cores)
    raw = statistics.median(times["raw"]) / len(videos)
    fast = statistics.median(times["prepared"]) / (len(videos) * repeats)
    sizes = {name: sum(p.stat().st_size for p in frames) for name, frames in prepared.items()}
    ratio, per_second = raw / fast, 1 / fast
    command = f"python -m bench.loader{settings.flag}"
    label = f"{settings.image_size} px, {settings.num_segments} frames, training sampling, one core"
    breakdown = ", ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in stages.items())
    rows = [
        Row(
            "12a",
            f"loader, training clips per second, prepared frames / raw Full-HD H.264 video ({label})",
            f"{ratio:.1f} (prepared {per_second:.0f} clips/s, raw {1 / raw:.2f} clips/s)",
            f">= {TARGET_RATIO:g}",
            ratio >= TARGET_RATIO,
            command,
        ),
        Row(
            "12b",
            f"loader, prepared frames, clips per second per core ({label})",
            f"{per_second:.0f} clips/s ({fast * 1000:.1f} ms a clip)",
            f">= {TARGET_CLIPS_PER_SECOND:g}",
            per_second >= TARGET_CLIPS_PER_SECOND,
            command,
            why=f"Where a clip's time goes, on average, each step timed alone in turns on the same frames: {breakdown}. The target allows "
            f"{1000 / TARGET_CLIPS_PER_SECOND:.1f} ms a clip.",
        ),
        Row(
            "12c",
            "prepare, one 2.5 s 30 fps Full-HD H.264 video, one core: seconds, and bytes at 256 px (JPEG quality 90)",
            ", ".join(f"{name} {prepare_seconds[name]:.2f} s, {sizes[name] / 1e6:.2f} MB" for name in videos),
            command=command,
        ),
        Row(
            "12e",
            f"colour jitter of a training clip, torchvision's adjust_* / ours with OpenCV ({settings.image_size} px, {settings.num_segments} frames, one core)",
            f"{jitter['torchvision'] / jitter['opencv']:.1f} (torchvision {jitter['torchvision'] * 1000:.1f} ms, ours {jitter['opencv'] * 1000:.1f} ms a clip)",
            command=command,
        ),
    ]
    details = [
        f"**Loader (row 12)**: per clip, raw video {raw * 1000:.0f} ms (every frame up to the last one sampled is decoded at "
        f"full size), prepared frames {fast * 1000:.1f} ms (8 JPEG files of 256 px). Medians of {len(times['raw'])} alternating "
        f"rounds over a landscape and a portrait video. Prepared size per video: "
        + ", ".join(f"{name} {sizes[name] / 1e6:.2f} MB ({len(prepared[name])} frames)" for name in videos)
        + f", {statistics.mean(p.stat().st_size for p in prepared['landscape']) / 1e3:.0f} KB a frame; the raw videos are "
        + f"{', '.join(f'{videos[n].stat().st_size / 1e6:.2f} MB' for n in videos)}. A JPEG's decoding time grows with its bytes: "
        "busier scenes give bigger frames and slower reading."
    ]
    if torch.cuda.is_available():
        rows.append(gpu_feed_row(prepared, settings, command))
    else:
        rows.append(
            Row(
                "12d",
                "GPU kept busy: training from prepared frames / from one pre-loaded batch",
                "not measured: no CUDA device here",
                f">= {TARGET_GPU_SHARE:g}",
                None,
                command,
            )
        )
        details.append(ON_THE_GPU)
    return Report(rows, details)


# The last run of row 12d, on the device machine (it has a GPU; this one has none): kept as a record.
ON_THE_GPU = (
    "**Row 12d on a GPU** (2026-11-27, one H100 with 16 CPU cores, torch 2.11, bf16, 224 px, width 1.0; `python -m bench.loader` "
    "as it was then, with 16-batch epochs of 1,024 clips): 0.58 at batch 64 (422 clips/s fed against 729 from one pre-loaded "
    "batch) and 0.42 at batch 128 (315 against 756). Not the decoding rate: one process per core read 82-122 clips/s at once on "
    "all 16 cores (about 1,490 clips/s in all, twice what the GPU takes), 12 workers fed as fast as 16 (412 against 410 clips/s), "
    "and OpenCV's thread count changed nothing (408 against 410). Each epoch begins with every worker decoding a whole batch "
    "(0.7-1 s at batch 64) while the GPU waits, then the GPU runs the epoch's 16 batches (1.4 s) while the workers, with nothing "
    "left to do in that epoch, wait: about 2.4 s per 1,024 clips, which predicts 430 clips/s (measured: 422; batch 128: 320, "
    "measured 315). "
    "The row now keeps every timed step in one epoch, to measure the steady feed; it has not run on a GPU since. On Bukva "
    "(about 47 batches of 64 per epoch) the wait at each epoch's start costs about a second an epoch."
)


def jitter_times(settings: Settings) -> dict[str, float]:
    """Median seconds per clip of the four colour steps with the same factors: ours on the uint8 clip
    as one tall image, torchvision.transforms.v2.functional on it as a (3, T*S, S) uint8 tensor."""
    from torchvision.transforms.v2 import functional as F

    from torch_tsm import augment

    size, frames = settings.image_size, settings.num_segments
    clip = np.random.default_rng(0).integers(0, 256, (frames * size, size, 3), dtype=np.uint8)
    tensor = torch.from_numpy(clip).permute(2, 0, 1).contiguous()
    factor, hue = 1.3, 0.05

    def ours() -> None:
        augment.hue(augment.saturation(augment.contrast(augment.brightness(clip, factor), factor), factor), hue)

    def theirs() -> None:
        F.adjust_hue(F.adjust_saturation(F.adjust_contrast(F.adjust_brightness(tensor, factor), factor), factor), hue)

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = alternate_times({"opencv": ours, "torchvision": theirs}, runs=5 if settings.quick else 15, warmup=1)
    finally:
        torch.set_num_threads(torch_threads)
    return {name: statistics.median(values) for name, values in times.items()}


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepClock(pl.Callback):
    """Seconds per training step, after `warmup` steps (cuDNN autotuning, worker start-up)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.started, self.steps = warmup, 0.0, 0

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.warmup:
            synchronize()
            self.started = time.perf_counter()
        self.steps = trainer.global_step

    def seconds_per_step(self) -> float:
        synchronize()
        return (time.perf_counter() - self.started) / (self.steps - self.warmup)


def train_steps(labels: list[str], settings: Settings, image_size: int, steps: int, accelerator: str, **data: object) -> float:
    """Seconds per step of MobileNetV2-TSM (width 1.0) trained for `steps` steps on `data` (fit's arguments)."""
    torch.manual_seed(0)
    module = TSMClassifier(labels, settings.num_segments, 1.0, "bidirectional", image_size)
    clock = StepClock(warmup=min(10, steps // 3))
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        precision="bf16-mixed",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[clock],
    )
    trainer.fit(module, **data)
    return clock.seconds_per_step()


def gpu_feed_row(
    prepared: dict[str, tuple[Path, ...]],
    settings: Settings,
    command: str,
    accelerator: str = "gpu",
    image_size: int = 224,
    batch: int = 64,
    steps: int = 60,
) -> Row:
    # Training clips that reuse the two prepared videos' frames (decoding costs the same whichever file
    # it reads), read by the training DataModule with every usable core as a worker. One epoch holds every
    # timed step, so that the figure is the steady feed: an epoch's first batch waits for one worker to
    # decode a whole batch (about 0.7 s at batch 64), a cost of the epoch count, not of the decoding rate.
    root = FOLDER / "gpu-frames"
    root.mkdir(exist_ok=True)
    for name, frames in prepared.items():
        if not (root / name).exists():
            shutil.copytree(frames[0].parent, root / name)
    copies = (steps + 1) * batch // len(prepared) + 1
    rows = [f"{name}\tclass{i % 34}\ttrain" for i in range(copies) for name in prepared] + [f"{name}\tclass0\tval" for name in prepared]
    (root / "annotations.tsv").write_text("\n".join(["video\tlabel\tsplit", *rows]) + "\n")
    data = ClipDataModule("frames", root, settings.num_segments, image_size, batch)
    fed = train_steps(data.labels, settings, image_size, steps, accelerator, datamodule=data)
    data.setup("fit")
    one_batch = collate_clips([data.train_set[i] for i in range(batch)])
    preloaded = DataLoader([one_batch] * steps, batch_size=None, pin_memory=accelerator == "gpu")
    compute_only = train_steps(data.labels, settings, image_size, steps, accelerator, train_dataloaders=preloaded)
    share = compute_only / fed
    device = torch.cuda.get_device_name() if accelerator == "gpu" else "CPU"
    return Row(
        "12d",
        f"GPU kept busy: training from prepared frames ({data.num_workers} workers) / from one pre-loaded batch, "
        f"batch {batch}, {image_size} px, width 1.0, bf16 ({device})",
        f"{share:.2f} ({batch / fed:.0f} vs {batch / compute_only:.0f} clips/s)",
        f">= {TARGET_GPU_SHARE:g}",
        share >= TARGET_GPU_SHARE,
        command,
    )


def prepare_all(videos: dict[str, Path]) -> tuple[dict[str, float], dict[str, tuple[Path, ...]]]:
    # -> median seconds of prepare_video per video (3 runs), and each video's prepared frame files
    seconds, prepared = {}, {}
    output = FOLDER / "prepared"
    for name, path in videos.items():
        runs = []
        for _ in range(3):
            shutil.rmtree(output / name, ignore_errors=True)
            started = time.perf_counter()
            prepare_video(BukvaEntry(name, path, 0, True, "", None), PREPARE, output)
            runs.append(time.perf_counter() - started)
        seconds[name] = statistics.median(runs)
        prepared[name] = tuple(sorted((output / name).glob("*.jpg")))
    return seconds, prepared


def stage_times(prepared: dict[str, tuple[Path, ...]], settings: Settings, transform: FrameTransform) -> dict[str, float]:
    """Seconds per clip of each step of a prepared training clip, on average over clips (a step that runs on half
    of them counts half), each timed alone in turns on the same frames: JPEG decoding, the letterbox and crop
    (FrameTransform), and each augmentation of training's defaults."""
    files = prepared["landscape"][:: len(prepared["landscape"]) // settings.num_segments][: settings.num_segments]
    decoded = [read_image(path) for path in files]
    rng = np.random.default_rng(0)
    clip = transform(decoded, rng)
    steps = {  # name -> (the step on one clip, the share of clips it runs on)
        "JPEG decoding": (lambda: [read_image(path) for path in files], 1.0),
        "letterbox and crop": (lambda: transform(decoded, rng), 1.0),
        f"flip ({FLIP_CHANCE:.0%} of clips)": (lambda: mirror(clip), FLIP_CHANCE),
        "colour jitter": (lambda: jitter_colours(clip, rng), 1.0),
        f"blur ({BLUR_CHANCE:.0%} of clips)": (lambda: defocus(clip, float(np.mean(BLUR_SIGMA)) * clip.shape[1]), BLUR_CHANCE),
    }
    times = alternate_times({name: step for name, (step, _) in steps.items()}, runs=10 if settings.quick else 40, warmup=2)
    return {name: statistics.median(times[name]) * share for name, (_, share) in steps.items()}  # on average over clips


def read_all(dataset: ClipDataset, repeats: int) -> None:
    for repeat in range(repeats):
        dataset.set_epoch(repeat + int(dataset.epoch) + 1)  # new random frames each time
        for index in range(len(dataset)):
            dataset[index]


def main(argv: list[str] | None = None) -> Report:
    return run_alone("python -m bench.loader", __doc__, measure, argv)


if __name__ == "__main__":
    main()
