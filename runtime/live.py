"""python -m runtime.live --model PATH: a model file scored on continuous video, as fingerspelling is scored.

    python -m runtime.live --model models/RUN/model_streaming_uint8.tflite      (stream mode)
    python -m runtime.live --model models/RUN/model_uint8.tflite                (clip mode: a sliding window)
    python -m runtime.live --model models/RUN/best.ckpt --mode stream

Each video goes through predict's own loop (runtime.predict.Recognizer: the same predictors, the same
decision rule, from the model card beside the model), and the letters printed are scored against the
signs: letter accuracy = 1 - (substitutions + deletions + insertions) / signs; false letters per minute of
idle; the latency from a sign's last frame to its letter (median, 90th percentile). The videos: those of
the model card's data, held out: the built-in data's 'test' videos (never used to choose the decision
rule), or with --data bukva --data-root ROOT, Bukva's original test videos (one sign each, its [begin, end)
from annotations.tsv). The figures go into the model card under live[<model file>][<mode>].
"""

import argparse
import sys
from pathlib import Path

from runtime.predict import LoadedModel, PredictError, Recognizer, load
from torch_tsm.card import card_beside, update_card
from torch_tsm.cli import add_verbose_flag, run, setup, summary, user_errors
from torch_tsm.clips import data_module
from torch_tsm.metrics import LIVE_VIDEOS
from torch_tsm.transcript import DecisionRule, VideoTruth, live_figures


def score(loaded: LoadedModel, rule: DecisionRule, videos: list) -> dict:
    """The live figures of one model on these continuous videos (SyntheticVideo, BukvaVideo or FrameFolderVideo:
    `render()` and `fps`), each from a new stream."""
    scored = []
    for video in videos:
        frames, signs = video.render()
        recognizer = Recognizer(loaded, rule)
        for index, frame in enumerate(frames):
            recognizer(frame, index / video.fps)
        truth = VideoTruth([(sign.label, sign.begin, sign.end) for sign in signs], len(frames), video.fps)
        scored.append((truth, [(letter.time_s, letter.label) for letter in recognizer.letters]))
    return live_figures(scored)


def live_summary(path: Path, mode: str, figures: dict) -> str:
    latency = figures["latency_s"]
    return summary(
        f"live, {mode} mode",
        [
            ("model", str(path)),
            (
                "letters",
                f"{figures['letter_accuracy']:.1%} letter accuracy on {figures['signs']} signs of {figures['videos']} videos "
                f"({figures['substitutions']} substituted, {figures['deletions']} missed, {figures['insertions']} inserted)",
            ),
            ("idle", f"{figures['false_events_per_idle_minute']:.2f} false letters per minute of idle"),
            (
                "latency",
                f"median {latency['median']:.2f} s, 90% within {latency['p90']:.2f} s of a sign's end" if latency else "no letter right",
            ),
        ],
    )


def evaluate_live(
    path: Path,
    mode: str | None = None,
    split: str = "test",
    count: int | None = None,
    stride: int = 1,
    data: str | None = None,
    data_root: Path | None = None,
) -> dict:
    """Scores the model file on held-out continuous videos of its card's data (or of data/data_root) and
    writes the figures into its card. count None: LIVE_VIDEOS built-in videos, every Bukva test video. -> the figures."""
    card = card_beside(path)  # first: without it, neither the data nor the decision rule is known
    if "config" not in card:
        raise PredictError(f"{path}: no model_card.json beside it, so no data to score it on (train with torch_tsm.train)")
    if count is None and (data or card["config"].get("data")) == "synthetic":
        count = LIVE_VIDEOS
    videos = data_module(card["config"], data, data_root).videos(split, count)
    loaded = load(path, mode, stride)
    figures = score(loaded, DecisionRule.from_dict(card.get("decision", {})), videos)
    update_card(path.parent, card["labels"], figures, "live", path.name, loaded.mode)
    print(live_summary(path, loaded.mode, figures))
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.live", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="checkpoint, clip or streaming .onnx / .tflite, SavedModel folder")
    parser.add_argument("--mode", choices=("clip", "stream"), help="default: stream for a streaming model file, clip otherwise")
    parser.add_argument("--stride", type=int, default=1, help="clip mode: a prediction every N kept frames")
    parser.add_argument("--split", choices=("val", "test"), default="test", help="test: held out from choosing the decision rule (default)")
    parser.add_argument(
        "--videos", type=int, help=f"at most this many videos (default: {LIVE_VIDEOS} built-in videos of 5 signs; every Bukva test video)"
    )
    parser.add_argument("--data", choices=("synthetic", "bukva", "frames"), help="default: the model card's data")
    parser.add_argument("--data-root", type=Path, help="the dataset's folder (bukva: with original/; frames: prepared from original/)")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    setup(args.verbose, tensorflow=args.model.is_dir())
    with user_errors(args.verbose):
        if not args.model.exists():
            raise PredictError(f"{args.model}: model not found")
        return evaluate_live(args.model, args.mode, args.split, args.videos, args.stride, args.data, args.data_root)


if __name__ == "__main__":
    sys.exit(run(main))
