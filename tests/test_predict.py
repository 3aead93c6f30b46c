"""python -m runtime.predict on a generated video of known signs, with every kind of model file."""

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from runtime.predict import annotate, main
from runtime.stream import TorchStreamRunner
from tests.conftest import training_checkpoint
from torch_tsm.model import load_model
from torch_tsm.streaming import StreamingTSM
from torch_tsm.synthetic import render_video

SIGNS = ["move_right", "circle"]  # a direction sign (needs the shift) then a static one
CLIPS_PER_SIGN = 3
FPS = 10


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A 64 px video: three clips of each sign in turn, as the synthetic data renders them."""
    path = tmp_path_factory.mktemp("video") / "signs.mp4"
    rng = np.random.default_rng(1)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (64, 64))
    for sign in SIGNS:
        for _ in range(CLIPS_PER_SIGN):
            for frame in render_video(rng, sign, 64):
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def decoded_frames(path: Path) -> np.ndarray:
    # -> (L, H, W, 3) BGR: every frame of a video, as OpenCV decodes it
    capture = cv2.VideoCapture(str(path))
    frames = []
    while (frame := capture.read()[1]) is not None:
        frames.append(frame)
    capture.release()
    return np.stack(frames)


def signs_in_order(events: list[dict]) -> list[str]:
    # A sign recognized twice in a row (the same clip class repeated) counts once.
    labels = [event["label"] for event in events]
    return [label for i, label in enumerate(labels) if i == 0 or labels[i - 1] != label]


def predict_json(capsys, *argv: str) -> dict:
    main([*argv, "--json"])
    return json.loads(capsys.readouterr().out)


def test_clip_mode_with_the_checkpoint(video, trained_run, capsys):
    result = predict_json(capsys, str(video), "--model", str(trained_run / "best.ckpt"), "--mode", "clip")
    assert signs_in_order(result["events"]) == SIGNS
    assert result["mode"] == "clip" and result["frames"] > 100 and result["fps"] > 0
    first, last = result["events"][0], result["events"][-1]
    midpoint = result["frames"] / 2 / FPS  # the second sign starts halfway, give or take a clip length
    assert first["end_s"] < midpoint + 2 and last["start_s"] > midpoint - 2
    assert all(0.5 <= event["confidence"] <= 1 for event in result["events"])


def expected_events(video: Path, checkpoint: Path, frame_step: int = 2, stable: int = 8, threshold: float = 0.5) -> list[tuple[str, float, float]]:
    """The timeline that predict's defaults promise, computed here from PyTorch streaming's frame logits:
    every --frame-step-th frame goes in; the prediction is the mean of the last T frame logits; a sign
    enters once it has been the top class with probability >= threshold for `stable` kept frames in a
    row, and lasts while it stays so. Start and end: the times (frame index / fps) of the run's first
    and last frames."""
    model = load_model(checkpoint)
    kept = decoded_frames(video)[::frame_step, :, :, ::-1]  # RGB; 64 px frames need no resizing for a 64 px model
    logits = TorchStreamRunner(StreamingTSM(model), model.image_size).run_stream(kept)
    smoothed = np.stack([logits[max(0, i + 1 - model.num_segments) : i + 1].mean(0) for i in range(len(logits))])
    probabilities = np.exp(smoothed - smoothed.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    top = np.where(probabilities.max(1) >= threshold, probabilities.argmax(1), -1)  # -1: no confident class
    events, start = [], 0
    for i in range(1, len(top) + 1):
        if i == len(top) or top[i] != top[start]:  # the run of top[start] ends at i - 1
            if top[start] >= 0 and i - start >= stable:
                events.append((model.labels[top[start]], start * frame_step / FPS, (i - 1) * frame_step / FPS))
            start = i
    return events


# As a live stream the tests' model does not read this video's signs (move_up, then diamond): a causal
# model trained on clips decides a stream's windows worse than whole clips (its card: 73% as a stream,
# 100% as clips; README, "A stream remembers more than a clip"). So stream mode is held to what PyTorch's
# streaming model computes on the same frames (expected_events, here), not to the video's signs; clip mode
# is held to the signs (above).
def test_stream_mode_with_the_causal_checkpoint(video, trained_run, capsys):
    result = predict_json(capsys, str(video), "--model", str(trained_run / "best.ckpt"), "--mode", "stream")
    assert result["mode"] == "stream"
    # Every event where and when the frame logits put it, to the frame; and more than one sign to place.
    expected = expected_events(video, trained_run / "best.ckpt")
    assert len({label for label, _, _ in expected}) >= 2
    assert [event["label"] for event in result["events"]] == [label for label, _, _ in expected]
    for event, (_, start_s, end_s) in zip(result["events"], expected):
        assert event["start_s"] == pytest.approx(start_s, abs=0.5 / FPS) and event["end_s"] == pytest.approx(end_s, abs=0.5 / FPS)


def test_streaming_tflite_model_with_an_annotated_video(video, trained_run, streaming_converted, tmp_path, capsys):
    annotated = tmp_path / "annotated.mp4"
    main([str(video), "--model", str(streaming_converted / "model_streaming_uint8.tflite"), "--output", str(annotated)])
    printed = capsys.readouterr().out
    assert "stream mode" in printed and "frames/s" in printed
    signs = signs_in_order([{"label": label} for label, _, _ in expected_events(video, trained_run / "best.ckpt")])
    assert [label for label in signs if label in printed] == signs and printed.index(signs[0]) < printed.index(signs[1])
    source, drawn = decoded_frames(video).astype(int), decoded_frames(annotated).astype(int)
    assert drawn.shape == source.shape == (int(printed.split(" frames in ")[0].split()[-1]), 64, 64, 3)
    # At the last frame of each printed event, the event's label is shown with a probability >= 0.5.
    events = re.findall(r"^  \d\d:\d\d\.\d\d - (\d\d):(\d\d\.\d\d)  (\S+)", printed, re.MULTILINE)
    assert {label for _, _, label in events} == set(signs)
    for minutes, seconds, _ in events:
        i = round((int(minutes) * 60 + float(seconds)) * FPS)
        difference = np.abs(drawn[i] - source[i]).sum(2)  # (64, 64): the re-encoding adds a little noise
        assert difference[24:56].mean() < 15  # where nothing is drawn, the frame is the source's
        assert (difference[2:16] > 150).sum() > 40  # the label: white text with a black outline, top left
        bar = drawn[i, -5:-1, 2:30]  # the confidence bar, green (BGR 0, 200, 0), at least half way
        assert np.abs(bar - (0, 200, 0)).mean() < 40


def test_streaming_tflite_model_in_clip_mode(video, streaming_converted, capsys):
    result = predict_json(capsys, str(video), "--model", str(streaming_converted / "model_streaming_float32.tflite"), "--mode", "clip")
    assert signs_in_order(result["events"]) == SIGNS


def test_stream_mode_refuses_a_bidirectional_model(video, small_model, tmp_path):
    checkpoint = tmp_path / "bidirectional.ckpt"
    torch.save(training_checkpoint(small_model), checkpoint)
    with pytest.raises(SystemExit, match="shift='causal'"):
        main([str(video), "--model", str(checkpoint), "--mode", "stream"])


def test_a_model_whose_input_does_not_fit(video, tmp_path):
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
    for frame in render_video(np.random.default_rng(0), "circle", 64)[:6]:
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
def test_the_other_streaming_model_files(video, trained_run, streaming_converted, capsys, name):
    result = predict_json(capsys, str(video), "--model", str(streaming_converted / name))
    assert result["mode"] == "stream"
    expected = [{"label": label} for label, _, _ in expected_events(video, trained_run / "best.ckpt")]
    assert signs_in_order(result["events"]) == signs_in_order(expected)  # PyTorch's streaming model's signs


def test_cyrillic_labels_are_drawn_as_letters():
    def drawn(label: str) -> np.ndarray:
        return annotate(np.zeros((120, 160, 3), np.uint8), label, 0.5)

    letter, unknown, other = drawn("Б"), drawn("?"), drawn("Ж")
    assert letter.any() and not np.array_equal(letter, unknown) and not np.array_equal(letter, other)
    assert (letter[-6:, :80] == (0, 200, 0)).all() and not letter[-6:, 81:].any()  # the confidence bar, half-way
