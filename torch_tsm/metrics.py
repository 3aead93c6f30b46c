"""Figures computed from a model's logits on a labelled dataset."""

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import multiclass_accuracy

from torch_tsm.datasets import ClipDataset, collate_clips


@torch.no_grad()
def predict_logits(model: torch.nn.Module, dataset: ClipDataset, batch_size: int = 16) -> tuple[Tensor, Tensor]:
    # -> (M, K) logits, (M,) labels over the clips that decoded
    model.eval()
    outputs, targets = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_clips):
        if batch is not None:
            outputs.append(model(batch[0].float()))
            targets.append(batch[1])
    return torch.cat(outputs), torch.cat(targets)


def accuracy_figures(logits: Tensor, labels: Tensor) -> dict[str, float]:
    num_classes = logits.shape[1]
    return {
        "accuracy": multiclass_accuracy(logits, labels, num_classes, average="micro").item(),
        "top3": multiclass_accuracy(logits, labels, num_classes, top_k=min(3, num_classes), average="micro").item(),
    }


def pair_accuracy(logits: Tensor, labels: Tensor, names: list[str], pairs: list[tuple[str, str]]) -> float:
    """Over clips of either class of each pair: how often the pair member scored higher is the right one."""
    correct, total = 0, 0
    for first, second in pairs:
        a, b = names.index(first), names.index(second)
        members = (labels == a) | (labels == b)
        chosen = torch.where(logits[members, a] >= logits[members, b], a, b)
        correct += int((chosen == labels[members]).sum())
        total += int(members.sum())
    return correct / max(1, total)
