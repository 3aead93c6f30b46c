"""The parity contract (docs/parity.md): measures, bounds, the stage table, and its CLI.

    python -m conversion.parity MODEL_DIR

runs every converted model found in MODEL_DIR (clip and streaming) against the PyTorch checkpoint on held-out clips and
random pixels, and every uint8 model on the held-out clips under camera-like changes (torch_tsm.camera),
prints the stage-by-measure table, writes it into model_card.json and exits non-zero when a stage
misses its bound. The bounds below are the only definition of them in the project.
"""

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from conversion.errors import ConversionError
from torch_tsm.errors import UserError

# Float stages: normalized max |logit difference| and arg-max agreement.
FLOAT_MAX_ABS_NORMALIZED = 1e-4
FLOAT_TOP1_AGREE = 1.0
# Quantized stages: arg-max agreement and accuracy, judged only on enough held-out clips.
UINT8_TOP1_AGREE = 0.98
UINT8_ACCURACY_POINTS = 1.0
UINT8_MIN_CLIPS = 200
# Quantized stages on the held-out clips under each camera change: the uint8 accuracy bound, and
# arg-max agreement a point lower (a change can move clips onto the decision boundary).
CHANGED_TOP1_AGREE = 0.97
HELD_OUT, RANDOM_PIXELS = "held-out clips", "random pixels"

STAGE_FILES = {  # stage -> file in a converted model folder
    "onnx": "model.onnx",
    "savedmodel": "saved_model",
    "tflite-f32": "model_float32.tflite",
    "tflite-u8": "model_uint8.tflite",
    "keras-tflite-f32": "model_keras_float32.tflite",
    "keras-tflite-u8": "model_keras_uint8.tflite",
}
STREAMING_FILES = {  # conversion route -> {stage: file} of the streaming models (conversion.streaming)
    "onnx": {
        "stream-onnx": "model_streaming.onnx",
        "stream-f32": "model_streaming_float32.tflite",
        "stream-u8": "model_streaming_uint8.tflite",
    },
    "keras": {"stream-keras-f32": "model_keras_streaming_float32.tflite", "stream-keras-u8": "model_keras_streaming_uint8.tflite"},
}


def tflite_stage(route: str, precision: str) -> str:
    """The parity stage of a conversion route's "f32" or "u8" streaming TFLite model (its key in STREAMING_FILES[route])."""
    (stage,) = [stage for stage in STREAMING_FILES[route] if stage.endswith(precision)]
    return stage


@dataclass
class StageParity:
    stage: str
    inputs: str  # HELD_OUT, RANDOM_PIXELS, or a camera change of the held-out clips (torch_tsm.camera)
    clips: int
    max_abs: float
    max_abs_normalized: float
    top1_agree: float
    accuracy: float | None
    torch_accuracy: float | None
    quantized: bool

    @property
    def verdict(self) -> str:
        """'pass', 'FAIL' or 'not judged' (uint8 accuracy bounds need enough labelled clips)."""
        if not self.quantized:
            ok = self.max_abs_normalized <= FLOAT_MAX_ABS_NORMALIZED and self.top1_agree >= FLOAT_TOP1_AGREE
            return "pass" if ok else "FAIL"
        if self.accuracy is None or self.clips < UINT8_MIN_CLIPS:
            return "not judged"
        # In points rounded far below one clip's worth (100 / clips): exactly 1 point (2 of 200 clips) is
        # within the bound, and float rounding (|0.89 - 0.9| * 100 = 1.0000000000000009) must not say otherwise.
        points = round(abs(self.accuracy - self.torch_accuracy) * 100, 9)
        agree = UINT8_TOP1_AGREE if self.inputs == HELD_OUT else CHANGED_TOP1_AGREE
        ok = self.top1_agree >= agree and points <= UINT8_ACCURACY_POINTS
        return "pass" if ok else "FAIL"

    def as_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict}


def measure(stage: str, inputs: str, reference: np.ndarray, logits: np.ndarray, labels: np.ndarray | None, quantized: bool) -> StageParity:
    """reference/logits (M, K): the PyTorch model's and the stage's logits on the same clips."""
    max_abs = float(np.abs(logits - reference).max())
    accuracy = torch_accuracy = None
    if labels is not None:
        accuracy = float((logits.argmax(1) == labels).mean())
        torch_accuracy = float((reference.argmax(1) == labels).mean())
    return StageParity(
        stage,
        inputs,
        len(reference),
        max_abs,
        max_abs / max(1.0, float(np.abs(reference).max())),
        float((logits.argmax(1) == reference.argmax(1)).mean()),
        accuracy,
        torch_accuracy,
        quantized,
    )


def random_pixel_clips(count: int, num_segments: int, image_size: int, seed: int = 0) -> np.ndarray:
    # -> (count, T, S, S, 3) uint8, the second input family besides real clips
    return np.random.default_rng(seed).integers(0, 256, (count, num_segments, image_size, image_size, 3), dtype=np.uint8)


def table(rows: list[StageParity]) -> str:
    header = (
        f"{'stage':<18}{'inputs':<17}{'clips':>6}{'max_abs':>11}{'normalized':>12}{'top1_agree':>12}{'accuracy':>10}{'torch':>8}  verdict"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        accuracy = f"{row.accuracy:>10.4f}{row.torch_accuracy:>8.4f}" if row.accuracy is not None else f"{'-':>10}{'-':>8}"
        lines.append(
            f"{row.stage:<18}{row.inputs:<17}{row.clips:>6}{row.max_abs:>11.2e}{row.max_abs_normalized:>12.2e}{row.top1_agree:>12.4f}{accuracy}  {row.verdict}"
        )
    return "\n".join(lines)


def check_stages(
    runners: dict, reference_runner, clips: np.ndarray, labels: np.ndarray | None, random_clips: np.ndarray, changes: dict | None = None
) -> list[StageParity]:
    """runners: stage -> runner; every stage on the held-out clips and on random pixels, and the
    quantized stages on the held-out clips under each of `changes` (name -> change of clips)."""
    quantized = {stage: runner for stage, runner in runners.items() if stage.endswith("u8")}
    families = [(HELD_OUT, clips, runners), (RANDOM_PIXELS, random_clips, runners)]
    families += [(name, change(clips), quantized) for name, change in (changes or {}).items()]
    rows = []
    for inputs, batch, family in families:
        reference = reference_runner(batch)
        rows += measure_stages(family, inputs, batch, reference, None if inputs == RANDOM_PIXELS else labels)
    return rows


def measure_stages(runners: dict, inputs: str, clips: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> list[StageParity]:
    return [measure(stage, inputs, reference, runner(clips), labels, stage.endswith("u8")) for stage, runner in runners.items()]


class StageChecker:
    """Checks each stage against PyTorch on held-out clips and random pixels; stops at the first miss."""

    def __init__(self, reference, clips: np.ndarray, labels: np.ndarray | None, random_clips: np.ndarray) -> None:
        self.clips, self.labels, self.random_clips = clips, labels, random_clips
        # The PyTorch logits, computed once for every stage's check
        self.reference = {HELD_OUT: reference(clips), RANDOM_PIXELS: reference(random_clips)}
        self.rows: list[StageParity] = []

    def check(self, stage: str, runner, stop: bool = True) -> None:
        """stop=False records a miss without raising (--keep-failed-uint8)."""
        new = measure_stages({stage: runner}, HELD_OUT, self.clips, self.reference[HELD_OUT], self.labels)
        new += measure_stages({stage: runner}, RANDOM_PIXELS, self.random_clips, self.reference[RANDOM_PIXELS], None)
        self.rows.extend(new)
        if stop and any(row.verdict == "FAIL" for row in new):
            raise ConversionError(f"{stage} does not match PyTorch:\n{table(new)}")

    def failed(self) -> list[str]:
        return sorted({row.stage for row in self.rows if row.verdict == "FAIL"})


def main(argv: list[str] | None = None) -> int:
    from torch_tsm.cli import add_verbose_flag, setup, user_errors

    parser = argparse.ArgumentParser(
        prog="python -m conversion.parity", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir", type=Path, help="a trained and converted model folder (models/<run>)")
    parser.add_argument("--clips", type=int, default=UINT8_MIN_CLIPS, help="held-out clips to compare on")
    parser.add_argument(
        "--camera-changes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the uint8 models on the held-out clips under each camera change (torch_tsm.camera)",
    )
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    setup(args.verbose, tensorflow=True)  # before the runners below load TensorFlow
    with user_errors(args.verbose):
        return check_model_dir(args.model_dir, args.clips, args.camera_changes)


def check_model_dir(model_dir: Path, clips_count: int, camera_changes: bool = True) -> int:
    """The parity table of every converted model in a model folder, stored in its card; the exit status."""
    from runtime.clip import KerasRunner
    from runtime.models import open_model
    from torch_tsm.camera import CAMERA_CHANGES
    from torch_tsm.card import read_card, write_card
    from torch_tsm.clips import held_out_clips

    card = read_card(model_dir)
    checkpoint = model_dir / card.get("checkpoint", "best.ckpt")
    torch_runner = open_model(checkpoint)
    model = torch_runner.model
    # each file as the kind its name promises: a clip model, or a streaming model
    named = [(STAGE_FILES, False), *((files, True) for files in STREAMING_FILES.values())]
    runners = {
        stage: open_model(model_dir / name, streaming)
        for files, streaming in named
        for stage, name in files.items()
        if (model_dir / name).exists()
    }
    if any(stage.startswith("keras") for stage in runners):
        from tf_reference import from_torch_model

        runners["keras"] = KerasRunner(from_torch_model(model, image_size=model.image_size))
    if not runners:
        raise UserError(f"{model_dir}: no converted model; run python -m conversion.to_tflite --checkpoint {checkpoint}")
    clips, labels = held_out_clips(card, clips_count)
    changes = CAMERA_CHANGES if camera_changes else None
    rows = check_stages(runners, torch_runner, clips, labels, random_pixel_clips(8, model.num_segments, model.image_size), changes)
    print(table(rows))
    card["parity"] = [row.as_dict() for row in rows]
    write_card(model_dir, card)
    return 1 if any(row.verdict == "FAIL" for row in rows) else 0


if __name__ == "__main__":
    from torch_tsm.cli import run

    sys.exit(run(main))
