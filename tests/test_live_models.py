"""Live recognition with the tests' model: its card's decision rule and live figures, runtime.live on the
streaming uint8 model, and both against an independent computation of the same letters."""

import json

import numpy as np
import pytest

from runtime.live import main as live_main
from runtime.stream import StreamingTFLiteRunner
from torch_tsm.card import read_card
from torch_tsm.clips import data_module
from torch_tsm.metrics import stream_probabilities
from torch_tsm.model import load_model
from torch_tsm.transcript import DecisionRule, VideoTruth, live_figures, printed_letters, softmax

VIDEOS = 12  # of the card's 40 held-out test videos: 60 signs, enough to tell a working stream from a broken one


@pytest.fixture(scope="module")
def live_folder(trained_run, streaming_converted, tmp_path_factory):
    """The tests' run folder with its streaming uint8 model beside the checkpoint and the card."""
    folder = tmp_path_factory.mktemp("live")
    for name in ("best.ckpt", "model_card.json", "labels.txt"):
        (folder / name).write_bytes((trained_run / name).read_bytes())
    (folder / "model_streaming_uint8.tflite").symlink_to(streaming_converted / "model_streaming_uint8.tflite")
    return folder


def test_the_card_holds_a_decision_rule_and_the_float_stream_s_live_figures(trained_run):
    card = read_card(trained_run)
    rule = DecisionRule.from_dict(card["decision"])
    assert rule.frame_step == 2 and card["decision"]["chosen_on_validation"]["signs"] == 200
    figures = card["live"]["best.ckpt"]["stream"]
    assert figures["signs"] == 200 and figures["videos"] == 40
    assert figures["letter_accuracy"] == 1 - (figures["substitutions"] + figures["deletions"] + figures["insertions"]) / 200


def test_live_scores_the_uint8_stream_as_an_independent_computation_does(live_folder, capsys):
    figures = live_main(["--model", str(live_folder / "model_streaming_uint8.tflite"), "--videos", str(VIDEOS)])
    assert "letter accuracy on 60 signs of 12 videos" in capsys.readouterr().out
    assert (
        json.loads((live_folder / "model_card.json").read_text(encoding="utf-8"))["live"]["model_streaming_uint8.tflite"]["stream"]
        == figures
    )
    # The same letters without predict's loop: each video's kept frames through LiteRT, then the card's rule.
    card = read_card(live_folder)
    rule = DecisionRule.from_dict(card["decision"])
    runner = StreamingTFLiteRunner(live_folder / "model_streaming_uint8.tflite")
    videos = data_module(card["config"]).videos("test", VIDEOS)
    scored = []
    for video in videos:
        frames, signs = video.render()
        kept = np.arange(0, len(frames), rule.frame_step)
        probabilities = softmax(runner.run_stream(frames[kept]))
        truth = VideoTruth([(sign.label, sign.begin, sign.end) for sign in signs], len(frames), video.fps)
        scored.append((truth, printed_letters(probabilities, kept, video.fps, card["labels"], rule)))
    assert figures == live_figures(scored)
    # uint8 spells as the float stream of PyTorch on the same 60 signs: at most two letters apart.
    streams = stream_probabilities(load_model(live_folder / "best.ckpt"), videos, rule.frame_step)
    float_figures = live_figures([(truth, printed_letters(p, kept, truth.fps, card["labels"], rule)) for truth, p, kept in streams])
    assert abs(figures["letter_accuracy"] - float_figures["letter_accuracy"]) <= 2 / 60, (figures, float_figures)


def test_live_says_what_is_wrong_in_one_line(live_folder, tmp_path, capsys):
    from torch_tsm.cli import run

    assert run(live_main, ["--model", str(tmp_path / "nowhere.tflite")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nowhere.tflite'}: model not found"
    (tmp_path / "model_streaming_uint8.tflite").symlink_to(live_folder / "model_streaming_uint8.tflite")
    assert run(live_main, ["--model", str(tmp_path / "model_streaming_uint8.tflite")]) == 2
    assert "no model_card.json beside it" in capsys.readouterr().err
