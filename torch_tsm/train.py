"""python -m torch_tsm.train: wires the data, the model and a Lightning Trainer together.

With no argument it trains the demo: MobileNetV2-TSM width 0.5 at 64 px on the built-in dataset.
Multi-GPU or multi-node runs need flags only, e.g. --accelerator gpu --devices 4 --strategy ddp.
The Bukva authors' recipe (SGD, 10x learning rate on the classifier, clipping, multi-scale crop):
    --optimizer sgd --lr 0.02 --weight-decay 2e-5 --head-lr-mult 10 --gradient-clip 20
    --warmup-epochs 20 --max-epochs 100 --resize multiscale --pretrained imagenet
"""

import argparse
import os
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from torch_tsm.augment import parse_flip_pairs
from torch_tsm.card import write_card
from torch_tsm.cli import add_verbose_flag, run, setup, summary, user_errors
from torch_tsm.datamodule import DATA_KINDS, ClipDataModule
from torch_tsm.errors import UserError
from torch_tsm.frames import RESIZE_MODES
from torch_tsm.labels import write_labels
from torch_tsm.lightning_module import OPTIMIZERS, TSMClassifier
from torch_tsm.metrics import LIVE_VIDEOS, accuracy_figures, pair_accuracy, predict_logits, stream_probabilities
from torch_tsm.model import load_model
from torch_tsm.shift import SHIFT_MODES
from torch_tsm.synthetic import DIRECTION_PAIRS
from torch_tsm.transcript import choose_rule, live_figures, printed_letters

# The built-in data trains until its model is ready to convert: stopped at 98%, its uint8 model agreed with
# it on 100% of the held-out clips over 3 seeds x 2 instruction sets (docs/reproducibility.md). A
# fixed epoch count cannot promise that: the direction pairs are learned late, at an epoch that moves with
# every CPU's rounding.
DEMO_UNTIL_ACCURACY = 0.98


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint into the run folder, which the CSV logger has already given its logs/ when
    Lightning checks that the folder is empty: only something else in it is worth its warning."""

    def _ModelCheckpoint__warn_if_dir_not_empty(self, dirpath) -> None:
        if any(entry.name != "logs" for entry in Path(dirpath).glob("*")):
            super()._ModelCheckpoint__warn_if_dir_not_empty(dirpath)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m torch_tsm.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data = parser.add_argument_group("data")
    data.add_argument("--data", choices=DATA_KINDS, default="synthetic")
    data.add_argument("--data-root", type=Path, help="dataset folder (bukva, frames)")
    data.add_argument(
        "--bukva-source", choices=("trimmed", "original"), default="trimmed", help="Bukva videos: trimmed/, or original/ cut by begin/end"
    )
    data.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        default="letterbox",
        help="multiscale: the Bukva baseline's multi-scale crop + letterbox in training",
    )
    data.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        help="random horizontal flip in training (default: on for bukva and frames, off for synthetic)",
    )
    data.add_argument(
        "--flip-pairs",
        metavar="A:B,C:D",
        help="classes that are each other's mirror image, swapped when a clip is flipped; or a file of A:B lines (default: move_right:move_left for synthetic, none otherwise)",
    )
    data.add_argument(
        "--photometric",
        action=argparse.BooleanOptionalAction,
        help="random brightness, contrast, saturation and hue in training (default: on)",
    )
    data.add_argument(
        "--blur", action=argparse.BooleanOptionalAction, help="a random defocus blur on half the training clips (default: on)"
    )
    data.add_argument("--synthetic-clips", type=int, nargs=2, default=(1600, 400), metavar=("TRAIN", "VAL"))
    data.add_argument(
        "--stream-training",
        action=argparse.BooleanOptionalAction,
        help="train on windows of continuous video too, a loss on every frame, so that the live stream decides as well as clips (default: on for a causal model on the built-in data)",
    )
    data.add_argument(
        "--sequence-batch-size", type=int, help="windows of continuous video per step, beside --batch-size clips (default: half of it)"
    )
    data.add_argument("--num-workers", type=int, help="DataLoader worker processes (default: every usable core)")
    model = parser.add_argument_group("model")
    model.add_argument("--num-segments", type=int, default=8)
    model.add_argument("--image-size", type=int, default=64)
    model.add_argument("--width-mult", type=float, default=0.5)
    model.add_argument(
        "--shift",
        choices=SHIFT_MODES,
        default="causal",
        help="causal: the one-way shift a live stream can run (default); bidirectional: the paper's offline shift; none: TSN",
    )
    model.add_argument(
        "--pretrained",
        help="'imagenet' (torchvision weights, width 1.0), a local state-dict file, or a training checkpoint of ours to fine-tune (e.g. at a larger --image-size)",
    )
    training = parser.add_argument_group("training")
    training.add_argument("--output", type=Path, help="run folder (default: models/<data>-<shift>-<time>)")
    training.add_argument("--max-epochs", type=int, default=16, help="the most epochs; the cosine schedule spans them (default: 16)")
    training.add_argument(
        "--until-accuracy",
        type=until_accuracy,
        metavar="A|off",
        help=f"stop once the validation accuracy reaches A, e.g. 0.98; the best checkpoint is then the first that did (default: {DEMO_UNTIL_ACCURACY} on the built-in data, off otherwise)",
    )
    training.add_argument("--batch-size", type=int, default=12)
    training.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    training.add_argument("--lr", type=float, default=2e-3)
    training.add_argument("--momentum", type=float, default=0.9, help="sgd only")
    training.add_argument("--weight-decay", type=float, default=1e-4)
    training.add_argument("--head-lr-mult", type=float, default=1.0, help="the classifier's learning rate is --lr times this")
    training.add_argument("--gradient-clip", type=float, metavar="NORM", help="clip the gradient's norm to this")
    training.add_argument("--warmup-epochs", type=float, default=1.0)
    training.add_argument("--freeze-epochs", type=int, default=0, help="epochs with a frozen backbone first")
    training.add_argument(
        "--checkpoint-every", type=int, default=0, metavar="STEPS", help="also save last.ckpt every N steps (long epochs)"
    )
    training.add_argument("--resume", type=Path, help="checkpoint to resume from (e.g. RUN/last.ckpt)")
    training.add_argument("--seed", type=int, default=0)
    add_verbose_flag(training)
    trainer = parser.add_argument_group("Lightning Trainer")
    trainer.add_argument("--accelerator", default="auto")
    trainer.add_argument("--devices", default="auto")
    trainer.add_argument("--strategy", default="auto")
    trainer.add_argument("--num-nodes", type=int, default=1)
    trainer.add_argument("--precision", default="32-true")
    return parser.parse_args(argv)


def until_accuracy(text: str) -> float:
    if text == "off":
        return float("inf")  # never reached: train to --max-epochs
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected an accuracy in (0, 1] or 'off', got {text}")
    return value


def stop_accuracy(args: argparse.Namespace) -> float | None:
    """The validation accuracy that ends the run early, or None: --until-accuracy, else the built-in data's."""
    if args.until_accuracy is not None:
        return None if args.until_accuracy == float("inf") else args.until_accuracy
    return DEMO_UNTIL_ACCURACY if args.data == "synthetic" else None


def stream_training(args: argparse.Namespace) -> bool:
    """--stream-training, else on for a causal model on data with continuous videos: the built-in data, or
    Bukva's original videos (--bukva-source original); prepared frame folders of originals take the flag."""
    if args.stream_training is not None:
        if args.stream_training and args.shift != "causal":
            raise UserError(f"--stream-training needs --shift causal: a {args.shift} shift cannot run as a live stream")
        return args.stream_training
    return args.shift == "causal" and (args.data == "synthetic" or (args.data == "bukva" and args.bukva_source == "original"))


def run_folder(args: argparse.Namespace) -> Path:
    if args.output is not None:
        output = args.output
    elif args.resume is not None:
        output = args.resume.parent
    else:
        output = Path("models") / f"{args.data}-{args.shift}-{datetime.now():%Y%m%d-%H%M%S}"
    if args.resume is None and (output / "best.ckpt").exists():
        raise UserError(f"{output}: already holds a trained model; pass --resume {output / 'last.ckpt'} or another --output")
    return output


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    setup(args.verbose)
    with user_errors(args.verbose):
        return train(args)


def data_module(args: argparse.Namespace) -> ClipDataModule:
    flip_pairs = parse_flip_pairs(args.flip_pairs) if args.flip_pairs is not None else None
    try:
        return ClipDataModule(
            args.data,
            args.data_root,
            args.num_segments,
            args.image_size,
            args.batch_size,
            args.num_workers,
            args.resize,
            args.flip,
            flip_pairs,
            args.photometric,
            args.blur,
            seed=args.seed,
            synthetic_sizes=tuple(args.synthetic_clips),
            bukva_source=args.bukva_source,
            stream_training=stream_training(args),
            sequence_batch_size=args.sequence_batch_size,
        )
    except ValueError as error:  # its check of --data and --data-root: options, not a bug
        raise UserError(f"{args.data_root or '--data-root'}: {error}") from error


def train(args: argparse.Namespace) -> Path:
    output = run_folder(args)
    new_folder = not output.exists()
    try:
        return train_into(output, args)
    except BaseException:
        # Bad data found before anything was written (only the empty logs/ folder) leaves no run folder behind.
        if new_folder and output.is_dir() and not any(path.is_file() for path in output.rglob("*")):
            shutil.rmtree(output)
        raise


def train_into(output: Path, args: argparse.Namespace) -> Path:
    pl.seed_everything(args.seed, workers=True)
    data = data_module(args)
    module = TSMClassifier(
        data.labels,
        args.num_segments,
        args.width_mult,
        args.shift,
        args.image_size,
        args.pretrained,
        args.lr,
        args.weight_decay,
        args.warmup_epochs,
        args.freeze_epochs,
        args.optimizer,
        args.momentum,
        args.head_lr_mult,
    )
    best = RunCheckpoint(dirpath=output, filename="best", monitor="val_score", mode="max", enable_version_counter=False)
    last = RunCheckpoint(dirpath=output, filename="last", enable_version_counter=False, every_n_train_steps=args.checkpoint_every or None)
    callbacks = [best, last]
    if (threshold := stop_accuracy(args)) is not None:
        # Lightning's own early stop, on the threshold alone: patience as long as the run, so that only
        # reaching the accuracy or the --max-epochs cap ends it. It stops on strictly more than its
        # threshold; "reaches 1.0" must stop too, so the threshold sits just below.
        callbacks.append(EarlyStopping(monitor="val_score", mode="max", stopping_threshold=threshold - 1e-6, patience=args.max_epochs))
    trainer = pl.Trainer(
        default_root_dir=output,
        max_epochs=args.max_epochs,
        accelerator=args.accelerator,
        devices=args.devices,
        strategy=args.strategy,
        num_nodes=args.num_nodes,
        precision=args.precision,
        gradient_clip_val=args.gradient_clip,
        callbacks=callbacks,
        logger=CSVLogger(output, name="logs", version=""),
        log_every_n_steps=10,
        enable_model_summary=args.verbose,
    )
    started = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=args.resume)
    if trainer.is_global_zero:
        card = write_model_card(output, args, data, time.perf_counter() - started, trainer.global_step, trainer.current_epoch)
        print(training_summary(output, card))
    return output


def write_model_card(output: Path, args: argparse.Namespace, data: ClipDataModule, seconds: float, steps: int, epochs: int) -> dict:
    """labels.txt and model_card.json beside the checkpoints; validation figures of the best checkpoint."""
    write_labels(data.labels, output / "labels.txt")
    model = load_model(output / "best.ckpt")
    logits, targets, stream = predict_logits(model, data.dataset("val", train=False), args.batch_size)
    validation = accuracy_figures(logits, targets)
    if args.data == "synthetic":
        validation["direction_pair_accuracy"] = pair_accuracy(logits, targets, data.labels, DIRECTION_PAIRS)
    if stream is not None:  # a causal model: the same clips as a live stream decides them, each behind other clips
        validation["stream_accuracy"] = accuracy_figures(stream, targets)["accuracy"]
    card = {
        "model": "MobileNetV2-TSM",
        "checkpoint": "best.ckpt",
        "labels": data.labels,
        # as run: the data defaults resolved (flip and its pairs per data kind, workers per machine)
        "config": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
        | {
            "flip": data.flip,
            "flip_pairs": data.flip_pairs,
            "photometric": data.photometric,
            "blur": data.blur,
            "num_workers": data.num_workers,
            "until_accuracy": stop_accuracy(args),
        },
        "input": {
            "shape": ["N", args.num_segments, 3, args.image_size, args.image_size],
            "pixels": "RGB 0..255, normalized inside the model",
        },
        "validation": validation,
        "validation_clips": len(targets),
        "skipped_clips": data.skipped,
        **({"no_event_clips": data.no_event_clips} if data.no_event_clips else {}),
        "training": {"seconds": round(seconds, 1), "steps": steps, "epochs": epochs, "cpu_threads": os.cpu_count()},
    }
    if model.shift == "causal" and data.data == "synthetic":
        card["decision"], card["live"] = live_card(model, data)
    write_card(output, card)
    return card


def live_card(model, data: ClipDataModule) -> tuple[dict, dict]:
    """The decision rule chosen on the validation videos (with its figures there), and the live figures of the
    float model's stream on the held-out test videos with it, as the card's "decision" and "live" (runtime.live
    adds those of other model files beside "best.ckpt")."""
    rule, chosen_on = choose_rule(
        stream_probabilities(model, data.videos("val", LIVE_VIDEOS), data.frame_step), data.labels, data.frame_step
    )
    test = stream_probabilities(model, data.videos("test", LIVE_VIDEOS), data.frame_step)
    figures = live_figures([(truth, printed_letters(p, kept, truth.fps, data.labels, rule)) for truth, p, kept in test])
    return rule.as_dict() | {"chosen_on_validation": chosen_on}, {"best.ckpt": {"stream": figures}}


def training_summary(output: Path, card: dict) -> str:
    checkpoint = output / card["checkpoint"]
    validation = card["validation"]
    figures = f"{validation['accuracy']:.1%} accuracy, top-3 {validation['top3']:.1%}, on {card['validation_clips']} clips"
    if "direction_pair_accuracy" in validation:
        figures += f"; within the direction pairs {validation['direction_pair_accuracy']:.1%}"
    if "stream_accuracy" in validation:
        figures += f"; as a live stream {validation['stream_accuracy']:.1%}"
    live = card.get("live", {}).get(card["checkpoint"], {}).get("stream")
    if live:
        latency = live["latency_s"]["median"] if live["latency_s"] else float("nan")
        figures += (
            f"\nlive: {live['letter_accuracy']:.1%} letter accuracy on {live['signs']} signed letters of {live['videos']} held-out videos, "
            f"{live['false_events_per_idle_minute']:.1f} false letters per idle minute, median latency {latency:.2f} s"
        )
    threshold, epochs = card["config"]["until_accuracy"], card["training"]["epochs"]
    if threshold is None:
        stopped = f"{epochs} epochs"
    elif validation["accuracy"] >= threshold:
        stopped = f"{epochs} of at most {card['config']['max_epochs']} epochs: {threshold:.0%} reached"
    else:
        stopped = f"{epochs} epochs, the cap: {threshold:.0%} NOT reached (more --max-epochs, or another --seed)"
    return summary(
        "trained",
        [
            ("model", f"{checkpoint} ({checkpoint.stat().st_size / 1e6:.1f} MB), labels.txt and model_card.json beside it"),
            ("validation", figures),
            ("time", f"{card['training']['seconds']:.0f} s, {stopped}"),
            ("next", f"python -m conversion.to_tflite --checkpoint {checkpoint}"),
        ],
    )


if __name__ == "__main__":
    sys.exit(run(main))
