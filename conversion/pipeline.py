"""The one conversion pipeline; the clip model (conversion.to_tflite.ClipPlan) and the streaming model
(conversion.streaming.StreamingPlan) are its two plans.

A plan makes its float32 and uint8 TFLite models in a scratch folder inside the output folder, each
stage before them checked against PyTorch (parity.StageChecker). The pipeline then checks that both
models run on a stock LiteRT, the plan's own checks, and both models against PyTorch; it writes
labels.txt and the figures, and only then moves the files into the output folder: a failed
conversion leaves no half-written model. The figures go into the model card under the plan's section,
then the conversion route, and the parity table is printed.
"""

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from conversion.errors import ConversionError
from conversion.inspect import Inspection, inspect_tflite
from conversion.parity import StageChecker, random_pixel_clips, table
from runtime.clip import TorchRunner
from torch_tsm.card import update_card
from torch_tsm.labels import write_labels
from torch_tsm.model import MobileNetV2TSM


class Plan:
    """One model's way to TFLite: which files, how its stages run, what it adds to the checks and figures."""

    section: str  # the model card's section for its figures ("conversion", "streaming"), then the route
    scratch_prefix: str  # its scratch folder's name, inside the output folder
    files: dict[str, str]  # parity stage -> the file it leaves in the output folder, the TFLite models last

    def __init__(self, model: MobileNetV2TSM, calibration: np.ndarray, route: str) -> None:
        self.model, self.calibration, self.route = model, calibration, route

    @property
    def tflite_stages(self) -> tuple[str, str]:
        """The stages of the float32 and the uint8 TFLite model."""
        f32, u8 = (next(stage for stage in self.files if stage.endswith(precision)) for precision in ("f32", "u8"))
        return f32, u8

    def write_tflite(self, staging: Path, checker: StageChecker) -> None:
        """Runs the stages before TFLite, each checked with `checker`, then writes both TFLite models into `staging`."""
        raise NotImplementedError

    def tflite_runner(self, path: Path):
        """A runner of one of its TFLite models, for the parity checks."""
        raise NotImplementedError

    def check_tflite(self, staging: Path) -> None:
        """Checks of its own on the TFLite models in `staging`, beyond deployability and parity; none by default."""

    def figures(self, uint8: Inspection) -> dict:
        """Figures of its own for the model card, beside the pipeline's."""
        return {}


def run_plan(plan: Plan, output_dir: str | Path, held_out: tuple[np.ndarray, np.ndarray | None] | None, keep_failed_uint8: bool) -> dict:
    """Converts by `plan` into `output_dir`; returns the figures added to the model card.

    held_out: (clips, labels or None) to check parity on; the calibration clips when not given.
    keep_failed_uint8: write the models even when the uint8 model misses its parity bounds (every float
    stage must still pass); figures["failed"] then names it.
    """
    started = time.perf_counter()
    output_dir = Path(output_dir)
    model = plan.model
    clips, labels = held_out if held_out is not None else (plan.calibration, None)
    checker = StageChecker(TorchRunner(model), clips, labels, random_pixel_clips(8, model.num_segments, model.image_size))
    f32, u8 = plan.tflite_stages

    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=plan.scratch_prefix, dir=output_dir) as scratch:
        staging = Path(scratch)
        plan.write_tflite(staging, checker)
        inspections = {stage: inspect_tflite(staging / plan.files[stage]) for stage in (f32, u8)}
        for stage, inspection in inspections.items():
            if not inspection.ok:
                raise ConversionError(f"{stage} is not deployable on a stock LiteRT:\n{inspection.report()}")
        plan.check_tflite(staging)
        for stage in (f32, u8):
            checker.check(stage, plan.tflite_runner(staging / plan.files[stage]), stop=not (keep_failed_uint8 and stage == u8))
        write_labels(model.labels, staging / "labels.txt")

        figures = {
            "files": dict(plan.files),
            **plan.figures(inspections[u8]),
            "size_bytes": {stage: _size(staging / file) for stage, file in plan.files.items()},
            "tflite_ops": {stage: dict(inspection.ops.most_common()) for stage, inspection in inspections.items()},
            "parity": [row.as_dict() for row in checker.rows],
            "failed": checker.failed(),
            "seconds": round(time.perf_counter() - started, 1),
        }
        for name in [*plan.files.values(), "labels.txt"]:
            target = output_dir / name
            if target.is_dir():  # a SavedModel folder of an earlier conversion
                shutil.rmtree(target)
            (staging / name).replace(target)
    update_card(output_dir, model.labels, figures, plan.section, plan.route)
    print(table(checker.rows))
    return figures


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
