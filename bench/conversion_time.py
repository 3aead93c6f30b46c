"""Row 10: wall time from a checkpoint to a checked uint8 TFLite model.

The demo model (torch_tsm.train's defaults: width 0.5, 64 px, 8 frames, 10 classes) is converted afresh
on every run with the CLI's default clip counts (100 calibration, 200 held-out); the issue-size model's
time is the one measured when bench/.work/ was built (its conversion is the cache).

    python -m bench.conversion_time [--quick]
"""

import tempfile
from pathlib import Path

from bench.common import Report, Row, Settings, run_alone
from bench.models import ModelSpec, benchmark_models, convert_checkpoint, write_checkpoint
from torch_tsm.synthetic import SYNTHETIC_LABELS

DEMO = ModelSpec("bidirectional", len(SYNTHETIC_LABELS), 8, 0.5, 64)
TARGET_S = 180


def measure(settings: Settings) -> Report:
    calibration, parity = (16, 16) if settings.quick else (100, 200)
    with tempfile.TemporaryDirectory(prefix="demo-conversion-") as scratch:
        checkpoint = write_checkpoint(DEMO, Path(scratch) / "model.ckpt")
        demo_seconds = convert_checkpoint(checkpoint, Path(scratch) / "converted", calibration, parity)
    command = f"python -m bench.conversion_time{settings.flag}"
    big = benchmark_models(settings)["bidirectional"]
    rows = [
        Row(
            "10a",
            f"conversion, demo model (width 0.5, 64 px), {calibration} calibration + {parity} held-out clips",
            f"{demo_seconds:.0f} s",
            f"<= {TARGET_S} s",
            demo_seconds <= TARGET_S,
            command,
        ),
        Row(
            "10b",
            f"conversion, {settings.label}, {big.calibration_clips} calibration + {big.parity_clips} held-out clips",
            f"{big.seconds:.0f} s (measured when bench/.work/ was built)",
            command=f"rm -rf bench/.work/{big.folder.name} && python -m bench.conversion_time{settings.flag}",
        ),
    ]
    return Report(rows)


def main(argv: list[str] | None = None) -> Report:
    return run_alone("python -m bench.conversion_time", __doc__, measure, argv)


if __name__ == "__main__":
    main()
