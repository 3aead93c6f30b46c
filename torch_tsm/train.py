"""python -m torch_tsm.train: wires the data, the model and a Lightning Trainer together.

With no argument it trains the demo: MobileNetV2-TSM width 0.5 at 64 px on the built-in dataset.
A recipe is a YAML file of these options (`--config configs/bukva.yaml`: the Bukva authors' recipe); a
flag overrides the file wherever it stands. Every run writes the configuration it ran, defaults resolved,
to RUN/config.yaml: `--config RUN/config.yaml` runs it again, `--print-config` prints it without training.
Multi-GPU or multi-node runs need flags only, e.g. --accelerator gpu --devices 4 --strategy ddp.
"""

import argparse
import inspect
import os
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

import pytorch_lightning as pl
import yaml
from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter, Namespace
from pytorch_lightning import Trainer  # its defaults, read once (a test may replace pl.Trainer to record its arguments)
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from torch_tsm.augment import parse_flip_pairs
from torch_tsm.card import write_card
from torch_tsm.cli import add_verbose_flag, ignoring_warning, run, setup, summary, user_errors, verbose_requested
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

# The built-in data trains until its model is ready to ship: a fixed epoch count cannot promise that, as the
# direction pairs are learned late, at an epoch that moves with every CPU's rounding. At a score of 0.99 the
# live model's stream printed 98-99.5% of the letters with at most 0.3 false letters a minute of idle over
# seeds 0-3; at 0.98 one seed printed 96.5% with 1.5 a minute (docs/live.md).
DEMO_UNTIL_ACCURACY = 0.99
MAX_EPOCHS = 16  # the demo's cap; the cosine schedule spans it
CONFIG_FILE = "config.yaml"  # beside the checkpoints: the whole configuration a run ran
# Where a run goes, and how it is shown: not part of the configuration a run writes (a re-run goes to a new folder).
NOT_CONFIGURATION = ("config", "print_config", "output", "resume", "verbose")


def default(owner, name: str):
    """The default of parameter `name` of `owner` (a class: of its __init__): each default is defined once,
    in the signature of the code that uses it (TSMClassifier, ClipDataModule, Lightning's Trainer), and the
    command line, config.yaml, the card and --help take it from there."""
    return inspect.signature(owner).parameters[name].default


class HelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """--help: this module's description as written, each option with its type and default (jsonargparse's)."""


def parser() -> ArgumentParser:
    # jsonargparse's ArgumentParser (LightningCLI's own): --config files in YAML, typed values, --help with
    # the defaults. The options are declared one by one rather than by add_class_arguments so that they
    # keep their names (--batch-size, --no-flip; a class's arguments would be --batch_size, --flip false).
    parser = ArgumentParser(
        prog="python -m torch_tsm.train",
        description=__doc__,
        formatter_class=HelpFormatter,
        exit_on_error=False,  # raised, to end as one line naming the file or the flag (parse_args)
        print_config=None,  # ours prints the configuration resolved, as config.yaml holds it
    )
    parser.add_argument(
        "--config", action=ActionConfigFile, help="a YAML file of these options, e.g. configs/bukva.yaml or RUN/config.yaml"
    )
    parser.add_argument("--print-config", action="store_true", help="print the configuration, defaults resolved, and exit")
    data = parser.add_argument_group("data")
    data.add_argument("--data", choices=DATA_KINDS, default=default(ClipDataModule, "data"))
    data.add_argument("--data-root", type=Path | None, default=default(ClipDataModule, "data_root"), help="dataset folder (bukva, frames)")
    data.add_argument(
        "--bukva-source",
        choices=("trimmed", "original"),
        default=default(ClipDataModule, "bukva_source"),
        help="Bukva videos: trimmed/, or original/ cut by begin/end",
    )
    data.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        default=default(ClipDataModule, "resize"),
        help="multiscale: the Bukva baseline's multi-scale crop + letterbox in training",
    )
    data.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=default(ClipDataModule, "flip"),
        help="random horizontal flip in training; null: on for bukva and frames, off for synthetic",
    )
    data.add_argument(
        "--flip-pairs",
        type=list[tuple[str, str]] | str | None,
        default=default(ClipDataModule, "flip_pairs"),
        metavar="A:B,C:D",
        help="classes that are each other's mirror image, swapped when a clip is flipped; or a file of A:B lines; null: move_right:move_left for synthetic, none otherwise",
    )
    data.add_argument(
        "--photometric",
        action=argparse.BooleanOptionalAction,
        default=default(ClipDataModule, "photometric"),
        help="random brightness, contrast, saturation and hue in training",
    )
    data.add_argument(
        "--blur",
        action=argparse.BooleanOptionalAction,
        default=default(ClipDataModule, "blur"),
        help="a random defocus blur on half the training clips",
    )
    data.add_argument(
        "--synthetic-clips", type=int, nargs=2, default=list(default(ClipDataModule, "synthetic_sizes")), metavar=("TRAIN", "VAL")
    )
    data.add_argument(
        "--stream-training",
        action=argparse.BooleanOptionalAction,
        help="train on windows of continuous video too, a loss on every frame, so that the live stream decides as well as clips; null: on for a causal model on the built-in data or Bukva's original videos",
    )
    data.add_argument(
        "--sequence-batch-size",
        type=int | None,
        default=default(ClipDataModule, "sequence_batch_size"),
        help="windows of continuous video per step, beside --batch-size clips; null: half of it",
    )
    data.add_argument(
        "--num-workers",
        type=int | None,
        default=default(ClipDataModule, "num_workers"),
        help="DataLoader worker processes; null: every usable core",
    )
    model = parser.add_argument_group("model")
    model.add_argument("--num-segments", type=int, default=default(TSMClassifier, "num_segments"))
    model.add_argument("--image-size", type=int, default=default(TSMClassifier, "image_size"))
    model.add_argument("--width-mult", type=float, default=default(TSMClassifier, "width_mult"))
    model.add_argument(
        "--shift",
        choices=SHIFT_MODES,
        default=default(TSMClassifier, "shift"),
        help="causal: the one-way shift a live stream can run; bidirectional: the paper's offline shift; none: TSN",
    )
    model.add_argument(
        "--pretrained",
        type=str | None,
        default=default(TSMClassifier, "pretrained"),
        help="'imagenet' (torchvision weights, width 1.0), a local state-dict file, or a training checkpoint of ours to fine-tune (e.g. at a larger --image-size)",
    )
    training = parser.add_argument_group("training")
    training.add_argument("--output", type=Path | None, help="run folder (default: models/<data>-<shift>-<time>)")
    training.add_argument("--max-epochs", type=int, default=MAX_EPOCHS, help="the most epochs; the cosine schedule spans them")
    training.add_argument(
        "--until-accuracy",
        type=until_accuracy,
        metavar="A|off",
        help=f"stop once the validation score (val_score: the clip accuracy, for a model trained for the stream the lower of it and the frame accuracy) reaches A, e.g. 0.99, and half of --max-epochs are done; the best checkpoint is the best score so far; null: {DEMO_UNTIL_ACCURACY} on the built-in data, off otherwise",
    )
    training.add_argument("--batch-size", type=int, default=default(ClipDataModule, "batch_size"))
    training.add_argument("--optimizer", choices=OPTIMIZERS, default=default(TSMClassifier, "optimizer"))
    training.add_argument("--lr", type=float, default=default(TSMClassifier, "lr"))
    training.add_argument("--momentum", type=float, default=default(TSMClassifier, "momentum"), help="sgd only")
    training.add_argument("--weight-decay", type=float, default=default(TSMClassifier, "weight_decay"))
    training.add_argument(
        "--head-lr-mult",
        type=float,
        default=default(TSMClassifier, "head_lr_mult"),
        help="the classifier's learning rate is --lr times this",
    )
    training.add_argument(
        "--gradient-clip",
        type=float | None,
        default=default(Trainer, "gradient_clip_val"),
        metavar="NORM",
        help="clip the gradient's norm to this",
    )
    training.add_argument("--warmup-epochs", type=float, default=default(TSMClassifier, "warmup_epochs"))
    training.add_argument(
        "--freeze-epochs", type=int, default=default(TSMClassifier, "freeze_epochs"), help="epochs with a frozen backbone first"
    )
    training.add_argument(
        "--checkpoint-every", type=int, default=0, metavar="STEPS", help="also save last.ckpt every N steps (long epochs)"
    )
    training.add_argument("--resume", type=Path | None, help="checkpoint to resume from (e.g. RUN/last.ckpt)")
    training.add_argument("--seed", type=int, default=default(ClipDataModule, "seed"))
    add_verbose_flag(training)
    trainer = parser.add_argument_group("Lightning Trainer")
    trainer.add_argument("--accelerator", type=str, default=default(Trainer, "accelerator"))
    trainer.add_argument("--devices", type=int | str, default=default(Trainer, "devices"))
    trainer.add_argument("--strategy", type=str, default=default(Trainer, "strategy"))
    trainer.add_argument("--num-nodes", type=int, default=default(Trainer, "num_nodes"))
    trainer.add_argument(
        "--precision", type=str | None, default=default(Trainer, "precision"), help="e.g. bf16-mixed; null: Lightning's, 32-true"
    )
    return parser


def parse_args(argv: list[str] | None = None) -> Namespace:
    """The options: --config files first, then the flags, which override them wherever they stand. A mistake,
    in a flag or in a file, raises a UserError: one line, naming the file."""
    files, flags = split_configs(sys.argv[1:] if argv is None else list(argv))
    options = parser()
    for path in files:
        text = Path(path).read_text(encoding="utf-8")  # a missing file: an OSError, one line too
        try:
            options.parse_string(text)
        except argparse.ArgumentError as error:
            raise UserError(f"{path}: {one_line(error)}") from None
    try:  # the files first: jsonargparse applies arguments in their order, and a flag before a file would lose
        return options.parse_args([arg for path in files for arg in ("--config", path)] + flags)
    except argparse.ArgumentError as error:
        raise UserError(one_line(error)) from None


def split_configs(argv: list[str]) -> tuple[list[str], list[str]]:
    """The --config FILE (or --config=FILE) paths of argv in their order, and its other arguments."""
    files, rest, index = [], [], 0
    while index < len(argv):
        if argv[index] == "--config" and index + 1 < len(argv):
            files.append(argv[index + 1])
            index += 2
            continue
        if argv[index].startswith("--config="):
            files.append(argv[index].split("=", 1)[1])
        else:
            rest.append(argv[index])
        index += 1
    return files, rest


def one_line(error: argparse.ArgumentError) -> str:
    # jsonargparse's messages run over several indented lines ('Parser key "lr":\n  Expected a ...')
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


class BadValue(argparse.ArgumentTypeError, ValueError):
    """A bad option value: its message shown by argparse on the command line, and by jsonargparse in a file."""


def until_accuracy(value: str | float | None) -> float | None:
    """--until-accuracy: an accuracy in (0, 1], or off (inf: never reached, the run goes to --max-epochs);
    None (null in a file): the data kind's default (stop_accuracy)."""
    if value is None:
        return None
    if value in ("off", False, float("inf")):  # False: YAML 1.1 reads a bare `off` as false; inf: already read
        return float("inf")
    try:
        accuracy = float(value)
    except (TypeError, ValueError):
        accuracy = float("nan")
    if not 0 < accuracy <= 1:
        raise BadValue(f"expected an accuracy in (0, 1] or 'off', got {value}")
    return accuracy


def stop_accuracy(args: Namespace) -> float | None:
    """The validation score (val_score) that ends the run early, or None: --until-accuracy, else the built-in data's."""
    if args.until_accuracy is not None:
        return None if args.until_accuracy == float("inf") else args.until_accuracy
    return DEMO_UNTIL_ACCURACY if args.data == "synthetic" else None


def stream_training(args: Namespace) -> bool:
    """--stream-training, else on for a causal model on data with continuous videos: the built-in data, or
    Bukva's original videos (--bukva-source original); prepared frame folders of originals take the flag."""
    if args.stream_training is not None:
        if args.stream_training and args.shift != "causal":
            raise UserError(f"--stream-training needs --shift causal: a {args.shift} shift cannot run as a live stream")
        return args.stream_training
    return args.shift == "causal" and (args.data == "synthetic" or (args.data == "bukva" and args.bukva_source == "original"))


def run_config(args: Namespace, data: ClipDataModule) -> dict:
    """The configuration a run ran, as config.yaml and the card's "config" hold it: every option but where the
    run goes, with the defaults that depend on the data kind resolved (flip and its pairs by ClipDataModule, the
    early stop and the stream training here), so that the file runs the same training again wherever it is
    read. The defaults that follow the machine (--num-workers) or another option (--sequence-batch-size) stay
    unset, as rules."""
    config = {key: value for key, value in args.as_dict().items() if key not in NOT_CONFIGURATION}
    stop = stop_accuracy(args)
    config |= {
        "data_root": str(args.data_root) if args.data_root is not None else None,
        "synthetic_clips": list(args.synthetic_clips),
        "flip": data.flip,
        "flip_pairs": [list(pair) for pair in data.flip_pairs],
        "stream_training": data.stream_training,
        "until_accuracy": "off" if stop is None else stop,
    }
    return config


def config_yaml(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


class SaveConfig(Callback):
    """Writes RUN/config.yaml once the data is set up (bad data leaves no run folder behind), on the first
    process only (LightningCLI's SaveConfigCallback does the same for its own configuration)."""

    def __init__(self, path: Path, config: dict) -> None:
        self.path, self.config = path, config

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.is_global_zero:
            self.path.write_text(config_yaml(self.config), encoding="utf-8")


def run_folder(args: Namespace) -> Path:
    if args.output is not None:
        output = args.output
    elif args.resume is not None:
        output = args.resume.parent
    else:
        output = Path("models") / f"{args.data}-{args.shift}-{datetime.now():%Y%m%d-%H%M%S}"
    # Checkpoints are only ever overwritten by --resume: this check, not Lightning's warning that the folder
    # is not empty (which the run's own logs/ and config.yaml would set off, and which train_into drops).
    if args.resume is None and (output / "best.ckpt").exists():
        raise UserError(f"{output}: already holds a trained model; pass --resume {output / 'last.ckpt'} or another --output")
    if args.resume is None and (output / "last.ckpt").exists():
        raise UserError(f"{output}: already holds a run's checkpoint; pass --resume {output / 'last.ckpt'} or another --output")
    return output


def main(argv: list[str] | None = None) -> Path | None:
    with user_errors(verbose_requested(argv)):  # a mistake in a flag or a --config file too: one line
        args = parse_args(argv)
    setup(args.verbose)
    with user_errors(args.verbose):
        if args.print_config:
            print(config_yaml(run_config(args, data_module(args))), end="")
            return None
        return train(args)


def data_module(args: Namespace) -> ClipDataModule:
    flip_pairs = parse_flip_pairs(args.flip_pairs) if isinstance(args.flip_pairs, str) else args.flip_pairs
    try:
        return ClipDataModule(
            data=args.data,
            data_root=args.data_root,
            num_segments=args.num_segments,
            image_size=args.image_size,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            resize=args.resize,
            flip=args.flip,
            flip_pairs=flip_pairs,
            photometric=args.photometric,
            blur=args.blur,
            seed=args.seed,
            synthetic_sizes=tuple(args.synthetic_clips),
            bukva_source=args.bukva_source,
            stream_training=stream_training(args),
            sequence_batch_size=args.sequence_batch_size,
        )
    except ValueError as error:  # its check of --data and --data-root: options, not a bug
        raise UserError(f"{args.data_root or '--data-root'}: {error}") from error


def train(args: Namespace) -> Path:
    output = run_folder(args)
    new_folder = not output.exists()
    try:
        return train_into(output, args)
    except BaseException:
        # Bad data found before anything was written (only the empty logs/ folder) leaves no run folder behind.
        if new_folder and output.is_dir() and not any(path.is_file() for path in output.rglob("*")):
            shutil.rmtree(output)
        raise


def train_into(output: Path, args: Namespace) -> Path:
    pl.seed_everything(args.seed, workers=True)
    data = data_module(args)
    module = TSMClassifier(
        data.labels,
        num_segments=args.num_segments,
        width_mult=args.width_mult,
        shift=args.shift,
        image_size=args.image_size,
        pretrained=args.pretrained,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        freeze_epochs=args.freeze_epochs,
        optimizer=args.optimizer,
        momentum=args.momentum,
        head_lr_mult=args.head_lr_mult,
    )
    best = ModelCheckpoint(dirpath=output, filename="best", monitor="val_score", mode="max", enable_version_counter=False)
    last = ModelCheckpoint(dirpath=output, filename="last", enable_version_counter=False, every_n_train_steps=args.checkpoint_every or None)
    callbacks = [best, last, SaveConfig(output / CONFIG_FILE, run_config(args, data))]
    # Lightning's early stop ends on strictly more than its threshold; "reaches 1.0" must stop too, so it sits just below.
    threshold = stop_accuracy(args)
    stop_at = None if threshold is None else threshold - 1e-6
    if stop_at is not None:
        # Lightning's own early stop, on the threshold alone: patience as long as the run, so that only
        # reaching the accuracy or the --max-epochs cap ends it.
        callbacks.append(EarlyStopping(monitor="val_score", mode="max", stopping_threshold=stop_at, patience=args.max_epochs))
    # Not before the cosine's midpoint: a stream-trained demo model stopped at a score of 0.99 after 6 of 16
    # epochs printed 93% of a stream's letters right, against 97.5-99% for those stopped after 8 to 10.
    min_epochs = args.max_epochs // 2 if stop_at is not None else None
    trainer = pl.Trainer(
        default_root_dir=output,
        max_epochs=args.max_epochs,
        min_epochs=min_epochs,
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
    # Lightning warns when the checkpoints' folder is not empty; the run folder holds the run's own logs/ (and,
    # resumed, its checkpoints), and run_folder() already refuses checkpoints that are not to be resumed. The
    # warning is dropped by its public message (a warning filter), so that a changed message shows again
    # rather than breaking silently as an override of Lightning's private method did.
    with ignoring_warning(r"Checkpoint directory .* exists and is not empty"):
        trainer.fit(module, datamodule=data, ckpt_path=args.resume)
    if trainer.is_global_zero:
        card = write_model_card(output, args, data, time.perf_counter() - started, trainer.global_step, trainer.current_epoch)
        # The stop watches val_score, which for a model trained for the stream is below the clip accuracy at times
        reached = stop_at is not None and best.best_model_score is not None and float(best.best_model_score) >= stop_at
        print(training_summary(output, card, reached))
    return output


def write_model_card(output: Path, args: Namespace, data: ClipDataModule, seconds: float, steps: int, epochs: int) -> dict:
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
        "config": run_config(args, data),  # as run, the data kind's defaults resolved: config.yaml's
        "input": {
            "shape": ["N", args.num_segments, 3, args.image_size, args.image_size],
            "pixels": "RGB 0..255, normalized inside the model",
        },
        "validation": validation,
        "validation_clips": len(targets),
        "skipped_clips": data.skipped,
        **({"no_event_clips": data.no_event_clips} if data.no_event_clips else {}),
        "training": {
            "seconds": round(seconds, 1),
            "steps": steps,
            "epochs": epochs,
            "cpu_threads": os.cpu_count(),
            "num_workers": data.num_workers,
        },
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


def training_summary(output: Path, card: dict, reached: bool) -> str:
    """What the run made and how it went; `reached`: the best checkpoint's val_score reached --until-accuracy."""
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
    if threshold in (None, "off"):
        stopped = f"{epochs} epochs"
    elif reached:
        stopped = f"{epochs} of at most {card['config']['max_epochs']} epochs: {threshold:.1%} reached"
    else:
        stopped = f"{epochs} epochs, the cap: {threshold:.1%} NOT reached (more --max-epochs, or another --seed)"
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
