"""torch_tsm.card: the one reader and writer of model_card.json; runtime.models.open_model: the one opener of a model file."""

import json

import pytest

from runtime.models import open_model
from torch_tsm.card import CARD_NAME, card_beside, merge_cards, read_card, update_card, write_card
from torch_tsm.errors import UserError
from torch_tsm.labels import read_labels


def test_a_card_that_is_missing_broken_or_incomplete_is_one_line_naming_it(tmp_path):
    card = tmp_path / CARD_NAME
    with pytest.raises(UserError, match=rf"^{card}: not found; .* not a model folder written by torch_tsm\.train$"):
        read_card(tmp_path)
    card.write_text("{ not json", encoding="utf-8")
    with pytest.raises(UserError, match=rf"^{card}: not a model card \(Expecting property name"):
        read_card(tmp_path)
    card.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(UserError, match=rf"^{card}: not a model card \(a JSON list, not an object\)$"):
        read_card(tmp_path)
    card.write_text('{"labels": ["a"]}', encoding="utf-8")
    with pytest.raises(UserError, match=rf"^{card}: no config, checkpoint in the card"):
        read_card(tmp_path, "labels", "config", "checkpoint")


def test_writes_replace_the_card_whole_and_merge_sections(tmp_path):
    assert card_beside(tmp_path / "model.tflite") == {}
    update_card(tmp_path, ["a", "b"], {"seconds": 1.0}, "conversion", "onnx")
    update_card(tmp_path, ["a", "b"], {"seconds": 2.0}, "conversion", "keras")
    card = read_card(tmp_path)
    assert card["labels"] == ["a", "b"] and card["conversion"] == {"onnx": {"seconds": 1.0}, "keras": {"seconds": 2.0}}
    assert card_beside(tmp_path / "model.tflite") == card
    assert [path.name for path in tmp_path.iterdir()] == [CARD_NAME]  # no temporary file left beside it

    trained = tmp_path / "trained"
    trained.mkdir()
    write_card(trained, {"labels": ["a", "b"], "config": {"data": "synthetic"}})
    merge_cards(trained, tmp_path)
    merged = json.loads((tmp_path / CARD_NAME).read_text(encoding="utf-8"))
    assert merged["config"] == {"data": "synthetic"} and merged["conversion"]["keras"] == {"seconds": 2.0}


def test_open_model_gives_a_checkpoint_the_same_attributes_as_clip_and_stream(trained_run):
    config = read_card(trained_run, "config")["config"]
    clip = open_model(trained_run / "best.ckpt")
    stream = open_model(trained_run / "best.ckpt", streaming=True)
    assert (clip.streaming, stream.streaming) == (False, True)
    for runner in (clip, stream):
        assert runner.labels == read_labels(trained_run / "labels.txt")
        assert (runner.image_size, runner.num_segments, runner.num_classes) == (
            config["image_size"],
            config["num_segments"],
            len(runner.labels),
        )
    with pytest.raises(UserError, match="nowhere.onnx: model not found"):
        open_model(trained_run / "nowhere.onnx")
