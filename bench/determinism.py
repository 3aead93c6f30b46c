"""python -m bench.determinism: which settings change a training run's weights, bit for bit.

One short run of the demo model (64 px, width 0.5, 96 clips, one epoch: 8 AdamW steps) is trained twice
with the same seed and settings, then once with each setting changed: the DataLoader's worker count, the
threads of PyTorch, and the instruction sets that each of PyTorch's CPU libraries may use (ATen's own
kernels, oneDNN's convolutions, MKL's matrix products). Each run's weights are compared with the first
run's, every tensor bit for bit. What changes them here is what makes two machines train differently.
The training clips themselves (drawn, rendered and augmented with NumPy and OpenCV) are compared too,
with those libraries held to narrower instruction sets.
"""

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bench.common import machine, markdown_table
from torch_tsm.datamodule import ClipDataModule

RUN = ["--synthetic-clips", "96", "32", "--max-epochs", "1", "--until-accuracy", "off"]
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
# (what is changed, extra training flags, environment)
VARIANTS: list[tuple[str, list[str], dict[str, str]]] = [
    ("nothing (the same command again)", [], {}),
    ("DataLoader workers 2 -> 0", ["--num-workers", "0"], {}),
    ("DataLoader workers 2 -> 1", ["--num-workers", "1"], {}),
    ("PyTorch threads 2 -> 1 (OMP_NUM_THREADS=1)", [], {"OMP_NUM_THREADS": "1"}),
    ("ATen kernels held to AVX2 (ATEN_CPU_CAPABILITY=avx2)", [], {"ATEN_CPU_CAPABILITY": "avx2"}),
    ("oneDNN held to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2)", [], {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    ("MKL held to AVX2 (MKL_ENABLE_INSTRUCTIONS=AVX2)", [], {"MKL_ENABLE_INSTRUCTIONS": "AVX2"}),
    ("all three held to AVX2", [], AVX2),
]


# (what is changed, environment) for the clips: NumPy's and OpenCV's run-time dispatch
CLIP_VARIANTS: list[tuple[str, dict[str, str]]] = [
    ("nothing", {}),
    ("NumPy without AVX-512 (NPY_DISABLE_CPU_FEATURES)", {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}),
    ("OpenCV without AVX2, FMA and AVX (OPENCV_CPU_DISABLE)", {"OPENCV_CPU_DISABLE": "AVX2,FMA3,AVX,FP16"}),
]


def clips_digest() -> str:
    """sha256 of 48 training clips of epoch 1 (colour jitter and blur on, as in the demo) and 48 validation clips."""
    data, digest = ClipDataModule(num_workers=0), hashlib.sha256()
    for split, train in (("train", True), ("val", False)):
        dataset = data.dataset(split, train=train)
        dataset.set_epoch(1)
        for index in range(48):
            clip, label = dataset[index]
            digest.update(clip.numpy().tobytes() + bytes([label]))
    return digest.hexdigest()


def clips_digest_with(environment: dict[str, str]) -> str:
    command = [sys.executable, "-m", "bench.determinism", "--clips-digest"]
    return subprocess.run(command, env=os.environ | environment, check=True, capture_output=True, text=True).stdout.strip()


def train(output: Path, flags: list[str], environment: dict[str, str]) -> dict[str, torch.Tensor]:
    command = [sys.executable, "-m", "torch_tsm.train", "--output", str(output), "--num-workers", "2", *RUN, *flags]
    subprocess.run(command, env=os.environ | {"OMP_WAIT_POLICY": "passive"} | environment, check=True, capture_output=True)
    return torch.load(output / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def compare(reference: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> tuple[int, float]:
    """How many tensors differ in any bit, and the largest absolute difference in one of them."""
    differing = [name for name in reference if not torch.equal(reference[name], weights[name])]
    largest = max(((reference[n].float() - weights[n].float()).abs().max().item() for n in differing), default=0.0)
    return len(differing), largest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.determinism", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--clips-digest", action="store_true", help="print the digest of the training clips and exit (run by the comparison)"
    )
    if parser.parse_args(argv).clips_digest:
        print(clips_digest())
        return
    digests = [(change, clips_digest_with(environment)) for change, environment in CLIP_VARIANTS]
    print(
        markdown_table(
            ["clips, changed", "bitwise equal"], [[change, "yes" if digest == digests[0][1] else "no"] for change, digest in digests]
        )
        + "\n"
    )
    with tempfile.TemporaryDirectory() as folder:
        reference = train(Path(folder) / "reference", [], {})
        rows = []
        for index, (change, flags, environment) in enumerate(VARIANTS):
            differing, largest = compare(reference, train(Path(folder) / f"run{index}", flags, environment))
            rows.append([change, "yes" if differing == 0 else "no", f"{differing} of {len(reference)}", f"{largest:.2e}"])
    print(markdown_table(["changed from the first run", "bitwise equal", "tensors that differ", "largest difference"], rows))
    print(f"\nCPU flags: {machine()['vector extensions']}")


if __name__ == "__main__":
    main()
