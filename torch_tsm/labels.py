"""Class names: the fixed Bukva order, and labels.txt (UTF-8, one name a line, line i = class i)."""

from pathlib import Path

from torch_tsm.errors import UserError

# The original project's order: no_event = 0, then the 33 letters of the Russian alphabet in order.
BUKVA_LABELS = ["no_event", *"АБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ"]


def write_labels(labels: list[str], path: Path) -> None:
    Path(path).write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")


def read_labels(path: Path) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a BOM, as some editors write, is not a class name
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text (byte {error.start}); save it as UTF-8") from error
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if len(set(labels)) != len(labels):
        raise UserError(f"{path}: duplicate class names")
    return labels


def check_label_count(labels: list[str], classes: int, path: Path) -> None:
    """labels.txt must name exactly the model's classes: line i names class i."""
    if len(labels) != classes:
        raise UserError(f"{path}: {len(labels)} class names for a model of {classes} classes (line i names class i)")
