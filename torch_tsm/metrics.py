"""Figures computed from a model's logits on a labelled dataset, and on continuous videos."""

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import multiclass_accuracy

from torch_tsm.datasets import ClipDataset, collate_clips
from torch_tsm.frames import FrameTransform
from torch_tsm.model import MobileNetV2TSM
from torch_tsm.streaming import StreamingTSM
from torch_tsm.synthetic import SyntheticVideo
from torch_tsm.transcript import VideoTruth, softmax

LIVE_VIDEOS = 40  # continuous videos of 5 signs: the 200 signs behind the live figures of a card


def stream_window_logits(frame_logits: Tensor) -> Tensor:
    """(N, T, K) -> (N, K): a stream's decision on its last T frames, the mean of the last T/2 frames' logits.
    A model trained for the stream learns a sign's class from half-way through the sign (torch_tsm.sequences),
    and a frame just after a cut or a sign still remembers what came before it; the live decision rule
    (torch_tsm.transcript) likewise smooths over a few frames, never across a change of sign."""
    return frame_logits[:, -(frame_logits.shape[1] // 2) :].mean(dim=1)


@torch.no_grad()
def predict_logits(model: MobileNetV2TSM, dataset: ClipDataset, batch_size: int = 16) -> tuple[Tensor, Tensor, Tensor | None]:
    """(M, K) clip logits and (M,) labels over the clips that decoded; for a causal model also (M, K) the
    same clips decided as a live stream decides them (None otherwise), from the same decoded clips.

    The streams: `batch_size` of them, stream j playing clip j of every batch in turn, hard cuts between
    them, its buffers carried from clip to clip. A clip's stream logits are the stream's decision at its last
    frame (stream_window_logits), computed behind whatever came before."""
    model.eval()
    streaming = StreamingTSM(model) if model.shift == "causal" else None
    outputs, streamed, targets, buffers = [], [], [], None
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_clips):
        if batch is None:
            continue
        clips = batch[0].float()  # (n, T, 3, H, W)
        outputs.append(model(clips))
        targets.append(batch[1])
        if streaming is not None:
            if buffers is None:
                buffers = [zeros.expand(len(clips), *zeros.shape[1:]) for zeros in streaming.zero_buffers(clips.shape[-1])]
            buffers = [buffer[: len(clips)] for buffer in buffers]  # a short last batch ends the streams beyond it
            frame_logits, buffers = streaming.play(clips, buffers)
            streamed.append(stream_window_logits(frame_logits))
    return torch.cat(outputs), torch.cat(targets), torch.cat(streamed) if streaming is not None else None


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


@torch.no_grad()
def stream_probabilities(
    model: MobileNetV2TSM, videos: list[SyntheticVideo], frame_step: int, batch: int = 8
) -> list[tuple[VideoTruth, np.ndarray, np.ndarray]]:
    """Each video's truth, (L, K) probabilities of its L kept frames (every `frame_step`-th from the first) as
    a causal model's live stream gives them, and their frame numbers. The stream over a video is computed as
    the model on all its kept frames as one clip (frame_logits): what the streaming model computes frame by
    frame. A causal frame depends on no later frame, so `batch` videos go through at once, each padded at its
    end to the longest (one input shape: the CPU's kernels are prepared once, not for every length)."""
    transform = FrameTransform(model.image_size)
    rendered = []
    for video in videos:
        frames, signs = video.render()
        kept = np.arange(0, len(frames), frame_step)
        pixels = transform([frames[k] for k in kept], np.random.default_rng(0))  # evaluation: no randomness drawn
        truth = VideoTruth([(sign.label, sign.begin, sign.end) for sign in signs], len(frames), video.fps)
        rendered.append((truth, pixels, kept))
    longest = max(len(kept) for _, _, kept in rendered)
    results = []
    for start in range(0, len(rendered), batch):
        group = rendered[start : start + batch]
        padded = np.zeros((len(group), longest, *group[0][1].shape[1:]), np.uint8)
        for row, (_, pixels, _) in enumerate(group):
            padded[row, : len(pixels)] = pixels
        logits = model.frame_logits(torch.from_numpy(padded).permute(0, 1, 4, 2, 3).float()).numpy()  # (n, longest, K)
        results += [(truth, softmax(logits[row, : len(kept)]), kept) for row, (truth, _, kept) in enumerate(group)]
    return results
