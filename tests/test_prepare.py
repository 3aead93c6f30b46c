"""python -m torch_tsm.prepare: Bukva videos decoded once into frame folders that --data frames trains on."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.test_data import write_video
from torch_tsm.datasets import read_bukva, read_bukva_videos, read_frame_folder_videos, read_frame_folders
from torch_tsm.frames import FrameTransform, segment_indices
from torch_tsm.labels import BUKVA_LABELS, read_labels
from torch_tsm.prepare import main
from torch_tsm.train import main as train

HEADER = "attachment_id\tuser_id\ttext\tbegin\tend\theight\twidth\ttrain\tlength"


def textured_frames(count: int, height: int = 120, width: int = 160) -> list[np.ndarray]:
    # A smooth gradient, a square moving right and a brightness that grows by frame: any two frames differ
    # clearly, and shrinking keeps the picture (no detail finer than the prepared size).
    y, x = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(count):
        frame = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 20 * i)], axis=-1).astype(np.uint8)
        left = 8 + 6 * i
        frame[40:80, left : left + 30] = (250, 250, 40)
        frames.append(frame)
    return frames


def bukva_folder(root: Path, rows: list[tuple[str, str, bool, int, int]], frames: int = 12) -> Path:
    """A Bukva-layout folder: one video per row (unless named to be missing or corrupt) in trimmed/ and original/."""
    for source in ("trimmed", "original"):
        (root / source).mkdir(parents=True, exist_ok=True)
    for attachment, *_ in rows:
        if attachment.startswith(("missing", "../")):
            continue
        for source in ("trimmed", "original"):
            path = root / source / f"{attachment}.mp4"
            if attachment.startswith("corrupt"):
                path.write_bytes(b"\x00\x01 not a video" * 100)
            elif attachment.startswith("empty"):
                path.write_bytes(b"")
            else:
                write_video(path, textured_frames(frames))
    lines = [HEADER] + [
        f"{a}\tuser{i % 3}\t{text}\t{begin}\t{end}\t120\t160\t{train}\t{frames}" for i, (a, text, train, begin, end) in enumerate(rows)
    ]
    (root / "annotations.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


GOOD = [("v1", "А", True, 2, 9), ("v2", "Щ", True, 0, 12), ("v3", "Ё", False, 3, 7), ("v4", "Ш", False, 0, 12)]
BAD = [
    ("corrupt", "Б", True, 0, 12),
    ("empty", "В", True, 0, 12),
    ("missing", "Г", False, 0, 12),
    ("../escape", "Д", True, 0, 12),
    ("v5", "Z", True, 0, 12),
    ("v2", "Ж", True, 0, 12),
]  # v2 again


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    return bukva_folder(tmp_path_factory.mktemp("raw"), GOOD + BAD)


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory) -> tuple[Path, dict]:
    output = tmp_path_factory.mktemp("prepared") / "bukva-64"
    return output, main(["--data-root", str(raw), "--output", str(output), "--short-side", "64", "--workers", "2"])


def test_prepare_writes_the_frame_folder_layout(prepared, capsys):
    output, figures = prepared
    rows = [line.split("\t") for line in (output / "annotations.tsv").read_text(encoding="utf-8").splitlines()]
    assert rows[0] == ["video", "label", "split", "user_id", "fps", "width", "height", "frames", "begin", "end"]
    assert sorted(rows[1:]) == [  # trimmed videos: each is its sign, no begin/end
        ["v1", "А", "train", "user0", "10.0", "160", "120", "12", "", ""],
        ["v2", "Щ", "train", "user1", "10.0", "160", "120", "12", "", ""],
        ["v3", "Ё", "val", "user2", "10.0", "160", "120", "12", "", ""],
        ["v4", "Ш", "val", "user0", "10.0", "160", "120", "12", "", ""],
    ]
    assert read_labels(output / "labels.txt") == BUKVA_LABELS
    frames = sorted((output / "v1").glob("*.jpg"))
    assert [p.name for p in frames[:2]] == ["00000.jpg", "00001.jpg"] and len(frames) == 12
    assert cv2.imread(str(frames[0])).shape == (64, 85, 3)  # short side 64, aspect kept (160 x 120)
    assert figures["videos"] == 4 and figures["new"] == 4 and figures["frames"] == 48
    assert figures["bytes"] == sum(p.stat().st_size for p in output.glob("v*/*.jpg"))
    skipped = (output / "skipped.tsv").read_text(encoding="utf-8")
    for problem in (
        "corrupt.mp4: cannot be opened",
        "empty.mp4: cannot be opened",
        "missing.*: missing video",
        "'../escape'",
        "unknown label 'Z'",
        "v2: attachment_id listed again",
    ):
        assert problem in skipped
    assert len(figures["skipped"]) == 6 and not (output / ".partial").exists()


def test_prepared_clip_matches_the_clip_read_from_the_video(raw, prepared):
    # The same frame indices from the raw video and from the prepared folder, through the same transform.
    output, _ = prepared
    from_video = {}
    for clip in read_bukva(raw, "train")[0] + read_bukva(raw, "val")[0]:
        from_video.setdefault(clip.path.stem, clip)  # the first row of the repeated v2, as prepare keeps
    from_frames = {Path(c.name).name: c for c in read_frame_folders(output, "train")[0] + read_frame_folders(output, "val")[0]}
    assert set(from_video) == set(from_frames) == {"v1", "v2", "v3", "v4"}
    transform = FrameTransform(48)
    for name, video in from_video.items():
        assert from_frames[name].num_frames == video.num_frames == 12 and from_frames[name].label == video.label
        indices = segment_indices(video.num_frames, 8, None)
        a = transform(video.frames(indices), np.random.default_rng(0)).astype(float)
        b = transform(from_frames[name].frames(indices), np.random.default_rng(0)).astype(float)
        assert np.abs(a - b).mean() < 2.0  # measured 1.4 (0..255): two resizes and a JPEG at quality 90 apart
        # ... while the clip one frame later is far (measured 6.7): the bound tells frames apart
        later = transform(from_frames[name].frames(np.minimum(indices + 1, 11)), np.random.default_rng(0)).astype(float)
        assert np.abs(a - later).mean() > 2 * 2.0


# original videos of (id, text, train, begin, end) with the frame count of each
ORIGINAL_ROWS = [("p1", "А", True, 0, 10), ("p2", "no_event", True, "", ""), ("p3", "Б", False, 20, 30), ("p4", "В", True, 45, 50)]
ORIGINAL_LENGTHS = {"p1": 40, "p2": 20, "p3": 60, "p4": 40}


@pytest.fixture(scope="module")
def prepared_originals(tmp_path_factory) -> tuple[Path, Path, dict]:
    """Original videos, and their prepared folder."""
    from tests.test_data import idle_tree

    raw = idle_tree(tmp_path_factory.mktemp("originals"), ORIGINAL_ROWS, ORIGINAL_LENGTHS)
    output = tmp_path_factory.mktemp("prepared-originals") / "out"
    figures = main(["--data-root", str(raw), "--output", str(output), "--short-side", "64", "--workers", "1", "--bukva-source", "original"])
    return raw, output, figures


def test_original_videos_are_kept_whole_with_the_signs_place(prepared_originals):
    raw, output, figures = prepared_originals
    assert figures["frames"] == 40 + 20 + 60  # every frame of each usable video, not only the sign's
    rows = [line.split("\t") for line in (output / "annotations.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    assert sorted((row[0], row[1], row[7], row[8], row[9]) for row in rows) == [
        ("p1", "А", "40", "0", "10"),
        ("p2", "no_event", "20", "", ""),
        ("p3", "Б", "60", "20", "30"),
    ]
    assert "p4.mp4: begin/end 45/50 start past its 40 decoded frames" in (output / "skipped.tsv").read_text(encoding="utf-8")
    # the prepared folders give the clips that the videos give: the signs, the no_event row, the idle parts
    for split in ("train", "val"):
        from_video = sorted((c.path.stem, c.label, c.start, c.num_frames) for c in read_bukva(raw, split, source="original")[0])
        clips, report = read_frame_folders(output, split)
        from_frames = sorted((Path(c.name).name, c.label, int(c.frame_paths[0].stem), c.num_frames) for c in clips)
        assert from_frames == from_video
    assert report.no_event_clips == {"labelled": 0, "idle": 1, "idle_left_out": 0}  # val: p3's idle part after [20, 30)


def test_prepared_originals_are_continuous_videos(prepared_originals):
    raw, output, _ = prepared_originals
    from_video = {v.path.stem: v for split in ("train", "val") for v in read_bukva_videos(raw, split, 32)[0]}
    from_frames = {Path(v.name).name: v for split in ("train", "val") for v in read_frame_folder_videos(output, split, 32)[0]}
    assert set(from_frames) == set(from_video) == {"p1", "p3"}  # the no_event row has no sign
    for name, video in from_video.items():
        frames, signs = from_frames[name].render(min_frames=70)
        expected, expected_signs = video.render(min_frames=70)
        assert signs == expected_signs and from_frames[name].fps == video.fps == 10
        assert frames.shape == expected.shape == (70, 32, 32, 3)
        assert np.abs(frames.astype(float) - expected).mean() < 0.5  # measured 0.0 (flat frames through a JPEG); one frame later: 2.9


def test_rerun_finishes_without_redoing_and_refuses_other_settings(raw, prepared, capsys):
    output, _ = prepared
    before = {p: p.stat().st_mtime_ns for p in output.glob("v*/*.jpg")}
    figures = main(["--data-root", str(raw), "--output", str(output), "--short-side", "64", "--workers", "2"])
    assert figures["videos"] == 4 and figures["new"] == 0
    assert before == {p: p.stat().st_mtime_ns for p in output.glob("v*/*.jpg")}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        main(["--data-root", str(raw), "--output", str(output), "--short-side", "128"])
    assert exit.value.code == 2
    assert "prepared with other settings: short_side 64 (now 128)" in capsys.readouterr().err


def test_a_folder_of_the_earlier_layout_is_refused(raw, tmp_path, capsys):
    # layout 1 cut original videos to the sign: its folders lack the idle frames, so they are not finished in layout 2
    output = tmp_path / "old"
    output.mkdir()
    (output / "prepare.json").write_text(json.dumps({"short_side": 64, "quality": 90, "source": "original"}))
    with pytest.raises(SystemExit) as exit:
        main(["--data-root", str(raw), "--output", str(output), "--short-side", "64", "--bukva-source", "original"])
    assert exit.value.code == 2 and "prepared with other settings: layout None (now 2)" in capsys.readouterr().err


def test_a_folder_not_made_by_prepare_is_refused(raw, tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exit:
        main(["--data-root", str(raw), "--output", str(tmp_path)])
    assert exit.value.code == 2 and "not empty and was not made by prepare" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_nothing_usable_is_one_clear_error(tmp_path, capsys):
    root = bukva_folder(tmp_path / "raw", BAD[:-1])  # without the repeated v2: nothing usable
    with pytest.raises(SystemExit) as exit:
        main(["--data-root", str(root), "--output", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit.value.code == 2 and error.startswith("error: ") and "no usable video" in error
    assert not (tmp_path / "out" / "annotations.tsv").exists()


def prepare_command(raw: Path, output: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch_tsm.prepare",
        "--data-root",
        str(raw),
        "--output",
        str(output),
        "--short-side",
        "64",
        "--workers",
        "1",
    ]


def finished_videos(output: Path) -> list[str]:
    return sorted(p.name for p in output.iterdir() if p.is_dir() and not p.name.startswith("."))


@pytest.fixture(scope="module")
def many_videos(tmp_path_factory) -> Path:
    # Enough work (24 videos of 40 frames at 320 x 240, one worker) to stop the run in the middle.
    rows = [(f"w{i:02d}", BUKVA_LABELS[1 + i % 33], i % 4 != 0, 0, 40) for i in range(24)]
    root = tmp_path_factory.mktemp("many")
    (root / "trimmed").mkdir()
    frames = [cv2.resize(f, (320, 240)) for f in textured_frames(40)]
    for attachment, *_ in rows:
        write_video(root / "trimmed" / f"{attachment}.mp4", frames)
    lines = [HEADER] + [f"{a}\tu\t{text}\t{b}\t{e}\t240\t320\t{train}\t40" for a, text, train, b, e in rows]
    (root / "annotations.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def many(many_videos, tmp_path_factory) -> tuple[Path, Path]:
    """The videos, and their prepared folder from one uninterrupted run."""
    whole = tmp_path_factory.mktemp("whole") / "prepared"
    main(prepare_command(many_videos, whole)[3:])
    return many_videos, whole


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False


def stop_midway(command: list[str], output: Path, how: str) -> None:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not output.is_dir() or len(finished_videos(output)) < 3):
        time.sleep(0.01)
    if how == "kill -9":  # the run dies at once, as by the OOM killer; its workers must not linger
        process.kill()
        process.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and group_alive(process.pid):
            time.sleep(0.1)
        lingering = group_alive(process.pid)
        if lingering:
            os.killpg(process.pid, signal.SIGKILL)  # nothing left behind for the rest of the suite
        assert not lingering, "worker processes outlived the killed run"
    else:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 130
        assert "run the same command again to finish" in process.stderr.read().decode()
    process.stderr.close()


@pytest.mark.parametrize("how", ["kill -9", "SIGTERM"])
def test_stopped_run_leaves_nothing_half_written_and_a_rerun_finishes(many, tmp_path, how):
    videos, whole = many
    interrupted = tmp_path / "interrupted"
    stop_midway(prepare_command(videos, interrupted), interrupted, how)
    done = finished_videos(interrupted)
    assert 3 <= len(done) < 24, "the run was not stopped midway"
    assert not (interrupted / "annotations.tsv").exists()  # not ready, and it does not look ready
    for name in done:  # every folder in place is complete
        info = json.loads((interrupted / name / "info.json").read_text())
        assert len(list((interrupted / name).glob("*.jpg"))) == info["frames"] == 40
    subprocess.run(prepare_command(videos, interrupted), check=True, capture_output=True, timeout=300)
    assert finished_videos(interrupted) == finished_videos(whole) and len(finished_videos(whole)) == 24
    assert (interrupted / "annotations.tsv").read_bytes() == (whole / "annotations.tsv").read_bytes()
    for name in finished_videos(whole):
        assert [p.read_bytes() for p in sorted((interrupted / name).glob("*.jpg"))] == [
            p.read_bytes() for p in sorted((whole / name).glob("*.jpg"))
        ]
    assert not (interrupted / ".partial").exists()


def test_prepare_then_train_on_frames_end_to_end(prepared, tmp_path):
    output, _ = prepared
    run = train(
        [
            "--data",
            "frames",
            "--data-root",
            str(output),
            "--output",
            str(tmp_path / "run"),
            "--image-size",
            "32",
            "--width-mult",
            "0.35",
            "--num-workers",
            "0",
            "--batch-size",
            "2",
            "--max-epochs",
            "1",
            "--resize",
            "multiscale",
        ]
    )
    card = json.loads((run / "model_card.json").read_text(encoding="utf-8"))
    assert card["labels"] == BUKVA_LABELS and card["validation_clips"] == 2
    assert card["skipped_clips"] == {"train": 0, "val": 0}
