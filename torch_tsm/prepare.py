"""python -m torch_tsm.prepare: decode each video once, store its frames small, train from those.

A training clip read from a Full-HD video costs ~0.6 s on one core, every epoch: every frame up to the
last one sampled is decoded at full size. The same clip read from 256 px JPEG frames costs ~10 ms. So
the videos are decoded once, here, into the frame-folder layout that `--data frames` reads:

    PREPARED/annotations.tsv    video, label, split, user_id, fps, width, height (of the video), frames,
                                begin, end (the sign's frames in the folder; empty for trimmed videos)
    PREPARED/labels.txt         the class order (Bukva's: no_event, then А..Я)
    PREPARED/<video>/00000.jpg  the frames, short side --short-side px (never upscaled)
    PREPARED/skipped.tsv        video, problem: what could not be used and why
    PREPARED/prepare.json       the settings; a later run with other settings is refused

    python -m torch_tsm.prepare --data bukva --data-root /data/bukva --output /data/bukva-256
    python -m torch_tsm.train --data frames --data-root /data/bukva-256 --image-size 224 ...

Original videos are kept whole (the idle frames around the sign are no_event clips and the context of
continuous videos: torch_tsm.datasets); a trimmed video is its sign. Each video is decoded sequentially, exactly once, into PREPARED/.partial/ and renamed into place when
complete. A re-run (after a crash, Ctrl-C or kill -9) skips the finished videos and does the rest;
annotations.tsv is written last, so a folder without it is not ready.
"""

import argparse
import fcntl
import json
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import cv2
from tqdm import tqdm

from torch_tsm.cli import add_verbose_flag, run, setup, user_errors
from torch_tsm.datasets import BukvaEntry, SkipReport, bukva_entries, usable_cores
from torch_tsm.errors import UserError
from torch_tsm.frames import resize_frame, short_side_size
from torch_tsm.labels import BUKVA_LABELS, write_labels

PARTIAL = ".partial"
LOCK = ".lock"
SETTINGS = "prepare.json"
INFO = "info.json"  # per video, beside its frames: what annotations.tsv needs on a re-run
COLUMNS = ("video", "label", "split", "user_id", "fps", "width", "height", "frames", "begin", "end")
# What a prepared folder holds; a folder of another layout is refused (as other settings are), not mixed.
# 1: original videos cut to [begin, end); 2: original videos whole, begin and end in annotations.tsv.
LAYOUT = 2


class PrepareError(UserError):
    """A problem with the whole run (not one video): one line for the user."""


@dataclass(frozen=True)
class Settings:
    short_side: int
    quality: int
    source: str  # bukva: trimmed or original
    layout: int = LAYOUT


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    width: int  # of the decoded video, as a player shows it
    height: int
    frames: int
    bytes: int


def prepare_video(entry: BukvaEntry, settings: Settings, output: Path) -> VideoInfo | str:
    """Decodes one video once and writes its frames to output/<id>/; the problem as text when it cannot."""
    partial = output / PARTIAL / entry.attachment_id
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    capture = cv2.VideoCapture(str(entry.path))
    fps, size, written, total_bytes = capture.get(cv2.CAP_PROP_FPS), (0, 0), 0, 0
    try:
        if not capture.isOpened():
            return "cannot be opened as a video"
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if written == 0:
                size = frame.shape[:2]
                target = short_side_size(*size, settings.short_side)
            path = partial / f"{written:05d}.jpg"
            if not cv2.imwrite(str(path), resize_frame(frame, target), [cv2.IMWRITE_JPEG_QUALITY, settings.quality]):
                raise OSError(f"{path}: could not be written (disk full?)")
            total_bytes += path.stat().st_size
            written += 1
    except cv2.error as error:
        return f"decoding failed at frame {written}: {error}"
    finally:
        capture.release()
    if written == 0:
        return "holds no decodable frame"
    if entry.cut and entry.cut[0] >= written:
        return f"begin/end {entry.cut[0]}/{entry.cut[1]} start past its {written} decoded frames"
    info = VideoInfo(round(fps, 3), size[1], size[0], written, total_bytes)
    (partial / INFO).write_text(json.dumps(asdict(info)), encoding="utf-8")
    os.rename(partial, output / entry.attachment_id)  # atomic: the folder appears complete or not at all
    return info


def prepare(root: Path, output: Path, settings: Settings, workers: int) -> dict:
    """Prepares every usable video of a Bukva folder; returns the run's summary figures."""
    started = time.perf_counter()
    output.mkdir(parents=True, exist_ok=True)
    _refuse_foreign(output)
    with _exclusive_lock(output):
        _check_settings(output, settings)
        report = SkipReport(f"bukva ({root})")
        entries = bukva_entries(root, settings.source, report)
        problems = [("", problem) for problem in report.problems]
        done = {
            entry.attachment_id: _read_info(output / entry.attachment_id)
            for entry in entries
            if (output / entry.attachment_id / INFO).is_file()
        }
        pending = [entry for entry in entries if entry.attachment_id not in done]
        shutil.rmtree(output / PARTIAL, ignore_errors=True)  # leftovers of a killed run
        new = 0
        if pending:
            pool = ProcessPoolExecutor(workers, _fresh_processes(), initializer=_worker_setup, initargs=(os.getpid(),))
            try:
                futures = {pool.submit(prepare_video, entry, settings, output): entry for entry in pending}
                for future in tqdm(as_completed(futures), total=len(futures), desc="prepare", unit="video", dynamic_ncols=True):
                    entry, result = futures[future], future.result()
                    if isinstance(result, VideoInfo):
                        done[entry.attachment_id], new = result, new + 1
                    else:
                        problems.append((entry.attachment_id, f"{entry.path}: {result}"))
                        tqdm.write(f"skipped {entry.path}: {result}", file=sys.stderr)
            finally:
                # On Ctrl-C or an error: hand out no more videos; the workers finish the ones they hold.
                pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(output / PARTIAL, ignore_errors=True)
        kept = [entry for entry in entries if entry.attachment_id in done]
        if not kept:
            first = f" (first problem: {problems[0][1]})" if problems else ""
            raise PrepareError(f"{root}: no usable video{first}")
        _write_atomically(output / "skipped.tsv", "video\tproblem\n" + "".join(f"{name}\t{problem}\n" for name, problem in problems))
        write_labels(BUKVA_LABELS, output / "labels.txt")
        _write_atomically(output / "annotations.tsv", _annotations(kept, done))
    return {
        "videos": len(kept),
        "new": new,
        "frames": sum(done[entry.attachment_id].frames for entry in kept),
        "bytes": sum(done[entry.attachment_id].bytes for entry in kept),
        "seconds": time.perf_counter() - started,
        "skipped": [problem for _, problem in problems],
    }


def _annotations(entries: list[BukvaEntry], done: dict[str, VideoInfo]) -> str:
    lines = ["\t".join(COLUMNS)]
    for entry in entries:
        info = done[entry.attachment_id]
        split = "train" if entry.train else "val"
        # the sign's frames in the folder: all of the video's frames are kept, so the video's own numbers,
        # the end bounded by the frames decoded
        begin, end = (entry.cut[0], min(entry.cut[1], info.frames)) if entry.cut else ("", "")
        fields = (
            entry.attachment_id,
            BUKVA_LABELS[entry.label],
            split,
            entry.user_id,
            info.fps,
            info.width,
            info.height,
            info.frames,
            begin,
            end,
        )
        lines.append("\t".join(map(str, fields)))
    return "\n".join(lines) + "\n"


def _read_info(folder: Path) -> VideoInfo:
    return VideoInfo(**json.loads((folder / INFO).read_text(encoding="utf-8")))


def _refuse_foreign(output: Path) -> None:
    # Checked before anything is written there: a folder of the user's own gets nothing of ours.
    if (output / SETTINGS).is_file():
        return
    strangers = [entry.name for entry in output.iterdir() if entry.name not in {PARTIAL, LOCK}]
    if strangers:
        raise PrepareError(
            f"{output} is not empty and was not made by prepare (it holds {strangers[0]!r}); choose an empty or new --output"
        )


def _check_settings(output: Path, settings: Settings) -> None:
    path = output / SETTINGS
    if not path.is_file():
        _write_atomically(path, json.dumps(asdict(settings), indent=2) + "\n")
        return
    previous = json.loads(path.read_text(encoding="utf-8"))
    if previous != asdict(settings):
        differ = ", ".join(
            f"{key} {previous.get(key)!r} (now {value!r})" for key, value in asdict(settings).items() if previous.get(key) != value
        )
        raise PrepareError(f"{output} was prepared with other settings: {differ}; use the same settings to finish it, or another --output")


class _exclusive_lock:
    """Holds output/.lock for the run: two runs writing into one folder would race on every video."""

    def __init__(self, output: Path) -> None:
        self.path = output / LOCK

    def __enter__(self) -> IO:
        self.handle = open(self.path, "w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise PrepareError(f"{self.path.parent}: another prepare is writing there; wait for it to finish") from None
        return self.handle

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


def _fresh_processes() -> multiprocessing.context.BaseContext:
    # Workers forked from a process that has used OpenCV's or OpenMP's thread pools can deadlock in
    # them (seen: cv2.setNumThreads hung in the child). A fork server is a clean single-threaded
    # process that imports this module once, so each worker still starts in milliseconds.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__spec__.name if __spec__ else __name__])
    return context


def _worker_setup(parent: int) -> None:
    # One video per worker process: OpenCV's own threads would only compete with the other workers.
    # Ctrl-C is the parent's to handle: it stops handing out videos, and each worker finishes its own.
    cv2.setNumThreads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_without, args=(parent,), daemon=True).start()


def _exit_without(parent: int) -> None:
    # A worker whose parent was killed (kill -9, the OOM killer) would wait on its queue forever, and
    # keep the fork server alive too: leave within a second of the parent.
    while True:
        time.sleep(1)
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os._exit(1)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _print_summary(output: Path, figures: dict) -> None:
    skipped = figures["skipped"]
    print(
        f"prepared {figures['videos']} videos ({figures['new']} new), {figures['frames']} frames, "
        f"{figures['bytes'] / 1e6:,.1f} MB in {output} ({figures['seconds']:.0f} s)"
    )
    if skipped:
        print(f"skipped {len(skipped)} (listed in {output / 'skipped.tsv'}), e.g. {skipped[0]}")
    print(f"next: python -m torch_tsm.train --data frames --data-root {output} --image-size 224 --width-mult 1.0 --pretrained imagenet")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m torch_tsm.prepare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", choices=("bukva",), default="bukva", help="the layout of --data-root")
    parser.add_argument("--data-root", type=Path, required=True, help="the dataset as unzipped")
    parser.add_argument("--output", type=Path, required=True, help="the prepared folder (new, or one this command began)")
    parser.add_argument(
        "--bukva-source",
        choices=("trimmed", "original"),
        default="trimmed",
        help="trimmed/, or original/ whole with the sign's begin/end (idle no_event clips, continuous videos)",
    )
    parser.add_argument("--short-side", type=int, default=256, help="frames are shrunk to this short side in pixels (default 256)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality, 1-100 (default 90)")
    parser.add_argument("--workers", type=int, default=usable_cores(), help="processes, one video each (default: every usable core)")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    if args.short_side < 16:
        parser.error("--short-side must be at least 16")
    if not 1 <= args.quality <= 100:
        parser.error("--quality must be between 1 and 100")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup(args.verbose)
    settings = Settings(args.short_side, args.quality, args.bukva_source)
    # SIGTERM (a scheduler's stop) ends the run like Ctrl-C: finished videos stay, the rest is redone next time.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with user_errors(args.verbose):
            figures = prepare(args.data_root, args.output, settings, args.workers)
    except KeyboardInterrupt:
        print(f"interrupted: the videos finished so far are kept in {args.output}; run the same command again to finish", file=sys.stderr)
        raise SystemExit(130) from None
    _print_summary(args.output, figures)
    return figures


if __name__ == "__main__":
    sys.exit(run(main))
