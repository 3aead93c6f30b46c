"""The parity contract (docs/parity.md): every stage computes what the PyTorch model computes.

`pytest -m parity` runs this file alone; `make test` runs it too, on small models. Bounds come from
conversion.parity, their one definition; the first tests below pin them to the contract's numbers and
show the gate closing on crafted logits just over each bound (and staying open just under it).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conversion import parity
from conversion.errors import ConversionError
from conversion.parity import STREAMING_FILES
from conversion.tflite import to_float32_tflite
from conversion.to_tflite import _onnx_route, convert
from runtime.clip import KerasRunner, TFLiteRunner, TorchRunner
from runtime.models import open_model
from runtime.stream import StreamingTFLiteRunner
from tests.conftest import smooth_clips, with_real_batchnorm_statistics
from tf_reference import from_torch_model
from torch_tsm.camera import CAMERA_CHANGES
from torch_tsm.card import read_card
from torch_tsm.clips import class_balanced_picks, data_module, held_out_clips, load_clips
from torch_tsm.frames import FrameTransform
from torch_tsm.model import build_model, load_model

pytestmark = pytest.mark.parity


# --- the gate itself, on crafted logits ------------------------------------------------------------

CLIPS, CLASSES = parity.UINT8_MIN_CLIPS, 10
WRONG = 20  # the crafted reference is wrong on its first 20 clips: accuracy 90%


def test_bounds_are_the_contracts_numbers():
    # docs/parity.md (Bounds), written out here rather than read from parity.py
    assert parity.FLOAT_MAX_ABS_NORMALIZED == 1e-4
    assert parity.FLOAT_TOP1_AGREE == 1.0
    assert parity.UINT8_TOP1_AGREE == 0.98
    assert parity.UINT8_ACCURACY_POINTS == 1.0
    assert parity.UINT8_MIN_CLIPS == 200
    assert parity.CHANGED_TOP1_AGREE == 0.97  # issue 14: under each camera change


def crafted_reference() -> tuple[np.ndarray, np.ndarray]:
    # -> reference logits (200, 10) with |logit| <= 10 and a top-1 margin of at least 5, and labels
    # that it gets right on all but the first WRONG clips
    rng = np.random.default_rng(0)
    reference = rng.uniform(-5, 5, (CLIPS, CLASSES))
    top = rng.integers(0, CLASSES, CLIPS)
    reference[np.arange(CLIPS), top] = 10.0
    labels = top.copy()
    labels[:WRONG] = (top[:WRONG] + 1) % CLASSES
    return reference, labels


def moved_top1(logits: np.ndarray, clips: np.ndarray, classes: np.ndarray) -> np.ndarray:
    # a copy whose arg-max on `clips` is `classes` (by a margin of 1)
    moved = logits.copy()
    moved[clips, classes] = logits[clips].max(1) + 1
    return moved


def float_row(reference: np.ndarray, logits: np.ndarray) -> parity.StageParity:
    return parity.measure("tflite-f32", "held-out clips", reference, logits, None, quantized=False)


def uint8_row(reference: np.ndarray, logits: np.ndarray, labels: np.ndarray | None) -> parity.StageParity:
    return parity.measure("tflite-u8", "held-out clips", reference, logits, labels, quantized=True)


@pytest.mark.parametrize("scale", [1.0, 0.05])  # logits up to 10, normalized by 10; up to 0.5, by 1 (not by 0.5)
def test_float_max_abs_just_under_and_just_over_the_bound(scale):
    reference = crafted_reference()[0] * scale
    norm = max(1.0, np.abs(reference).max())
    # One logit that is not the top one, off by just under / just over the bound.
    for factor, verdict in ((0.99, "pass"), (1.01, "FAIL")):
        logits = reference.copy()
        logits[7, reference[7].argmin()] += factor * parity.FLOAT_MAX_ABS_NORMALIZED * norm
        row = float_row(reference, logits)
        assert row.max_abs_normalized == pytest.approx(factor * 1e-4, rel=1e-6)
        assert row.top1_agree == 1.0 and row.verdict == verdict, parity.table([row])


def test_float_stage_fails_on_one_flipped_clip_within_the_max_abs_bound():
    reference = crafted_reference()[0]
    runner_up = int(np.argsort(reference[3])[-2])
    reference[3, runner_up] = reference[3].max() - 1e-6  # a near tie
    logits = reference.copy()
    logits[3, runner_up] += 2e-6  # far inside the max_abs bound, but the arg-max moves
    row = float_row(reference, logits)
    assert row.max_abs_normalized < parity.FLOAT_MAX_ABS_NORMALIZED / 100
    assert row.top1_agree == (CLIPS - 1) / CLIPS and row.verdict == "FAIL", parity.table([row])


@pytest.mark.parametrize("flipped, verdict", [(4, "pass"), (5, "FAIL")])  # 196/200 = 98% agree; 195/200
def test_uint8_top1_agreement_at_and_below_98_percent(flipped, verdict):
    reference, labels = crafted_reference()
    # Clips the reference gets wrong, moved to another wrong class: agreement drops, accuracy does not.
    clips = np.arange(flipped)
    logits = moved_top1(reference, clips, (reference[clips].argmax(1) + 2) % CLASSES)
    row = uint8_row(reference, logits, labels)
    assert row.accuracy == row.torch_accuracy == 0.9
    assert row.top1_agree == (CLIPS - flipped) / CLIPS and row.verdict == verdict, parity.table([row])


@pytest.mark.parametrize("direction", ["worse", "better"])  # within 1 point either way
@pytest.mark.parametrize("flipped, verdict", [(2, "pass"), (3, "FAIL")])  # 2 of 200 clips = 1 point exactly; 3 = 1.5
def test_uint8_accuracy_within_one_point(direction, flipped, verdict):
    reference, labels = crafted_reference()
    if direction == "worse":  # right clips made wrong
        clips = np.arange(WRONG, WRONG + flipped)
        logits = moved_top1(reference, clips, (labels[clips] + 2) % CLASSES)
    else:  # wrong clips made right
        clips = np.arange(flipped)
        logits = moved_top1(reference, clips, labels[clips])
    row = uint8_row(reference, logits, labels)
    assert row.top1_agree == (CLIPS - flipped) / CLIPS >= parity.UINT8_TOP1_AGREE  # only the accuracy bound is at stake
    assert abs(row.accuracy - row.torch_accuracy) == pytest.approx(flipped / CLIPS)
    assert row.verdict == verdict, parity.table([row])


def test_uint8_is_judged_on_200_labelled_clips_only():
    reference, labels = crafted_reference()
    assert uint8_row(reference, reference, labels).verdict == "pass"
    assert uint8_row(reference[:-1], reference[:-1], labels[:-1]).verdict == "not judged"  # 199 clips
    assert uint8_row(reference, reference, None).verdict == "not judged"  # no labels, e.g. random pixels
    worst = moved_top1(reference, np.arange(CLIPS), (reference.argmax(1) + 1) % CLASSES)
    assert uint8_row(reference[:-1], worst[:-1], labels[:-1]).verdict == "not judged"  # however bad


def test_parity_clips_cover_every_class():
    # The built-in clips cycle through the 10 classes: 200 evenly spaced clips of 400 are the even classes only.
    picks = class_balanced_picks([i % 10 for i in range(400)], 200)
    assert len(picks) == 200 and np.bincount(picks % 10).tolist() == [20] * 10
    assert class_balanced_picks([0] * 5 + [1] * 100, 20).tolist() == list(range(20))  # a small class whole, the rest from the big one


def test_stage_checker_stops_at_the_stage_that_misses():
    reference, labels = crafted_reference()
    clips = np.arange(CLIPS)  # the crafted "runners" look their logits up by clip index

    def runner(offset: float):
        def run(batch: np.ndarray) -> np.ndarray:
            logits = reference[batch].copy()
            logits[:, 0] += offset
            return logits

        return run

    checker = parity.StageChecker(lambda batch: reference[batch], clips, labels, clips[:8])
    near = 0.99 * parity.FLOAT_MAX_ABS_NORMALIZED * 10  # |reference| <= 10: just under the bound
    checker.check("onnx", runner(near))
    with pytest.raises(ConversionError, match=r"(?s)savedmodel does not match PyTorch:.*savedmodel\s+held-out clips.*FAIL"):
        checker.check("savedmodel", runner(1.02 * near / 0.99))
    assert [(row.stage, row.verdict) for row in checker.rows] == [("onnx", "pass")] * 2 + [("savedmodel", "FAIL")] * 2


# --- every stage on the session's trained model ----------------------------------------------------


def edge_clips(num_segments: int, size: int) -> np.ndarray:
    # -> (3, T, S, S, 3): all black, all saturated, and black frames alternating with saturated ones
    black = np.zeros((num_segments, size, size, 3), np.uint8)
    white = np.full_like(black, 255)
    flicker = np.where((np.arange(num_segments) % 2 == 0)[:, None, None, None], black, white)
    return np.stack([black, white, flicker])


@pytest.fixture(scope="module")
def trained_stages(converted, trained_run):
    model = load_model(trained_run / "best.ckpt")
    runners = {stage: open_model(converted / name) for stage, name in parity.STAGE_FILES.items()}
    runners["keras"] = KerasRunner(from_torch_model(model, image_size=model.image_size))
    return model, runners


def expected_verdict(stage: str, inputs: str) -> str:
    # uint8 is judged on the >= 200 labelled held-out clips; on 8 unlabelled random-pixel clips, far
    # outside the calibrated ranges, it is reported and not judged (docs/parity.md). Float: everywhere.
    return "not judged" if stage.endswith("u8") and inputs == "random pixels" else "pass"


def test_every_stage_on_held_out_clips_and_random_pixels(parity_report):
    # The session's one run of python -m conversion.parity over every converted model (conftest): every
    # stage on held-out clips and random pixels, every uint8 stage also under each camera change.
    code, printed, rows = parity_report
    streaming_stages = {stage for files in STREAMING_FILES.values() for stage in files}
    assert {row["stage"] for row in rows} == {*parity.STAGE_FILES, "keras", *streaming_stages}
    for row in rows:
        assert row["clips"] == (8 if row["inputs"] == parity.RANDOM_PIXELS else parity.UINT8_MIN_CLIPS)
        assert row["verdict"] == expected_verdict(row["stage"], row["inputs"]), printed
        if row["inputs"] == parity.HELD_OUT:
            assert row["torch_accuracy"] > 0.9  # trained: parity means something
    assert code == 0 and "FAIL" not in printed


def test_camera_changes_change_pixels_alike_for_every_frame():
    clips = smooth_clips(2, 4, 32).permute(0, 1, 3, 4, 2).round().clamp(0, 255).to(torch.uint8).numpy()
    for name, change in CAMERA_CHANGES.items():
        changed = change(clips)
        assert changed.shape == clips.shape and changed.dtype == np.uint8
        assert np.abs(changed.astype(int) - clips).mean() > 0.1, name  # smooth images: blur changes them least
    assert np.array_equal(CAMERA_CHANGES["dark x0.6"](clips), np.rint(clips * 0.6).astype(np.uint8))
    frames = np.repeat(clips[:, :1], 4, axis=1)  # four equal frames stay equal (the noise aside)
    for name, change in CAMERA_CHANGES.items():
        if name != "noise sigma 8":
            assert (change(frames) == change(frames)[:, :1]).all(), name


def test_letterbox_change_is_what_our_pipeline_makes_of_a_4_3_camera():
    # A 4:3 camera of the same width sees the square scene's middle 48 of 64 rows; evaluation letterboxes
    # its frames back to 64 x 64 (FrameTransform), which is what the change must give.
    scene = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    camera_frame = scene[8:56]
    expected = FrameTransform(64)([camera_frame], None)[0]
    assert np.array_equal(CAMERA_CHANGES["letterbox 4:3"](scene[None, None])[0, 0], expected)


# The camera-change rows of the uint8 stages, measured on the session's model. The bound is not asserted:
# this model was trained without the colour jitter, so it is lost in the dark itself (33% accuracy at
# x0.6), its margins vanish, and its uint8 models agree with it on 92-95% of the darkened clips; the
# demo model, trained with the jitter, passes every row (docs/parity.md).
def test_camera_changes_are_measured_for_every_uint8_stage(trained_stages, trained_run):
    model, runners = trained_stages
    clips, labels = held_out_clips(read_card(trained_run), 40)
    quantized = {stage: runner for stage, runner in runners.items() if stage.endswith("u8")}
    rows = parity.check_stages(quantized, TorchRunner(model), clips, labels, clips[:1], CAMERA_CHANGES)
    changed = [row for row in rows if row.inputs in CAMERA_CHANGES]
    assert {(row.stage, row.inputs) for row in changed} == {(stage, name) for stage in quantized for name in CAMERA_CHANGES}
    for row in changed:
        assert row.clips == 40 and row.accuracy is not None and row.verdict == "not judged"  # judged on 200 clips
        assert row.torch_accuracy == (TorchRunner(model)(CAMERA_CHANGES[row.inputs](clips)).argmax(1) == labels).mean()


def test_float_stages_on_black_and_saturated_frames(trained_stages):
    # Three unlabelled clips: the uint8 stages are not judged on them (the contract), so not run.
    model, runners = trained_stages
    clips = edge_clips(8, 64)
    reference = TorchRunner(model)(clips)
    for stage, runner in runners.items():
        if not stage.endswith("u8"):
            row = parity.measure(stage, "edge clips", reference, runner(clips), None, quantized=False)
            assert row.verdict == "pass", parity.table([row])


def test_float_streaming_stages_on_black_and_saturated_frames(trained_stages, streaming_converted):
    model, _ = trained_stages
    clips = edge_clips(8, 64)
    reference = TorchRunner(model)(clips)
    for files in STREAMING_FILES.values():
        for stage, name in files.items():
            if not stage.endswith("u8"):
                row = parity.measure(stage, "edge clips", reference, open_model(streaming_converted / name)(clips), None, quantized=False)
                assert row.verdict == "pass", parity.table([row])


def test_streaming_frames_of_another_shape_are_a_clear_error(streaming_converted):
    runner = StreamingTFLiteRunner(streaming_converted / STREAMING_FILES["keras"]["stream-keras-u8"])
    with pytest.raises(ValueError, match=r"takes frames of \(H, W, 3\) = \(64, 64, 3\); got \(64, 48, 3\)"):
        runner(np.zeros((1, 8, 64, 48, 3), np.uint8))


def test_clips_of_another_shape_are_a_clear_error(trained_stages):
    _, runners = trained_stages
    for runner in runners.values():
        with pytest.raises(ValueError, match=r"takes clips of \(T, H, W, 3\) = \(8, 64, 64, 3\)"):
            runner(np.zeros((1, 8, 64, 48, 3), np.uint8))  # non-square
        with pytest.raises(ValueError, match="takes clips"):
            runner(np.zeros((1, 4, 64, 64, 3), np.uint8))  # other frame count


def sensitive_model(shift: str, num_segments: int, width_mult: float = 0.35, image_size: int = 32) -> torch.nn.Module:
    """A random model whose logits depend strongly on its input and on the shift: real BatchNorm
    statistics, and a classifier scaled so that logits are of order 1-10."""
    torch.manual_seed(0)
    model = with_real_batchnorm_statistics(build_model(5, num_segments, width_mult, shift=shift), image_size)
    with torch.no_grad():
        model.classifier[1].weight.mul_(200)
    model.image_size, model.labels = image_size, list("abcde")
    return model


def float_stages(model: torch.nn.Module, folder: Path, calibration: np.ndarray, clips: np.ndarray) -> list[parity.StageParity]:
    """The onnx route's float stages (ONNX, SavedModel, float32 TFLite), each checked as convert()
    checks it, which raises at the first miss; without the uint8 stage, which these models skip (below)."""
    checker = parity.StageChecker(TorchRunner(model), clips, None, parity.random_pixel_clips(8, model.num_segments, model.image_size))
    source = _onnx_route(model, folder, calibration, checker)
    (folder / "model_float32.tflite").write_bytes(to_float32_tflite(source))
    checker.check("tflite-f32", TFLiteRunner(folder / "model_float32.tflite"))
    return checker.rows


# The session's trained model is causal. Its trained weights (real filters and BatchNorm statistics) run
# here under the default shift (bidirectional) and under none on another frame count: the layers are
# the same, the shift holds no weights, and the computation is that shift mode's, so its ONNX, onnx2tf
# and Keras graphs are checked on trained weights without a training run of their own. The float stages
# are judged. uint8 is not (and not made): these weights were not trained for this computation, so their
# margins between classes are small, and a model without the shift cannot have any between the two
# classes of a direction pair (the same frames in another order), whose arg-max is then a coin toss
# that uint8 rounding flips; uint8 is judged on the session's trained model and at full size (docs/parity.md).
@pytest.mark.parametrize("shift, num_segments", [("bidirectional", 8), ("none", 4)])
def test_float_stages_on_trained_weights_with_each_shift_mode(shift, num_segments, trained_run, tmp_path):
    trained, card = load_model(trained_run / "best.ckpt"), read_card(trained_run)
    model = build_model(len(trained.labels), num_segments, card["config"]["width_mult"], shift=shift).eval()
    model.load_state_dict(trained.state_dict())
    model.image_size, model.labels = trained.image_size, trained.labels
    data = data_module({**card["config"], "num_segments": num_segments})
    clips, labels = load_clips(data, "val", 64)
    calibration, _ = load_clips(data, "train", 16)
    reference = TorchRunner(model)(clips)
    assert len(set(reference.argmax(1))) >= 5  # arg-maxes spread over the classes: agreement means something
    rows = float_stages(model, tmp_path, calibration, clips)
    assert [(row.stage, row.verdict) for row in rows] == [
        (stage, "pass") for stage in ("onnx", "savedmodel", "tflite-f32") for _ in range(2)
    ]
    keras_logits = KerasRunner(from_torch_model(model, image_size=model.image_size))(clips)
    assert parity.measure("keras", "held-out clips", reference, keras_logits, labels, False).verdict == "pass"


@pytest.mark.slow
def test_full_size_float_stages(tmp_path):
    """224 px, width 1.0, 8 frames: the deployed size (minutes here; pytest -m slow)."""
    model = sensitive_model("bidirectional", 8, width_mult=1.0, image_size=224)
    clips = smooth_clips(12, 8, 224, seed=7).permute(0, 1, 3, 4, 2).round().clamp(0, 255).to(torch.uint8).numpy()
    figures = convert(model, tmp_path, clips[:8], held_out=(clips, None))
    float_rows = [row for row in figures["parity"] if not row["quantized"]]
    assert {row["stage"] for row in float_rows} == {"onnx", "savedmodel", "tflite-f32"}
    assert all(row["verdict"] == "pass" for row in float_rows), float_rows


# --- python -m conversion.parity ---------------------------------------------------------------------


def test_parity_command_prints_the_table_and_writes_the_card(parity_report, model_folder, trained_run):
    code, printed, rows = parity_report
    assert code == 0
    for row in rows:  # one table line per row, verdict last
        assert any(line.split()[0] == row["stage"] and line.endswith(row["verdict"]) for line in printed.splitlines()[2:])
    card = json.loads((model_folder / "model_card.json").read_text(encoding="utf-8"))
    assert card["parity"] == rows
    training = read_card(trained_run)
    assert {key: card[key] for key in training} == training  # the table is added to the card; nothing else changes


def test_parity_command_exits_1_when_the_model_changed_after_export(trained_run, converted, tmp_path, capsys):
    # The checkpoint gets one weight changed after its ONNX model was exported: class 0's bias + 1,
    # so every clip's class-0 logit moves by exactly 1 and the onnx stage must FAIL, with exit code 1.
    checkpoint = torch.load(trained_run / "best.ckpt", map_location="cpu", weights_only=True)
    checkpoint["state_dict"]["model.classifier.1.bias"][0] += 1.0
    torch.save(checkpoint, tmp_path / "best.ckpt")
    (tmp_path / "model_card.json").write_bytes((trained_run / "model_card.json").read_bytes())
    (tmp_path / "model.onnx").symlink_to(converted / "model.onnx")
    assert parity.main([str(tmp_path), "--clips", "16"]) == 1  # the exit status of python -m conversion.parity
    printed = capsys.readouterr().out
    rows = json.loads((tmp_path / "model_card.json").read_text(encoding="utf-8"))["parity"]
    assert [(row["stage"], row["inputs"], row["verdict"]) for row in rows] == [
        ("onnx", "held-out clips", "FAIL"),
        ("onnx", "random pixels", "FAIL"),
    ]
    assert all(row["max_abs"] == pytest.approx(1.0, abs=1e-4) for row in rows)
    assert [line.split()[-1] for line in printed.splitlines() if line.startswith("onnx ")] == ["FAIL", "FAIL"]
