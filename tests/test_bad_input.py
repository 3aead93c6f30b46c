"""Bad input, command by command: one line `error: <file>: <what is wrong>`, exit 2, and nothing half-written.

Tables: adding a case is one line. The files are tiny and made once per module (a 32 px, width-0.35
model of 5 classes and 4 frames; TFLite and SavedModel files from a one-op tf.function), so the whole
file runs in about a minute; it uses none of the trained session fixtures.
"""

import errno
import json
import os
import re
import shlex
import signal
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import training_checkpoint
from torch_tsm.cli import run
from torch_tsm.errors import UserError
from torch_tsm.model import build_model

CLASSES = ["a", "b", "c", "d", "e"]
SEGMENTS, SIZE, WIDTH = 4, 32, 0.35
REPO = Path(__file__).resolve().parents[1]


# --- the files ------------------------------------------------------------------------------------


def save_checkpoint(path: Path, labels: list[str], width: float = WIDTH, state_width: float = WIDTH, shift: str = "bidirectional") -> Path:
    """The layout torch_tsm.train writes; `state_width` other than `width` gives weights that do not fit the config."""
    torch.manual_seed(0)
    model = build_model(len(labels), SEGMENTS, state_width, shift)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(training_checkpoint(model, labels, SIZE, width_mult=width), path)
    return path


def clip_tflite(size: int, classes: int = len(CLASSES)) -> bytes:
    """A valid clip TFLite model (1, T, S, S, 3) float -> (1, K): the mean colour times a fixed matrix."""
    import tensorflow as tf

    weights = tf.constant(np.linspace(-1, 1, 3 * classes, dtype=np.float32).reshape(3, classes))

    @tf.function(input_signature=[tf.TensorSpec((1, SEGMENTS, size, size, 3), tf.float32)])
    def clip_model(frames):
        return tf.matmul(tf.reduce_mean(frames, axis=(1, 2, 3)) / 255.0, weights)

    return tf.lite.TFLiteConverter.from_concrete_functions([clip_model.get_concrete_function()], clip_model).convert()


def saved_model_without_variables(folder: Path) -> Path:
    import tensorflow as tf

    module = tf.Module()
    module.weights = tf.Variable(tf.ones((3, len(CLASSES))))
    module.serve = tf.function(input_signature=[tf.TensorSpec((SEGMENTS, SIZE, SIZE, 3), tf.float32)])(
        lambda frames: {"logits": tf.matmul(tf.reduce_mean(frames, axis=(0, 1, 2))[None], module.weights)}
    )
    tf.saved_model.save(module, str(folder), signatures=module.serve)
    for part in (folder / "variables").iterdir():
        part.unlink()
    return folder


def write_video(path: Path, frames: list[np.ndarray], fourcc: str = "mp4v", fps: float = 10) -> Path:
    """BGR (or grey, 2-D) frames as a video file."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height), frames[0].ndim == 3)
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def marked_frames(count: int, height: int = SIZE, width: int = SIZE) -> list[np.ndarray]:
    """Dark frames with a white square in the top-left corner (which way is up) and the index in blue."""
    frames = []
    for i in range(count):
        frame = np.full((height, width, 3), 40, np.uint8)
        frame[: height // 4, : width // 4] = 255
        frame[-4:, -4:, 0] = i % 256
        frames.append(frame)
    return frames


def rotated_90(path: Path, source: Path) -> Path:
    """`source` (mp4) with the track's display matrix of a phone held upright: a player turns it 90 degrees clockwise."""
    data = bytearray(source.read_bytes())
    box = data.find(b"tkhd")
    # tkhd: version(1) flags(3), times/ids (20 bytes in version 0, 32 in 1), reserved(8), layer..volume(8), then the matrix
    matrix = box + 4 + 4 + (20 if data[box + 4] == 0 else 32) + 8 + 8
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))
    return path


def written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def truncated(path: Path, source: Path, fraction: float = 0.5) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def random_bytes(path: Path, size: int = 4096, seed: int = 0) -> Path:
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def frames_dataset(root: Path) -> Path:
    """--data frames: two validation clips of 4 JPEG frames, classes a..e."""
    rows = ["video\tlabel\tsplit"]
    for name, label in (("v1", "a"), ("v2", "b")):
        (root / name).mkdir(parents=True)
        for i, frame in enumerate(marked_frames(SEGMENTS)):
            cv2.imwrite(str(root / name / f"{i:05d}.jpg"), frame)
        rows.append(f"{name}\t{label}\tval")
    (root / "annotations.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (root / "labels.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    return root


def beside(folder: Path, model: bytes, labels: bytes | None = None, card: dict | None = None) -> Path:
    """A model folder: model.tflite with labels.txt and model_card.json beside it where given."""
    folder.mkdir(parents=True)
    (folder / "model.tflite").write_bytes(model)
    if labels is not None:
        (folder / "labels.txt").write_bytes(labels)
    if card is not None:
        (folder / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
    return folder / "model.tflite"


def synthetic_card(**config) -> dict:
    return {
        "checkpoint": "best.ckpt",
        "labels": CLASSES,
        "config": {"data": "synthetic", "synthetic_clips": [8, 8], "num_segments": SEGMENTS, "image_size": SIZE, **config},
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Every file the cases name, by name (the {placeholders} of the tables)."""
    from conversion.export_onnx import export_onnx
    from torch_tsm.model import load_model

    root = tmp_path_factory.mktemp("bad_input")
    f: dict[str, Path] = {"missing": root / "nowhere"}
    f["ckpt"] = save_checkpoint(root / "run" / "best.ckpt", CLASSES)
    (root / "run" / "model_card.json").write_text(json.dumps(synthetic_card()), encoding="utf-8")
    f["run"] = root / "run"
    f["ckpt7"] = save_checkpoint(root / "seven" / "best.ckpt", [*CLASSES, "f", "g"])
    f["ckpt_wide"] = save_checkpoint(root / "wide" / "best.ckpt", CLASSES, width=WIDTH, state_width=0.5)
    f["ckpt_trunc"] = truncated(root / "trunc.ckpt", f["ckpt"])
    f["ckpt_random"] = random_bytes(root / "random.ckpt")
    export_onnx(load_model(f["ckpt"]), root / "model.onnx", SIZE)
    f["onnx_trunc"] = truncated(root / "trunc.onnx", root / "model.onnx")
    f["onnx_random"] = random_bytes(root / "random.onnx")
    tflite = clip_tflite(SIZE)
    f["tflite"] = beside(root / "tflite", tflite)
    f["tflite_trunc"] = truncated(root / "trunc.tflite", f["tflite"])
    f["tflite_random"] = random_bytes(root / "random.tflite")
    f["few_labels"] = beside(root / "few", tflite, b"a\nb\nc\n")
    f["many_labels"] = beside(root / "many", tflite, "\n".join([*CLASSES, "f", "g"]).encode())
    f["cp1251_labels"] = beside(root / "cp1251", tflite, "нет\nА\nБ\nВ\nГ\n".encode("cp1251"))
    f["cp1251_txt"] = root / "cp1251" / "labels.txt"
    f["frames"] = frames_dataset(root / "frames")
    f["tflite48"] = beside(
        root / "m48",
        clip_tflite(48),
        card={"config": {"data": "frames", "data_root": str(f["frames"]), "num_segments": SEGMENTS, "image_size": SIZE}},
    )
    f["saved_model"] = saved_model_without_variables(root / "saved_model")
    f["video"] = write_video(root / "video.mp4", marked_frames(12))
    f["text_mp4"] = root / "text.mp4"
    f["text_mp4"].write_text("not a video\n")
    f["a_file"] = root / "a_file"
    f["a_file"].write_text("a file where a folder belongs\n")
    f["tmp"] = root / "out"
    return f


# --- every command, one line and exit 2 -------------------------------------------------------------


def command(name: str) -> Callable:
    from importlib import import_module

    module = {
        "train": "torch_tsm.train",
        "evaluate": "runtime.evaluate",
        "predict": "runtime.predict",
        "prepare": "torch_tsm.prepare",
        "to_tflite": "conversion.to_tflite",
        "inspect": "conversion.inspect",
        "parity": "conversion.parity",
    }[name]
    return import_module(module).main


# (command, arguments with {file} placeholders, what the error line must say after "error: ")
CLI_CASES = [
    ("inspect", "{tflite_trunc}", r"trunc\.tflite: not a readable TFLite model \("),
    ("inspect", "{tflite_random}", r"random\.tflite: not a TFLite model \(no TFL3 identifier\)"),
    ("inspect", "{ckpt}", r"best\.ckpt: not a TFLite model"),
    ("inspect", "{missing}/x.tflite", r"nowhere/x\.tflite: No such file or directory"),
    ("predict", "{video} --model {tflite_trunc}", r"trunc\.tflite: not a readable TFLite model \("),
    ("predict", "{video} --model {tflite_random}", r"random\.tflite: not a readable TFLite model \("),
    ("predict", "{video} --model {onnx_trunc}", r"trunc\.onnx: not a readable ONNX model \("),
    ("predict", "{video} --model {onnx_random}", r"random\.onnx: not a readable ONNX model \("),
    ("predict", "{video} --model {ckpt_trunc}", r"trunc\.ckpt: not a readable checkpoint \(refusing to load"),
    ("predict", "{video} --model {ckpt_random}", r"random\.ckpt: not a readable checkpoint \(refusing to load"),
    ("predict", "{video} --model {ckpt_wide}", r"wide/best\.ckpt: not a readable checkpoint \(Error\(s\) in loading state_dict"),
    ("predict", "{video} --model {missing}.ckpt", r"nowhere\.ckpt: model not found"),
    ("predict", "{video} --model {saved_model}", r"saved_model: not a readable SavedModel \("),
    ("predict", "{video} --model {few_labels}", r"few/labels\.txt: 3 class names for a model of 5 classes"),
    ("predict", "{video} --model {many_labels}", r"many/labels\.txt: 7 class names for a model of 5 classes"),
    ("predict", "{video} --model {cp1251_labels}", r"cp1251/labels\.txt: not UTF-8 text \(byte 0\); save it as UTF-8"),
    ("predict", "{text_mp4} --model {ckpt}", r"text\.mp4: cannot be opened as a video"),
    ("predict", "{missing}.mp4 --model {ckpt}", r"nowhere\.mp4: video not found"),
    ("predict", "--camera 3 --model {ckpt}", r"camera 3 not found or cannot be opened"),
    ("predict", "{video} --model {ckpt} --output {a_file}/annotated.mp4", r"a_file/annotated\.mp4: cannot be written as a video"),
    (
        "evaluate",
        "--model {tflite48} --num-workers 0",
        r"m48/model\.tflite takes clips of 4 frames at 48 px, but the data gives 4 frames at 32 px",
    ),
    (
        "evaluate",
        "--model {ckpt7} --data frames --data-root {frames} --num-workers 0",
        r"seven/best\.ckpt predicts 7 classes, but the frames data has 5 classes",
    ),
    ("evaluate", "--model {tflite_trunc} --data frames --data-root {frames}", r"trunc\.tflite: not a readable TFLite model"),
    (
        "evaluate",
        "--model {ckpt} --data frames --data-root {missing} --num-workers 0",
        r"nowhere/annotations\.tsv: annotation file not found",
    ),
    ("evaluate", "--model {ckpt} --data bukva --num-workers 0", r"best\.ckpt: --data bukva needs --data-root"),
    (
        "evaluate",
        "--model {few_labels} --data frames --data-root {frames} --num-workers 0",
        r"few/labels\.txt: 3 class names for a model of 5 classes",
    ),
    ("evaluate", "--model {ckpt} --labels {cp1251_txt} --data frames --data-root {frames}", r"cp1251/labels\.txt: not UTF-8 text"),
    (
        "evaluate",
        "--model {ckpt} --data frames --data-root {frames} --num-workers 0 --output {a_file}/report",
        r"a_file/report: Not a directory",
    ),
    (
        "train",
        "--data bukva --data-root {missing} --output {tmp}/train --num-workers 0",
        r"nowhere/annotations\.tsv: annotation file not found",
    ),
    ("train", "--data frames --output {tmp}/train2", r"--data-root: --data frames needs --data-root"),
    ("train", "--output {run}", r"run: already holds a trained model; pass --resume"),
    ("train", "--pretrained {ckpt_random} --output {tmp}/train3", r"random\.ckpt: not a readable weights file \(refusing to load"),
    (
        "train",
        "--pretrained imagenet --output {tmp}/train4",
        r"--pretrained imagenet: torchvision's ImageNet weights exist only for width_mult=1\.0",
    ),
    ("to_tflite", "--checkpoint {missing}/best.ckpt", r"nowhere/best\.ckpt: checkpoint not found"),
    ("to_tflite", "--checkpoint {ckpt_trunc}", r"trunc\.ckpt: not a readable checkpoint \(refusing to load"),
    ("to_tflite", "--checkpoint {ckpt7}", r"seven/model_card\.json: not found; pass --data/--data-root"),
    ("to_tflite", "--checkpoint {ckpt} --data bukva", r"--data bukva needs --data-root"),
    (
        "to_tflite",
        "--checkpoint {ckpt} --route keras --calibration-clips 2 --parity-clips 2 --output {a_file}/converted",
        r"a_file/converted: Not a directory",
    ),
    ("parity", "{missing}", r"nowhere/model_card\.json: not found"),
    ("parity", "{run}", r"run: no converted model; run python -m conversion\.to_tflite"),
    ("prepare", "--data-root {missing} --output {tmp}/prepared", r"nowhere/annotations\.tsv: annotation file not found"),
    ("prepare", "--data-root {frames} --output {a_file}", r"a_file: File exists|a_file: Not a directory"),
]


def run_command(name: str, arguments: str, files: dict[str, Path], capsys) -> tuple[int, str]:
    """A command in-process as `python -m` runs it (cli.run): its exit status and its stderr."""
    argv = shlex.split(arguments.format(**files))
    capsys.readouterr()
    try:
        status = run(command(name), argv)
    except SystemExit as exit:
        status = exit.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize("name, arguments, message", CLI_CASES, ids=[f"{c[0]}: {c[1]}" for c in CLI_CASES])
def test_bad_input_is_one_line_and_exit_2(name, arguments, message, files, capsys):
    status, err = run_command(name, arguments, files, capsys)
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert status == 2 and re.match(r"error: \S", last) and re.search(message, last), (status, err)


def test_training_on_missing_data_leaves_no_run_folder(files, capsys):
    status, _ = run_command("train", "--data bukva --data-root {missing} --output {tmp}/never-trained --num-workers 0", files, capsys)
    assert status == 2 and not (files["tmp"] / "never-trained").exists()


def test_verbose_shows_the_traceback_of_bad_input(files, capsys):
    status, err = run_command("inspect", "{tflite_trunc} --verbose", files, capsys)
    assert status == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")


def test_a_bug_keeps_its_traceback(files, monkeypatch):
    import conversion.inspect

    monkeypatch.setattr(conversion.inspect.Inspection, "report", lambda self: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        run(conversion.inspect.main, [str(files["tflite"])])


def test_no_camera_is_one_line_from_opencv_too(files, capfd):
    """OpenCV writes its own warnings to file descriptor 2, past capsys."""
    assert run(command("predict"), ["--camera", "3", "--model", str(files["ckpt"])]) == 2
    assert capfd.readouterr().err == "error: camera 3 not found or cannot be opened\n"


@pytest.mark.parametrize(
    "module, arguments",
    [
        ("conversion.inspect", "{tflite_trunc}"),  # the first row of issue 15
        ("runtime.predict", "{text_mp4} --model {ckpt}"),  # FFmpeg's own "moov atom not found" came first
    ],
)
def test_a_real_process_prints_one_line(module, arguments, files):
    """End to end: nothing but the one line on stderr (no native library's log), exit 2."""
    argv = [sys.executable, "-m", module, *shlex.split(arguments.format(**files))]
    process = subprocess.run(argv, capture_output=True, text=True, errors="replace", cwd=REPO, timeout=300)
    assert process.returncode == 2 and process.stderr.count("\n") == 1 and process.stderr.startswith("error: "), process.stderr


# --- datasets ---------------------------------------------------------------------------------------

BUKVA_HEADER = "attachment_id\tuser_id\ttext\tbegin\tend\theight\twidth\ttrain\tlength"
ROW1, ROW2 = "v1\tu1\tА\t0\t4\t32\t32\tTrue\t4", "v2\tu2\tБ\t0\t4\t32\t32\tTrue\t4"

# (case, annotations.tsv bytes, clips read or the error message)
ANNOTATION_CASES = [
    ("utf-8", f"{BUKVA_HEADER}\n{ROW1}\n{ROW2}\n".encode(), 2),
    ("utf-8 with BOM", f"\ufeff{BUKVA_HEADER}\n{ROW1}\n{ROW2}\n".encode(), 2),
    ("CRLF", f"{BUKVA_HEADER}\r\n{ROW1}\r\n{ROW2}\r\n".encode(), 2),
    ("extra column", f"{BUKVA_HEADER}\tnote\n{ROW1}\tx\n{ROW2}\ty\n".encode(), 2),
    ("duplicated id (the first row kept)", f"{BUKVA_HEADER}\n{ROW1}\n{ROW1.replace('А', 'Б')}\n".encode(), 1),
    ("cp1251", f"{BUKVA_HEADER}\n{ROW1}\n".encode("cp1251"), r"annotations\.tsv: not UTF-8 text \(byte \d+\); save it as UTF-8"),
    ("missing column", f"{BUKVA_HEADER.replace(chr(9) + 'train', '')}\n".encode(), r"annotations\.tsv: missing column\(s\) \['train'\]"),
    ("comma-separated", BUKVA_HEADER.replace("\t", ",").encode(), r"annotations\.tsv: missing column\(s\).*\(tab-separated\?\)"),
    ("a row short of fields", f"{BUKVA_HEADER}\n{ROW1}\nv2\tu2\tБ\n".encode(), r"annotations\.tsv: line 3 has 3 fields, the header 9"),
    ("empty", b"", r"annotations\.tsv: empty; expected a tab-separated header"),
    ("header only", f"{BUKVA_HEADER}\n".encode(), r"bukva train .*: no usable clip"),
]


@pytest.mark.parametrize("case, content, expected", ANNOTATION_CASES, ids=[c[0] for c in ANNOTATION_CASES])
def test_annotation_files(case, content, expected, files, tmp_path):
    from torch_tsm.datasets import read_bukva

    (tmp_path / "trimmed").mkdir()
    for name in ("v1", "v2"):
        os.link(files["video"], tmp_path / "trimmed" / f"{name}.mp4")
    (tmp_path / "annotations.tsv").write_bytes(content)
    if isinstance(expected, int):
        clips, report = read_bukva(tmp_path, "train")
        assert len(clips) == expected and len(report.problems) == 2 - expected
        assert all("listed again" in problem for problem in report.problems)
    else:
        with pytest.raises(UserError, match=expected):
            read_bukva(tmp_path, "train")


def grey(frames: list[np.ndarray]) -> list[np.ndarray]:
    return [cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) for frame in frames]


# (case, how the video is made in a folder, the check of the clip read from it, or the error message)
VIDEO_CASES = [
    ("0 bytes", lambda d: written(d / "v.mp4", b""), r"v\.mp4: cannot be opened as a video"),
    ("text named .mp4", lambda d: written(d / "v.mp4", b"hello\n"), r"v\.mp4: cannot be opened as a video"),
    ("one frame", lambda d: write_video(d / "v.mp4", marked_frames(1)), lambda clip: (clip == clip[0]).all()),
    (
        "grayscale",
        lambda d: write_video(d / "v.avi", grey(marked_frames(6)), "MJPG"),
        lambda clip: (np.abs(clip[..., 0].astype(int) - clip[..., 2]) <= 2).all(),
    ),
    (
        "4K",
        lambda d: write_video(d / "v.avi", marked_frames(2, 2160, 3840), "MJPG"),
        lambda clip: (clip[:, 0, :, :] == 114).all() and clip[:, 9, 2].min() > 200,
    ),
    (
        "rotated 90 degrees",
        lambda d: rotated_90(d / "r.mp4", write_video(d / "v.mp4", marked_frames(4, SIZE, 48))),
        lambda clip: clip[:, 2, -7].min() > 200 and clip[:, 2, 6].max() < 80,
    ),
    (
        "cut off mid-stream",
        lambda d: truncated(d / "v.avi", write_video(d / "full.avi", marked_frames(40), "MJPG")),
        lambda clip: clip.shape == (SEGMENTS, SIZE, SIZE, 3),
    ),
]


@pytest.mark.parametrize("case, make, expected", VIDEO_CASES, ids=[c[0] for c in VIDEO_CASES])
def test_videos(case, make, expected, tmp_path):
    """A clip as training and evaluation read it: upright as a player shows it, RGB, letterboxed to S x S."""
    from torch_tsm.frames import FrameTransform, probe_frame_count, read_video_frames, segment_indices

    path = make(tmp_path)
    if isinstance(expected, str):
        with pytest.raises(UserError, match=expected):
            probe_frame_count(path)
        return
    indices = segment_indices(probe_frame_count(path), SEGMENTS, None)
    clip = FrameTransform(SIZE, "letterbox")(read_video_frames(path, indices), None)
    assert clip.shape == (SEGMENTS, SIZE, SIZE, 3) and expected(clip)


# --- outputs: SIGTERM during a conversion, a full disk during prepare and conversion ----------------------------------------------

CONVERT = "--route keras --calibration-clips 2 --parity-clips 2"


@pytest.mark.parametrize("stage", ["_keras_route", "to_uint8_tflite"])  # before the first model; after the float32 one
def test_sigterm_during_conversion_leaves_nothing(stage, files, tmp_path, monkeypatch, capsys):
    import conversion.to_tflite

    output = tmp_path / "converted"
    output.mkdir()
    (output / "mine.txt").write_text("kept")

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(conversion.to_tflite, stage, terminated)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        status, err = run_command("to_tflite", f"--checkpoint {{ckpt}} {CONVERT} --output {output}", files, capsys)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert status == 130 and "interrupted: no model written" in err
    assert [p.name for p in output.iterdir()] == ["mine.txt"]  # no scratch folder, no model that looks complete


def bukva_dataset(root: Path, video: Path, ids: tuple[str, ...] = ("v1", "v2")) -> Path:
    (root / "trimmed").mkdir(parents=True)
    for name in ids:
        os.link(video, root / "trimmed" / f"{name}.mp4")
    rows = [f"{name}\tu\tА\t0\t12\t32\t32\tTrue\t12" for name in ids]
    (root / "annotations.tsv").write_text("\n".join([BUKVA_HEADER, *rows]) + "\n", encoding="utf-8")
    return root


def full_disk() -> None:
    """In the child: RLIMIT_FSIZE stands for a full disk; a write past it fails (EFBIG) instead of killing the process."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (300, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))  # less than one JPEG frame


def test_a_full_disk_during_prepare_then_a_rerun(files, tmp_path):
    """The first run fails with one line and leaves nothing that looks prepared; the same command with room finishes."""
    raw, output = bukva_dataset(tmp_path / "raw", files["video"]), tmp_path / "prepared"
    argv = [
        sys.executable,
        "-m",
        "torch_tsm.prepare",
        "--data-root",
        str(raw),
        "--output",
        str(output),
        "--short-side",
        "32",
        "--workers",
        "1",
    ]
    full = subprocess.run(argv, capture_output=True, text=True, errors="replace", cwd=REPO, timeout=300, preexec_fn=full_disk)
    errors = [line for line in full.stderr.splitlines() if line.startswith("error: ")]
    assert full.returncode == 2 and len(errors) == 1 and "Traceback" not in full.stderr, full.stderr[-3000:]
    assert re.search(r"prepared/\.partial/v\d/00000\.jpg: could not be written \(disk full\?\)$", errors[0])
    assert not (output / "annotations.tsv").exists() and not list(output.glob("v*"))
    assert run(command("prepare"), argv[3:]) == 0  # the same command, with room
    assert (output / "annotations.tsv").read_text(encoding="utf-8").count("\n") == 3 and len(list((output / "v2").glob("*.jpg"))) == 12


# (what a library raised, the one line it becomes, or None: not a want of room, raised as it is)
NO_ROOM_CASES = [
    (
        OSError(errno.ENOSPC, "No space left on device", "/out/model.onnx"),
        "/out/model.onnx: could not be written (No space left on device; is the disk full?)",
    ),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), "/out: could not be written (Disk quota exceeded; is the disk full?)"),
    (OSError("983040 requested and 499968 written"), "/out: could not be written (a short write; is the disk full?)"),  # numpy's tofile
    (
        RuntimeError("{{function_node SaveV2}} /tmp/s/variables.data; File too large [Op:SaveV2]"),
        "/tmp/s/variables.data: could not be written (File too large; is the disk full?)",
    ),
    (PermissionError(errno.EACCES, "Permission denied", "/out"), None),
    (ValueError("a bug"), None),
]


@pytest.mark.parametrize("raised, line", NO_ROOM_CASES, ids=[type(c[0]).__name__ + str(i) for i, c in enumerate(NO_ROOM_CASES)])
def test_no_room_to_write_in_each_librarys_words(raised, line):
    from torch_tsm.errors import room_to_write

    with pytest.raises(UserError if line else type(raised)) as caught, room_to_write("/out"):
        raise raised
    assert str(caught.value) == (line or str(raised))


def test_a_full_disk_during_conversion_then_a_rerun(files, tmp_path, capsys):
    """TensorFlow's C++ reports the full disk in its own words (an OutOfRangeError naming a temporary
    SavedModel); the conversion ends with one line, writes nothing, and the same command with room works."""
    output = tmp_path / "converted"
    arguments = f"--checkpoint {files['ckpt']} {CONVERT} --output {output}"
    argv = [sys.executable, "-m", "conversion.to_tflite", *arguments.split()]
    full = subprocess.run(argv, capture_output=True, text=True, errors="replace", cwd=REPO, timeout=300, preexec_fn=full_disk)
    errors = [line for line in full.stderr.splitlines() if line.startswith("error: ")]
    assert full.returncode == 2 and len(errors) == 1 and "Traceback" not in full.stderr, full.stderr[-3000:]
    assert re.search(r": could not be written \(File too large; is the disk full\?\)$", errors[0]), errors[0]
    assert list(output.iterdir()) == []
    assert run_command("to_tflite", arguments, files, capsys)[0] == 0  # the same command, with room
    assert {p.name for p in output.iterdir()} == {"model_keras_float32.tflite", "model_keras_uint8.tflite", "labels.txt", "model_card.json"}


def test_keep_failed_uint8_writes_every_model_and_exits_1(files, tmp_path, monkeypatch, capsys):
    """--keep-failed-uint8: every model written, the FAIL recorded in the card, exit status 1. The tiny
    model's 8 held-out clips are judged and the agreement bound put out of reach, so the uint8 check
    misses (without the flag such a miss writes nothing: test_conversion's late-miss test)."""
    from conversion import parity

    monkeypatch.setattr(parity, "UINT8_MIN_CLIPS", 8)
    monkeypatch.setattr(parity, "UINT8_TOP1_AGREE", 1.01)
    output = tmp_path / "kept"
    status, err = run_command(
        "to_tflite",
        f"--checkpoint {{ckpt}} {CONVERT} --output {output} --keep-failed-uint8".replace("--parity-clips 2", "--parity-clips 8"),
        files,
        capsys,
    )
    assert status == 1 and re.search(r"model_keras_uint8\.tflite: written by --keep-failed-uint8, but it FAILED its parity check", err), err
    assert {p.name for p in output.iterdir()} == {"model_keras_float32.tflite", "model_keras_uint8.tflite", "labels.txt", "model_card.json"}
    figures = json.loads((output / "model_card.json").read_text(encoding="utf-8"))["conversion"]["keras"]
    assert figures["failed"] == ["keras-tflite-u8"]
    assert [row["verdict"] for row in figures["parity"] if row["inputs"] == "held-out clips"] == ["pass", "pass", "FAIL"]  # keras, f32, u8


# --- streams ------------------------------------------------------------------------------------------


def rss_bytes() -> int:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) * 1024


def test_a_long_stream_runs_in_flat_memory(files, tmp_path, capsys):
    """10,000 frames of 64 px (123 MB if kept) through predict: memory after 1,000 and after 10,000 frames."""
    from runtime.predict import main

    video = write_video(tmp_path / "long.avi", marked_frames(10_000, 64, 64), "MJPG", fps=30)
    argv = [str(video), "--model", str(files["tflite"]), "--frame-step", "1", "--stride", "4", "--json"]
    main([*argv, "--max-frames", "1000"])
    before = rss_bytes()
    result = main(argv)
    after = rss_bytes()
    assert result.frames == 10_000
    assert after - before < 20e6, f"RSS grew by {(after - before) / 1e6:.1f} MB over 9,000 more frames"


def test_a_variable_frame_rate_video_is_timed_by_its_timestamps(tmp_path):
    # Phones record at a variable frame rate: frame times come from the file, not from index / fps.
    av = pytest.importorskip("av")  # PyAV (the bench extra, which make test installs) writes the timestamps
    from fractions import Fraction

    from runtime.predict import open_source, read_frames

    times = [0.0, 0.1, 0.2, 0.9, 1.0, 1.1, 2.5, 2.6]  # two pauses: about 3 fps on average, 10 fps at most
    with av.open(str(tmp_path / "vfr.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((SIZE, SIZE, 3), 30 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    read = list(read_frames(open_source(tmp_path / "vfr.mp4", None), None))
    assert [round(t, 3) for t, _ in read] == times
    assert [round(int(frame[0, 0, 0]) / 30) for _, frame in read] == list(range(len(times)))  # every frame, in order


def test_a_stream_that_stops_mid_way_ends_cleanly(files, tmp_path, capsys):
    from runtime.predict import main

    full = write_video(tmp_path / "full.avi", marked_frames(60), "MJPG")
    result = main([str(truncated(tmp_path / "cut.avi", full)), "--model", str(files["tflite"]), "--json"])
    assert 10 < result.frames < 60


# --- fuzzing: every loader loads or raises UserError naming the file --------------------------------------

FUZZ = r"""
import json, sys
from pathlib import Path
import numpy as np
from conversion.inspect import inspect_tflite
from runtime.models import open_model
from torch_tsm.datasets import read_frame_folders
from torch_tsm.errors import UserError
from torch_tsm.frames import probe_frame_count, read_image, read_video_frames

def annotations(path):
    return read_frame_folders(path.parent, "val")

def video(path):
    return read_video_frames(path, np.arange(probe_frame_count(path)))

LOADERS = {"mp4": video, "avi": video, "jpg": read_image, "tflite": open_model, "onnx": open_model, "ckpt": open_model,
           "inspect": inspect_tflite, "tsv": annotations}
folder, samples = Path(sys.argv[1]), json.loads(sys.argv[2])
foreign = []
for kind, seeds in samples.items():
    for path in sorted(folder.glob(f"{kind}-*"))[:seeds]:
        loader = LOADERS[kind]
        target = path / "annotations.tsv" if kind == "tsv" else path
        print(target, flush=True)  # the last line names the culprit of a crash or hang
        try:
            loader(target)
        except UserError as error:
            if str(target.parent if kind == "tsv" else target) not in str(error):
                foreign.append(f"{target}: UserError without the file: {error}")
        except Exception as error:
            foreign.append(f"{target}: {type(error).__name__}: {str(error)[:200]}")
print("FOREIGN", json.dumps(foreign))
"""


def fuzz_samples(folder: Path, valid: dict[str, bytes], per_kind: int) -> None:
    """Seeded: random bytes, random bytes behind the valid file's first 16 bytes, and truncations of the valid file."""
    rng = np.random.default_rng(15)
    for kind, good in valid.items():
        for i in range(per_kind):
            size = int(rng.integers(0, 4096))
            noise = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
            data = [noise, good[:16] + noise, good[: int(rng.integers(0, len(good)))]][i % 3]
            path = (
                folder / f"{kind}-{i:03d}" / "annotations.tsv"
                if kind == "tsv"
                else folder / f"{kind}-{i:03d}.{'tflite' if kind == 'inspect' else kind}"
            )
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)


def test_fuzzed_files_load_or_raise_a_user_error_naming_the_file(files, tmp_path):
    cv2.imwrite(str(tmp_path / "good.jpg"), marked_frames(1)[0])
    valid = {
        "mp4": files["video"].read_bytes(),
        "avi": write_video(tmp_path / "good.avi", marked_frames(8), "MJPG").read_bytes(),
        "jpg": (tmp_path / "good.jpg").read_bytes(),
        "tflite": files["tflite"].read_bytes(),
        "inspect": files["tflite"].read_bytes(),
        "onnx": (files["ckpt"].parents[1] / "model.onnx").read_bytes(),
        "ckpt": files["ckpt"].read_bytes(),
        "tsv": (files["frames"] / "annotations.tsv").read_bytes(),
    }
    per_kind = 30
    fuzz_samples(tmp_path, valid, per_kind)
    process = subprocess.run(
        [sys.executable, "-c", FUZZ, str(tmp_path), json.dumps(dict.fromkeys(valid, per_kind))],
        capture_output=True,
        text=True,
        errors="replace",
        cwd=REPO,
        timeout=240,
    )
    tried = process.stdout.splitlines()
    assert process.returncode == 0 and tried[-1].startswith("FOREIGN"), (
        f"crashed (rc {process.returncode}) on {tried[-1:]}: {process.stderr[-2000:]}"
    )
    assert len(tried) - 1 == per_kind * len(valid)
    assert json.loads(tried[-1].removeprefix("FOREIGN")) == []
