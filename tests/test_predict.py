"""python -m runtime.predict on a generated video of known signs, with every kind of model file."""

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from runtime.clip import TorchRunner
from runtime.predict import annotate, main
from runtime.stream import TorchStreamRunner
from tests.conftest import training_checkpoint
from torch_tsm.model import load_model
from torch_tsm.streaming import StreamingTSM
from torch_tsm.synthetic import VIDEO_FPS, clip_scene, continuous_scene
from torch_tsm.transcript import DecisionRule, softmax, transcribe

FPS = VIDEO_FPS


@pytest.fixture(scope="module")
def signed_video(tmp_path_factory) -> tuple[Path, list[str]]:
    """A 64 px continuous video of the built-in data: 4 signs in one scene, idle between them; and its signs."""
    path = tmp_path_factory.mktemp("video") / "signs.mp4"
    frames, signs = continuous_scene(np.random.default_rng(1), 64, num_signs=4)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (64, 64))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path, [sign.label for sign in signs]


def decoded_frames(path: Path) -> np.ndarray:
    # -> (L, H, W, 3) BGR: every frame of a video, as OpenCV decodes it
    capture = cv2.VideoCapture(str(path))
    frames = []
    while (frame := capture.read()[1]) is not None:
        frames.append(frame)
    capture.release()
    return np.stack(frames)


def predict_json(capsys, *argv: str) -> dict:
    main([*argv, "--json"])
    return json.loads(capsys.readouterr().out)


def expected_letters(video: Path, run: Path, mode: str = "stream") -> list[tuple[str, float]]:
    """The letters that predict promises, computed here without its loop: every frame_step-th decoded frame
    (64 px frames need no resizing for a 64 px model) through PyTorch's streaming model, or the clip model on
    the window of the last T of them, then the card's decision rule (torch_tsm.transcript, tested by hand in
    test_live). -> (label, time s) of each letter."""
    model = load_model(run / "best.ckpt")
    rule = DecisionRule.from_dict(json.loads((run / "model_card.json").read_text(encoding="utf-8"))["decision"])
    kept = decoded_frames(video)[:: rule.frame_step, :, :, ::-1]  # RGB
    if mode == "stream":
        logits = TorchStreamRunner(StreamingTSM(model), model.image_size).run_stream(kept)
        times = np.arange(len(kept)) * rule.frame_step / FPS
    else:
        t = model.num_segments
        windows = np.stack([kept[i - t + 1 : i + 1] for i in range(t - 1, len(kept))])
        logits = TorchRunner(model)(windows)
        times = np.arange(t - 1, len(kept)) * rule.frame_step / FPS
    return [(model.labels[k], times[i]) for i, k in transcribe(softmax(logits), model.labels, rule)]


def test_stream_mode_with_the_causal_checkpoint(signed_video, trained_run, capsys):
    video, signs = signed_video
    result = predict_json(capsys, str(video), "--model", str(trained_run / "best.ckpt"), "--mode", "stream")
    assert result["mode"] == "stream" and result["frames"] > 100 and result["fps"] > 0
    expected = expected_letters(video, trained_run)
    assert [letter["label"] for letter in result["letters"]] == [label for label, _ in expected]
    for letter, (_, time_s) in zip(result["letters"], expected):
        assert letter["time_s"] == pytest.approx(time_s, abs=0.5 / FPS)  # to the frame
    assert result["transcript"] == signs  # the tests' model reads this video's signs as a stream
    stored = json.loads((trained_run / "model_card.json").read_text(encoding="utf-8"))["decision"]
    assert result["decision"] == {key: stored[key] for key in ("frame_step", "smooth", "confirm", "threshold")}  # the card's rule


def test_clip_mode_with_the_checkpoint(signed_video, trained_run, capsys):
    video, _ = signed_video
    result = predict_json(capsys, str(video), "--model", str(trained_run / "best.ckpt"), "--mode", "clip")
    assert result["mode"] == "clip"
    expected = expected_letters(video, trained_run, mode="clip")
    assert len(expected) >= 2
    assert [letter["label"] for letter in result["letters"]] == [label for label, _ in expected]
    assert [letter["time_s"] for letter in result["letters"]] == pytest.approx([time_s for _, time_s in expected], abs=0.5 / FPS)


def test_flags_override_the_stored_decision_rule(signed_video, trained_run, capsys):
    video, _ = signed_video
    stored = json.loads((trained_run / "model_card.json").read_text(encoding="utf-8"))["decision"]
    result = predict_json(
        capsys, str(video), "--model", str(trained_run / "best.ckpt"), "--confirm", "9", "--threshold", "0.99", "--max-frames", "40"
    )
    assert result["decision"] == {"frame_step": stored["frame_step"], "smooth": stored["smooth"], "confirm": 9, "threshold": 0.99}


def test_streaming_tflite_model_with_an_annotated_video(signed_video, trained_run, streaming_converted, tmp_path, capsys):
    video, signs = signed_video
    annotated = tmp_path / "annotated.mp4"
    main([str(video), "--model", str(streaming_converted / "model_streaming_uint8.tflite"), "--output", str(annotated)])
    printed = capsys.readouterr().out
    assert "stream mode" in printed and "frames/s" in printed
    assert f"transcript: {' '.join(signs)}" in printed
    source, drawn = decoded_frames(video).astype(int), decoded_frames(annotated).astype(int)
    assert drawn.shape == source.shape == (int(printed.split(" frames in ")[0].split()[-1]), 64, 64, 3)
    # At each printed letter, the frame shows the label over the source frame, and the confidence bar.
    letters = re.findall(r"^  (\d\d):(\d\d\.\d\d)  (\S+)", printed, re.MULTILINE)
    assert [label for _, _, label in letters] == signs
    for minutes, seconds, _ in letters:
        i = round((int(minutes) * 60 + float(seconds)) * FPS)
        difference = np.abs(drawn[i] - source[i]).sum(2)  # (64, 64): the re-encoding adds a little noise
        assert difference[40:56].mean() < 15  # where nothing is drawn, the frame is the source's
        assert (difference[2:16] > 150).sum() > 40  # the label: white text with a black outline, top left
        bar = drawn[i, -5:-1, 2:30]  # the confidence bar, green (BGR 0, 200, 0), at least half way
        assert np.abs(bar - (0, 200, 0)).mean() < 40


def test_streaming_tflite_model_in_clip_mode(signed_video, streaming_converted, capsys):
    video, signs = signed_video
    result = predict_json(capsys, str(video), "--model", str(streaming_converted / "model_streaming_float32.tflite"), "--mode", "clip")
    assert result["mode"] == "clip" and len(result["transcript"]) >= 2


def test_stream_mode_refuses_a_bidirectional_model(signed_video, small_model, tmp_path):
    video, _ = signed_video
    checkpoint = tmp_path / "bidirectional.ckpt"
    torch.save(training_checkpoint(small_model), checkpoint)
    with pytest.raises(SystemExit, match="shift='causal'"):
        main([str(video), "--model", str(checkpoint), "--mode", "stream"])


def test_a_model_whose_input_does_not_fit(signed_video, tmp_path):
    video, _ = signed_video
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((1, 32, 32, 3), tf.float32)])
    def image_model(image):
        return tf.reduce_mean(image, axis=(1, 2))

    path = tmp_path / "image.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([image_model.get_concrete_function()], image_model).convert())
    with pytest.raises(SystemExit, match=r"does not fit: expected a clip \(1, T, S, S, 3\)"):
        main([str(video), "--model", str(path)])


def test_a_video_too_short_for_the_clip_model(trained_run, tmp_path):
    short = tmp_path / "short.mp4"
    writer = cv2.VideoWriter(str(short), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (64, 64))
    for frame in clip_scene(np.random.default_rng(0), "circle", 64)[:6]:
        writer.write(frame)
    writer.release()
    with pytest.raises(SystemExit, match="only 3 frames at --frame-step 2, the model needs 8"):
        main([str(short), "--model", str(trained_run / "best.ckpt"), "--mode", "clip"])


def test_unreadable_video_and_missing_camera(trained_run, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video")
    with pytest.raises(SystemExit, match="garbage.mp4: cannot be opened as a video"):
        main([str(garbage), "--model", str(trained_run / "best.ckpt")])
    with pytest.raises(SystemExit, match="video not found"):
        main([str(tmp_path / "nowhere.mp4"), "--model", str(trained_run / "best.ckpt")])
    with pytest.raises(SystemExit, match="camera 99 not found"):
        main(["--camera", "99", "--model", str(trained_run / "best.ckpt")])


@pytest.mark.parametrize("name", ["model_streaming.onnx", "model_keras_streaming_uint8.tflite"])
def test_the_other_streaming_model_files(signed_video, trained_run, streaming_converted, capsys, name):
    video, signs = signed_video
    result = predict_json(capsys, str(video), "--model", str(streaming_converted / name))
    assert result["mode"] == "stream"
    assert result["transcript"] == [label for label, _ in expected_letters(video, trained_run)] == signs


def test_cyrillic_labels_are_drawn_as_letters():
    def drawn(label: str) -> np.ndarray:
        return annotate(np.zeros((120, 160, 3), np.uint8), label, 0.5)

    letter, unknown, other = drawn("Б"), drawn("?"), drawn("Ж")
    assert letter.any() and not np.array_equal(letter, unknown) and not np.array_equal(letter, other)
    assert (letter[-6:, :80] == (0, 200, 0)).all() and not letter[-6:, 81:].any()  # the confidence bar, half-way
