"""python -m runtime.predict VIDEO --model PATH: the signs recognized in a video or a live camera.

    python -m runtime.predict clip.mp4 --model models/run/best.ckpt
    python -m runtime.predict clip.mp4 --model models/run/model_streaming_uint8.tflite --output annotated.mp4
    python -m runtime.predict --camera 0 --model models/run/model_streaming_uint8.tflite

Every decoded frame is preprocessed exactly as in training (letterbox to the model's size); every
--frame-step-th frame goes to the model, as the Bukva demo keeps every 2nd frame of a camera.
- --mode clip (any model file: checkpoint, ONNX, SavedModel, clip or streaming TFLite/ONNX): the clip
  model on the last T kept frames, every --stride kept frames: T backbone passes per prediction.
- --mode stream (a streaming TFLite or ONNX model, or a checkpoint trained with --shift causal): each kept
  frame goes through the backbone once and gives that frame's logits.
The predictions become letters by the decision rule of torch_tsm.transcript (smoothing, frames to confirm,
threshold), with the settings training chose and stored in the model card beside the model; the flags
override them. The letters are printed with their times, then the transcript; the frames per second of
the whole loop (decode + preprocess + model) at the end.
"""

import argparse
import functools
import json
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from matplotlib import font_manager
from PIL import Image, ImageDraw, ImageFont

from torch_tsm.card import card_beside
from torch_tsm.cli import add_verbose_flag, setup, user_errors
from torch_tsm.cli import run as run_command  # run() below is the loop
from torch_tsm.errors import UserError
from torch_tsm.frames import FrameTransform
from torch_tsm.transcript import DecisionRule, Transcriber


class PredictError(UserError):
    """Something the user can fix: the message says what."""


# --- models --------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    predictor: "ClipPredictor | StreamPredictor"
    labels: list[str]
    image_size: int
    mode: str


class ClipPredictor:
    """The clip model on a sliding window of the last T kept frames, every `stride` frames."""

    def __init__(self, runner, stride: int) -> None:
        self.runner = runner  # clips (N, T, S, S, 3) uint8 -> (N, K), and its T as num_segments
        self.num_segments = runner.num_segments
        self.stride = stride
        self.reset()

    def reset(self) -> None:
        self.window: deque[np.ndarray] = deque(maxlen=self.num_segments)
        self.since_last = 0

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        # (S, S, 3) uint8 -> (K,) logits of the window ending here, or None between predictions
        self.window.append(frame)
        self.since_last += 1
        if len(self.window) < self.window.maxlen or self.since_last < self.stride:
            return None
        self.since_last = 0
        return self.runner(np.stack(self.window)[None])[0]


class StreamPredictor:
    """A streaming model, one frame at a time: each frame's own logits (the decision rule smooths them)."""

    def __init__(self, runner) -> None:
        self.runner = runner  # a runtime.stream.StreamRunner
        self.reset()

    def reset(self) -> None:
        self.buffers = self.runner.zero_buffers()

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        # (S, S, 3) uint8 -> (K,) logits
        logits, self.buffers = self.runner.step(frame, self.buffers)
        return logits


def load(path: Path, mode: str | None, stride: int) -> LoadedModel:
    """The predictor for any model file; `mode` None: stream for a streaming model file, else clip."""
    from runtime.models import class_names, open_model

    runner = open_model(path, streaming=True if mode == "stream" else None)
    mode = mode or ("stream" if runner.streaming else "clip")
    # A streaming model runs clips too: T frames from zero buffers give the clip model's logits.
    predictor = StreamPredictor(runner) if mode == "stream" else ClipPredictor(runner, stride)
    return LoadedModel(predictor, class_names(runner), runner.image_size, mode)


def decision_rule(path: Path) -> DecisionRule:
    """The decision settings stored with the model (its card's "decision", chosen in training), else the defaults."""
    return DecisionRule.from_dict(card_beside(path).get("decision", {}))


# --- frames --------------------------------------------------------------------------------------


@dataclass
class Source:
    capture: cv2.VideoCapture
    fps: float  # 0 for a camera: its frames are timed by the clock
    name: str


def open_source(video: Path | None, camera: int | None) -> Source:
    if camera is not None:
        capture = cv2.VideoCapture(camera)
        if not capture.isOpened():
            raise PredictError(f"camera {camera} not found or cannot be opened")
        return Source(capture, 0.0, f"camera {camera}")
    if not video.is_file():
        raise PredictError(f"{video}: video not found")
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise PredictError(f"{video}: cannot be opened as a video")
    return Source(capture, capture.get(cv2.CAP_PROP_FPS) or 30.0, str(video))


def read_frames(source: Source, max_frames: int | None) -> Iterator[tuple[float, np.ndarray]]:
    # -> (time in seconds, (h, w, 3) BGR frame) until the source ends. A file's frames are timed by
    # their own timestamps, not index / fps: phones record at a variable frame rate.
    started = time.perf_counter()
    index = 0
    while max_frames is None or index < max_frames:
        ok, frame = source.capture.read()
        if not ok:
            break
        yield (source.capture.get(cv2.CAP_PROP_POS_MSEC) / 1000 if source.fps else time.perf_counter() - started), frame
        index += 1


# --- decisions ----------------------------------------------------------------------------------


@dataclass
class Letter:
    label: str
    time_s: float  # when it was printed: the frame that confirmed it
    confidence: float  # its smoothed probability then


class Recognizer:
    """A video's frames in, letters out: every `frame_step`-th frame preprocessed as in training and fed to
    the model, its predictions decided by the rule. `shown`: the top class and its probability now."""

    def __init__(self, loaded: LoadedModel, rule: DecisionRule, resize: str = "letterbox") -> None:
        loaded.predictor.reset()  # a new video: a new stream
        self.loaded = loaded
        self.rule = rule
        self.transform = FrameTransform(loaded.image_size, resize)
        self.transcriber = Transcriber(loaded.labels, rule)
        self.rng = np.random.default_rng(0)  # unused by the evaluation transform; its signature asks for one
        self.frames = self.kept = 0
        self.letters: list[Letter] = []
        self.shown = ("", 0.0)

    def __call__(self, rgb: np.ndarray, time_s: float) -> Letter | None:
        # (h, w, 3) uint8 RGB frame of the video, its time -> the letter it prints, or None
        self.frames += 1
        if (self.frames - 1) % self.rule.frame_step:
            return None
        self.kept += 1
        logits = self.loaded.predictor(self.transform([rgb], self.rng)[0])
        if logits is None:
            return None
        printed = self.transcriber(logits)
        top = int(self.transcriber.shown.argmax())
        self.shown = (self.loaded.labels[top], float(self.transcriber.shown[top]))
        if printed is None:
            return None
        self.letters.append(Letter(self.loaded.labels[printed], time_s, float(self.transcriber.shown[printed])))
        return self.letters[-1]

    @property
    def transcript(self) -> list[str]:
        return [letter.label for letter in self.letters]


# --- drawing -------------------------------------------------------------------------------------


def annotate(frame: np.ndarray, label: str, confidence: float, transcript: str = "") -> np.ndarray:
    """The label and a confidence bar on a BGR frame, the transcript so far under the label. The text goes
    through Pillow with DejaVu Sans (matplotlib's font), because OpenCV's fonts are ASCII only and Bukva's
    labels are Cyrillic."""
    h, w = frame.shape[:2]
    cv2.rectangle(frame, (0, h - max(6, h // 20)), (int(w * confidence), h), (0, 200, 0), -1)
    size = max(10, h // 16)
    strip = frame[: min(h, 3 * size + 12)]  # only the rows the text covers go through Pillow, once per frame
    image = Image.fromarray(strip)  # white on black: the same in BGR as in RGB
    draw = ImageDraw.Draw(image)
    for row, text in enumerate((f"{label} {confidence:.2f}", transcript[-40:])):
        draw.text((4, 2 + row * (size + 4)), text, font=_font(size), fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
    strip[:] = np.asarray(image)
    return frame


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font_manager.findfont("DejaVu Sans", fallback_to_default=False), size)


# --- the loop ------------------------------------------------------------------------------------


@dataclass
class Result:
    source: str
    model: str
    mode: str
    decision: dict  # the rule's settings, as used
    letters: list[Letter]
    frames: int
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    @property
    def transcript(self) -> list[str]:
        return [letter.label for letter in self.letters]

    def as_dict(self) -> dict:
        return {**asdict(self), "transcript": self.transcript, "fps": round(self.fps, 1)}


def joined(labels: list[str]) -> str:
    """A transcript as text: letters side by side, longer labels (the built-in classes) with spaces."""
    return ("" if all(len(label) == 1 for label in labels) else " ").join(labels)


def settings(args: argparse.Namespace) -> DecisionRule:
    """The model's stored decision rule, each setting that a flag names replaced."""
    stored = decision_rule(args.model)  # the card beside the file, or beside the SavedModel folder
    flags = {name: getattr(args, name) for name in ("frame_step", "smooth", "confirm", "threshold") if getattr(args, name) is not None}
    return DecisionRule.from_dict(stored.as_dict() | flags)


def run(args: argparse.Namespace) -> Result:
    rule = settings(args)
    loaded = load(args.model, args.mode, args.stride)
    source = open_source(args.video, args.camera)
    recognizer = Recognizer(loaded, rule, args.resize)
    writer = None
    started = time.perf_counter()
    try:
        for time_s, bgr in read_frames(source, args.max_frames):
            letter = recognizer(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), time_s)
            if letter is not None and args.camera is not None and not args.json:
                print(f"{_clock(time_s)}  {letter.label}  {letter.confidence:.2f}   {joined(recognizer.transcript)}", flush=True)
            if args.output:
                writer = writer or _writer(args.output, source, bgr)
                writer.write(annotate(bgr, *recognizer.shown, joined(recognizer.transcript)))
    except KeyboardInterrupt:
        pass  # a camera runs until interrupted
    finally:
        source.capture.release()
        if writer is not None:
            writer.release()
    if recognizer.frames == 0:
        raise PredictError(f"{source.name}: holds no decodable frame")
    if loaded.mode == "clip" and recognizer.kept < loaded.predictor.num_segments:
        raise PredictError(
            f"{source.name}: only {recognizer.kept} frames at --frame-step {rule.frame_step}, the model needs {loaded.predictor.num_segments} per clip; "
            "lower --frame-step or use --mode stream"
        )
    return Result(
        source.name, str(args.model), loaded.mode, rule.as_dict(), recognizer.letters, recognizer.frames, time.perf_counter() - started
    )


def _writer(path: Path, source: Source, frame: np.ndarray) -> cv2.VideoWriter:
    h, w = frame.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), source.fps or 30.0, (w, h))
    if not writer.isOpened():
        raise PredictError(f"{path}: cannot be written as a video (its folder missing or read-only, or an unknown extension?)")
    return writer


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60):02d}:{seconds % 60:05.2f}"


def print_result(result: Result) -> None:
    print(f"{result.source}: {len(result.letters)} letter(s), {result.mode} mode")
    for letter in result.letters:
        print(f"  {_clock(letter.time_s)}  {letter.label}  {letter.confidence:.2f}")
    print(f"transcript: {joined(result.transcript)}")
    print(f"{result.frames} frames in {result.seconds:.2f} s: {result.fps:.1f} frames/s (decode + preprocess + model)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("video", type=Path, nargs="?", help="a video file (or use --camera)")
    parser.add_argument("--camera", type=int, help="run live on camera N instead of a video")
    parser.add_argument("--model", type=Path, required=True, help="checkpoint, SavedModel folder, clip or streaming .onnx / .tflite")
    parser.add_argument("--mode", choices=("clip", "stream"), help="default: stream for a streaming model file, clip otherwise")
    parser.add_argument("--stride", type=int, default=1, help="clip mode: a prediction every N kept frames")
    rule = parser.add_argument_group("decision rule (default: the model card's, chosen in training; else torch_tsm.transcript's)")
    rule.add_argument("--frame-step", type=int, help="feed every N-th decoded frame to the model")
    rule.add_argument("--smooth", type=int, help="decide on the mean probabilities of the last N predictions")
    rule.add_argument("--confirm", type=int, help="predictions a class must stay on top to be decided")
    rule.add_argument("--threshold", type=float, help="the least mean probability of a decided class")
    parser.add_argument("--resize", choices=("letterbox", "crop"), default="letterbox", help="as in training")
    parser.add_argument("--output", type=Path, help="write the video annotated with label and confidence (.mp4)")
    parser.add_argument("--max-frames", type=int, help="stop after N decoded frames")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    if (args.video is None) == (args.camera is None):
        parser.error("give either VIDEO or --camera N")
    if min(value for value in (args.frame_step, args.stride, args.smooth, args.confirm, 1) if value is not None) < 1:
        parser.error("--frame-step, --stride, --smooth and --confirm must be at least 1")
    return args


def main(argv: list[str] | None = None) -> Result:
    args = parse_args(argv)
    setup(args.verbose, tensorflow=args.model.is_dir())  # a SavedModel folder loads TensorFlow
    with user_errors(args.verbose):
        result = run(args)
    if args.json:
        print(json.dumps(result.as_dict(), ensure_ascii=False, indent=2))
    else:
        print_result(result)
    return result


if __name__ == "__main__":
    sys.exit(run_command(main))
