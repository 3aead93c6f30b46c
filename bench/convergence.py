"""python -m bench.convergence: do our training recipes reach a convertible model on every CPU?

Floating-point sums come out differently on each CPU's kernels (AVX2, AVX-512, AMX), so one seed trains
differently from one machine to the next. This trains each recipe with several seeds, twice each: with
the machine's own instruction sets, and held to AVX2 (ATen, oneDNN and MKL, as `bench.determinism`
finds they must all be); then converts each model (onnx route, 100 calibration clips) and reads the
uint8 model's agreement with PyTorch on the held-out clips, which the conversion's gate judges
(conversion.parity: >= 98% and accuracy within 1 point). Prints a markdown table (docs/reproducibility.md). About 13 minutes a demo cell and 14 a fixture cell on 2 cores.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import markdown_table
from bench.determinism import AVX2
from tests.fixture_model import RECIPE as FIXTURE_RECIPE
from tests.test_training import LEARNING_RECIPE
from torch_tsm.card import read_card

# name -> (training flags, converted?)
RECIPES: dict[str, tuple[list[str], bool]] = {
    "demo": ([], True),  # make demo: the defaults
    "fixture": (FIXTURE_RECIPE, True),  # the tests' checked-in model (tests/fixture_model.py)
    "learns": (LEARNING_RECIPE, False),  # test_training.py's short run
}
INSTRUCTION_SETS = {"own": {}, "AVX2": AVX2}


def cell(recipe: str, seed: int, instructions: str, folder: Path) -> list[str]:
    flags, converted = RECIPES[recipe]
    environment = os.environ | {"OMP_WAIT_POLICY": "passive"} | INSTRUCTION_SETS[instructions]
    run = folder / f"{recipe}-{seed}-{instructions}"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "torch_tsm.train", *flags, "--seed", str(seed), "--output", str(run)],
        env=environment,
        check=True,
        capture_output=True,
    )
    seconds = time.perf_counter() - started
    if converted:
        # --keep-failed-uint8: a uint8 model outside its bounds is still measured (and the exit status is 1)
        subprocess.run(
            [sys.executable, "-m", "conversion.to_tflite", "--checkpoint", str(run / "best.ckpt"), "--keep-failed-uint8"],
            env=environment,
            capture_output=True,
        )
    card = read_card(run)  # training's figures, and conversion's
    agreement = "not converted"
    if converted:
        row = next(row for row in card["conversion"]["onnx"]["parity"] if row["stage"] == "tflite-u8" and row["inputs"] == "held-out clips")
        agreement = f"{row['top1_agree']:.1%}, {row['accuracy']:.1%} vs {row['torch_accuracy']:.1%} ({row['verdict']})"
    validation = card["validation"]
    return [
        recipe,
        str(seed),
        instructions,
        f"{card['training']['epochs']} ({seconds:.0f} s)",
        f"{validation['accuracy']:.1%}",
        f"{validation['direction_pair_accuracy']:.1%}",
        agreement,
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.convergence", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args(argv)
    header = [
        "recipe",
        "seed",
        "instruction sets",
        "epochs (training time)",
        "accuracy",
        "direction pairs",
        "uint8: agreement, accuracy vs PyTorch (verdict)",
    ]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for recipe in args.recipes:
            for seed in args.seeds:
                for instructions in INSTRUCTION_SETS:
                    rows.append(cell(recipe, seed, instructions, Path(folder)))
                    print(" | ".join(rows[-1]), file=sys.stderr, flush=True)  # progress: a cell is minutes
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
