"""The model card, model_card.json beside a model's files: the one module that reads and writes it.

Training writes it (config, labels, decision rule, validation figures); conversion adds its figures
under "conversion" and "streaming", parity under "parity", runtime.live under "live". Every write
goes to a temporary file first and then replaces the card, so an interrupted write never leaves a
half-written card behind.
"""

import json
import os
from pathlib import Path

from torch_tsm.errors import UserError

CARD_NAME = "model_card.json"


def card_path(model_dir: str | Path) -> Path:
    return Path(model_dir) / CARD_NAME


def read_card(model_dir: str | Path, *fields: str) -> dict:
    """The card of a model folder; a one-line UserError naming the card when it is missing, is not JSON
    or lacks any of `fields`."""
    path = card_path(model_dir)
    if not path.is_file():
        raise UserError(f"{path}: not found; {model_dir} is not a model folder written by torch_tsm.train")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: not a model card ({error})") from error
    if not isinstance(card, dict):
        raise UserError(f"{path}: not a model card (a JSON {type(card).__name__}, not an object)")
    missing = [field for field in fields if field not in card]
    if missing:
        raise UserError(f"{path}: no {', '.join(missing)} in the card; write it with torch_tsm.train")
    return card


def card_beside(model_file: str | Path) -> dict:
    """The card beside a model file (or a SavedModel folder), or {} where there is none."""
    folder = Path(model_file).parent
    return read_card(folder) if card_path(folder).is_file() else {}


def card_segments(model_file: str | Path) -> int:
    """T of a streaming model file (its clip length in training), from the card beside it: the file itself
    takes one frame and cannot tell."""
    card = card_beside(model_file)
    sections = [*card.get("streaming", {}).values(), card.get("config", {})]  # streaming: one section a conversion route
    segments = next((section["num_segments"] for section in sections if "num_segments" in section), None)
    if segments is None:
        raise UserError(f"{card_path(Path(model_file).parent)} with the model's frame count (num_segments) not found beside {model_file}")
    return int(segments)


def write_card(model_dir: str | Path, card: dict) -> None:
    """Writes the whole card atomically: a temporary file beside it, then one rename over the old card."""
    path = card_path(model_dir)
    temporary = path.with_name(f".{CARD_NAME}.{os.getpid()}.tmp")  # the process's own: two writers never share one
    try:
        temporary.write_text(json.dumps(card, indent=2, ensure_ascii=False), encoding="utf-8")
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def update_card(model_dir: str | Path, labels: list[str], figures: dict | list, *keys: str) -> None:
    """Writes `figures` at card[keys[0]][keys[1]]..., keeping the rest of the card; a folder without a
    card gets a new one (a model converted or scored outside training)."""
    card = read_card(model_dir) if card_path(model_dir).is_file() else {"model": "MobileNetV2-TSM", "labels": labels}
    section = card
    for key in keys[:-1]:
        section = section.setdefault(key, {})
    section[keys[-1]] = figures
    write_card(model_dir, card)


def merge_cards(trained_dir: str | Path, converted_dir: str | Path) -> None:
    """A conversion's own output folder becomes a model folder of its own: its card takes what training
    wrote (the data, the labels, the decision rule, the validation figures) beside the conversion's figures."""
    write_card(converted_dir, read_card(trained_dir) | read_card(converted_dir))
