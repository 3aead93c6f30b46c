import contextlib
import hashlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from torch_tsm.model import MobileNetV2TSM, build_model

# Ops that the shift, written as slices, pads, gathers or transposes, used to add around each shifted block
SLICING_OPS = ("STRIDED_SLICE", "SLICE", "SPLIT", "SPLIT_V", "GATHER", "GATHER_ND", "TRANSPOSE")


def smooth_clips(n: int, t: int, size: int, seed: int = 0) -> torch.Tensor:
    # -> (N, T, 3, S, S) pixels 0..255: smooth random images, so that frames differ after global pooling
    # (white noise pools to the same features in every frame and hides what the shift does)
    coarse = torch.rand(n * t, 3, 4, 4, generator=torch.Generator().manual_seed(seed)) * 255
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear").view(n, t, 3, size, size)


def with_real_batchnorm_statistics(model: MobileNetV2TSM, image_size: int = 32) -> MobileNetV2TSM:
    """Random weights with default BN statistics give near-constant logits that hide any bug; a few
    forward passes in train mode give BatchNorm real statistics, so the shift changes the logits a lot."""
    batchnorms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in batchnorms:
        bn.reset_running_stats()
        bn.momentum = None  # an exact average over the passes below
    model.train()
    with torch.no_grad():
        for seed in range(3):
            model(smooth_clips(4, model.num_segments, image_size, seed=100 + seed))
    for bn in batchnorms:
        bn.momentum = 0.1
    return model.eval()


def training_checkpoint(model: MobileNetV2TSM, labels: list[str] | None = None, image_size: int = 32, **config) -> dict:
    """`model` in the layout torch_tsm.train writes (load_model reads it); `config` overrides its hyper-parameters."""
    hyper_parameters = {
        "labels": labels or [str(i) for i in range(model.num_classes)],
        "num_segments": model.num_segments,
        "width_mult": model.width_mult,
        "shift": model.shift,
        "image_size": image_size,
    }
    return {"hyper_parameters": hyper_parameters | config, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}


def snapshot(folder: Path) -> dict[str, str]:
    # every path under folder -> the sha256 of its bytes ("" for a folder): what a failed conversion must leave alone
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "" for p in sorted(folder.rglob("*"))
    }


@pytest.fixture
def small_model() -> MobileNetV2TSM:
    torch.manual_seed(0)
    return with_real_batchnorm_statistics(build_model(num_classes=5, num_segments=4, width_mult=0.35))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """The demo model with the causal shift, trained once and kept in tests/data/ (tests/fixture_model.py),
    unpacked as a training run folder (best.ckpt, labels.txt, model_card.json): 100% on its 200 validation
    clips, with margins that uint8 keeps, on every machine. Parity on random weights proves nothing and
    uint8 agreement needs real margins, so every conversion test works on this one; being causal, it also
    serves the streaming tests. No test waits for a training run to go well (test_training trains its own)."""
    from tests.fixture_model import unpack

    return unpack(tmp_path_factory.mktemp("trained") / "run")


@pytest.fixture(scope="session")
def converted(trained_run, tmp_path_factory):
    """trained_run converted once by both routes (about 1.5 minutes): model.onnx, saved_model/,
    float32 and uint8 TFLite through onnx2tf, and float32 and uint8 TFLite from the Keras twin."""
    from conversion.to_tflite import main

    output = tmp_path_factory.mktemp("converted")
    with offline():
        for route in ("onnx", "keras"):
            main(["--checkpoint", str(trained_run / "best.ckpt"), "--output", str(output), "--calibration-clips", "100", "--route", route])
    return output


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Any attempt to reach the network fails at once (dead proxies): a conversion must not need it."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            patch.setenv(name, "http://127.0.0.1:9")
        yield


@pytest.fixture(scope="session")
def streaming_converted(trained_run, tmp_path_factory):
    """trained_run converted to streaming float32 and uint8 TFLite models by the command line
    (python -m conversion.to_tflite --streaming), by both routes: about two minutes."""
    from conversion.to_tflite import main

    output = tmp_path_factory.mktemp("streaming")
    with offline():
        for route in ("onnx", "keras"):
            main(
                [
                    "--checkpoint",
                    str(trained_run / "best.ckpt"),
                    "--output",
                    str(output),
                    "--streaming",
                    "--calibration-clips",
                    "48",
                    "--route",
                    route,
                ]
            )
    return output


@pytest.fixture(scope="session")
def model_folder(trained_run, converted, streaming_converted, tmp_path_factory) -> Path:
    """A model folder as training and conversion leave it: the checkpoint, its card, and every converted
    model of both routes, clip and streaming (links to the session's files)."""
    folder = tmp_path_factory.mktemp("model_folder")
    for item in [*converted.iterdir(), *streaming_converted.iterdir()]:
        if item.suffix in (".tflite", ".onnx") or item.name == "saved_model":
            (folder / item.name).symlink_to(item)
    for name in ("best.ckpt", "model_card.json"):
        (folder / name).write_bytes((trained_run / name).read_bytes())
    return folder


@pytest.fixture(scope="session")
def parity_report(model_folder) -> tuple[int, str, list[dict]]:
    """python -m conversion.parity on model_folder, run once for the session (every stage on 200
    held-out clips and random pixels: a minute or two): its exit code, printed table, and card rows."""
    from conversion.parity import main

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main([str(model_folder), "--no-camera-changes"])  # this model is not trained for them (test_parity)
    rows = json.loads((model_folder / "model_card.json").read_text(encoding="utf-8"))["parity"]
    return code, printed.getvalue(), rows


@pytest.fixture(scope="session")
def undeployable_tflite(tmp_path_factory) -> dict[str, Path]:
    """Small TFLite models written by TensorFlow here, so that inspect's refusals are tested in every
    clone: "flex" holds a Select-TF op (FlexErf; the original project's model has FlexRoll, and tf.roll
    now converts to builtins), "float_island" a float SIN between DEQUANTIZE and QUANTIZE inside a uint8
    graph, "dynamic" a dynamic batch and shape arithmetic (SHAPE, PACK). "clean" is the float-island
    graph without the SIN: full-integer and deployable, the control. A few seconds."""
    folder = tmp_path_factory.mktemp("undeployable")
    subprocess.run(
        [sys.executable, "-m", "tests.undeployable", str(folder)], cwd=Path(__file__).parents[1], check=True, capture_output=True
    )
    return {name: folder / f"{name}.tflite" for name in ("flex", "float_island", "clean", "dynamic")}
