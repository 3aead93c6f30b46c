"""The trained model behind the conversion, parity, streaming, evaluation and prediction tests.

Those tests need a model with real margins between its classes: random weights give near-zero logits
that prove nothing, and a model that has not yet learnt the direction pairs has margins too small for
uint8, whose conversion then refuses it. A training run cannot promise such a model on every machine:
the same seed and command reached 100% on one CPU and 83.5% on another, because each CPU's kernels
round differently and the pairs are learnt at an epoch that moves with the rounding (docs/reproducibility.md). So the model is trained once, with RECIPE, and its weights are kept in FILE: every
machine tests the same bits, and no test waits for a training run to go well.

    python -m tests.fixture_model      (make fixture-model) trains it again, checks it, writes FILE

FILE holds the network's hyper-parameters and weights as a training checkpoint does (without the
optimizer's state), the flags it was trained with, and how the training went. A test session unpacks
it into a run folder as torch_tsm.train leaves one: best.ckpt, labels.txt, and a model card written by
training's own `write_model_card` with this machine's arithmetic.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from runtime.clip import TorchRunner
from torch_tsm.card import read_card
from torch_tsm.clips import held_out_clips
from torch_tsm.model import load_model
from torch_tsm.train import data_module, parse_args, write_model_card
from torch_tsm.train import main as train

FILE = Path(__file__).parent / "data" / "causal-demo.pt"
# The demo's live model (the causal shift, trained on clips and on continuous video, so that it serves the
# streaming and live tests too), without the colour jitter and the blur (they cost clean accuracy, and the
# tests' videos are clean). It trains the whole of its learning-rate schedule (no early stop: the last, slow
# epochs widen the margins that uint8 needs), keeps its best checkpoint by val_score (clip and frame
# accuracy), and is kept only if every one of its 200 validation clips is right by MIN_MARGIN.
RECIPE = [
    "--shift",
    "causal",
    "--stream-training",
    "--synthetic-clips",
    "1600",
    "200",
    "--no-photometric",
    "--no-blur",
    "--max-epochs",
    "12",
    "--until-accuracy",
    "off",
]
# The smallest margin of the right class over the best other one, in logits, on the 200 validation clips that
# the uint8 gates stand on (tests/test_fixture_model.py): a model that has not learnt a pair has margins near 0.
MIN_MARGIN = 1.0


def unpack(folder: Path) -> Path:
    """FILE as the run folder torch_tsm.train would have written: best.ckpt, labels.txt, model_card.json."""
    saved = torch.load(FILE, map_location="cpu", weights_only=True)
    folder.mkdir(parents=True)
    torch.save({"hyper_parameters": saved["hyper_parameters"], "state_dict": saved["state_dict"]}, folder / "best.ckpt")
    args = parse_args([*saved["recipe"], "--output", str(folder)])
    training = saved["training"]
    write_model_card(folder, args, data_module(args), training["seconds"], training["steps"], training["epochs"])
    return folder


def validation_margins(run: Path) -> np.ndarray:
    """(200,) per validation clip of a run folder: the right class's logit minus the best other class's, with
    this machine's arithmetic (negative: the clip is decided wrong)."""
    card = read_card(run)
    clips, labels = held_out_clips(card, card["validation_clips"])
    logits = TorchRunner(load_model(run / "best.ckpt"))(clips)
    rows = np.arange(len(labels))
    right = logits[rows, labels]
    logits[rows, labels] = -np.inf
    return right - logits.max(axis=1)


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        run = train([*RECIPE, "--output", str(Path(scratch) / "run")])
        card = read_card(run)
        margin = validation_margins(run).min()
        if margin < MIN_MARGIN:
            sys.exit(
                f"the run's smallest validation margin is {margin:.2f} logits (at least {MIN_MARGIN} needed; validation accuracy "
                f"{card['validation']['accuracy']:.1%}) after {card['training']['epochs']} epochs; {FILE} is left as it was"
            )
        checkpoint = torch.load(run / "best.ckpt", map_location="cpu", weights_only=True)
    FILE.parent.mkdir(exist_ok=True)
    torch.save(
        {
            "recipe": RECIPE,
            "hyper_parameters": checkpoint["hyper_parameters"],
            "state_dict": checkpoint["state_dict"],
            "training": card["training"] | {"validation": card["validation"]},
        },
        FILE,
    )
    print(f"wrote {FILE} ({FILE.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
