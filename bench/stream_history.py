"""Causal models decided as a live stream decides, against the same clips decided as clips: the figures
behind README's "A stream remembers more than a clip".

On the run's 200 held-out clips (every class in turn), each a window of T frames, three decisions:
- clip: the clip model on the clip alone (zero shift boundary at its first frame);
- after cuts: the clips played back to back as one stream (a shuffled order, hard cuts), each decided
  at its last frame, with the previous clips in the stream's state;
- held: each clip played 5 times in a row as one stream and decided at the end: a static sign held
  (played forward and backward in turn) or a motion repeated, as a user shows a sign to a camera.
A clip is decided as the clip model decides it, by the mean of its T frame logits; the stream as the model
card's `validation.stream_accuracy` decides it (torch_tsm.metrics.stream_window_logits: the mean of its
last T/2 frames' logits, the frames that stream training teaches to show the sign).
A stream is computed as the clip model on the stream as one clip (MobileNetV2TSM.frame_logits), which is
what the streaming model computes frame by frame.

    python -m bench.stream_history RUN [RUN ...]
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from torch_tsm.card import read_card
from torch_tsm.clips import held_out_clips
from torch_tsm.metrics import stream_window_logits
from torch_tsm.model import load_model
from torch_tsm.synthetic import STATIC_GLYPHS

CLIPS, PLAYS = 200, 5


def stream_decision(frame_logits: np.ndarray, t: int) -> int:
    # (L, K) -> the class the stream decides at its last frame, from its last T frames
    return int(stream_window_logits(torch.from_numpy(frame_logits[None, -t:]))[0].argmax())


def stream_frame_logits(model, frames: np.ndarray) -> np.ndarray:
    # (L, S, S, 3) uint8 -> (L, K): per-frame logits of the whole stream as one clip
    with torch.no_grad():
        return model.frame_logits(torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)[None].float())[0].numpy()


def held_stream(clip: np.ndarray, static: bool) -> np.ndarray:
    # (T, S, S, 3) -> (PLAYS * T, S, S, 3): a static sign held (forward and backward in turn) or a motion repeated
    return np.concatenate([clip if play % 2 == 0 or not static else clip[::-1] for play in range(PLAYS)])


def decisions(run: Path) -> dict[str, float]:
    card = read_card(run)
    model = load_model(run / "best.ckpt").eval()
    clips, labels = held_out_clips(card, CLIPS)
    t = clips.shape[1]
    clip = np.stack([stream_frame_logits(model, c).mean(0) for c in clips]).argmax(1)
    order = np.random.default_rng(0).permutation(len(clips))
    stream = clips[order].reshape(-1, *clips.shape[2:])
    # Each shifted block reaches one frame back, so a frame's logits depend on the `depth` frames before it
    # and no others: each clip is decided from its own frames and the `depth` before it, exactly.
    depth = len(model.shifted_blocks())
    after_cuts = np.array(
        [stream_decision(stream_frame_logits(model, stream[max(0, i * t - depth) : (i + 1) * t]), t) for i in range(len(clips))]
    )
    held = np.array(
        [
            stream_decision(stream_frame_logits(model, held_stream(c, model.labels[label] in STATIC_GLYPHS)), t)
            for c, label in zip(clips, labels)
        ]
    )
    return {
        "clip": (clip == labels).mean(),
        "after cuts": (after_cuts == labels[order]).mean(),
        "held": (held == labels).mean(),
        "training s": card["training"]["seconds"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stream_history", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="training run folders of causal models")
    runs = parser.parse_args(argv).runs
    rows = {run: decisions(run) for run in runs}
    columns = list(next(iter(rows.values())))
    print("| run | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for run, row in rows.items():
        cells = [f"{value:.1%}" if isinstance(value, float) and value <= 1 else str(value) for value in row.values()]
        print(f"| {run} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
