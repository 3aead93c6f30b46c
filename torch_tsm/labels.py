"""Class names: the fixed Bukva order, and labels.txt (UTF-8, one name a line, line i = class i)."""

from pathlib import Path

# The original project's order: no_event = 0, then the 33 letters of the Russian alphabet in order.
BUKVA_LABELS = ["no_event", *"АБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ"]


def write_labels(labels: list[str], path: Path) -> None:
    Path(path).write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")


def read_labels(path: Path) -> list[str]:
    labels = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(set(labels)) != len(labels):
        raise ValueError(f"{path}: duplicate class names")
    return labels
