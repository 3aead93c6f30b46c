"""temporal_shift against a hand-written frame-by-frame loop on tiny tensors."""

import pytest
import torch

from torch_tsm.shift import temporal_shift


def reference_shift(x: torch.Tensor, num_segments: int, fold_div: int, mode: str) -> torch.Tensor:
    # (N*T, C, H, W) -> (N*T, C, H, W), one element at a time, straight from the paper's definition
    out = x.clone()
    if mode == "none":
        return out
    fold = x.shape[1] // fold_div
    clips = x.shape[0] // num_segments
    for n in range(clips):
        for t in range(num_segments):
            row = n * num_segments + t
            if mode == "causal":
                out[row, :fold] = x[row - 1, :fold] if t > 0 else 0
            else:
                out[row, :fold] = x[row + 1, :fold] if t < num_segments - 1 else 0
                out[row, fold : 2 * fold] = x[row - 1, fold : 2 * fold] if t > 0 else 0
    return out


@pytest.mark.parametrize("mode", ["bidirectional", "causal", "none"])
@pytest.mark.parametrize("clips", [1, 3])
@pytest.mark.parametrize("num_segments, channels, fold_div", [(8, 16, 8), (4, 12, 4), (3, 10, 8), (5, 9, 2), (2, 8, 8)])
def test_matches_hand_written_loop(mode, clips, num_segments, channels, fold_div):
    x = torch.randn(clips * num_segments, channels, 2, 3)
    expected = reference_shift(x, num_segments, fold_div, mode)
    assert torch.equal(temporal_shift(x, num_segments, fold_div, mode), expected)


def test_known_values_bidirectional():
    # One clip of 3 frames, 8 channels, fold 1: frame values t*10 + channel, 1x1 pixels.
    x = torch.tensor([[t * 10.0 + c for c in range(8)] for t in range(3)]).view(3, 8, 1, 1)
    out = temporal_shift(x, num_segments=3, fold_div=8).view(3, 8)
    assert out[:, 0].tolist() == [10.0, 20.0, 0.0]  # from the next frame, zero at the end (no wrap-around)
    assert out[:, 1].tolist() == [0.0, 1.0, 11.0]  # from the previous frame, zero at the start
    assert torch.equal(out[:, 2:], x.view(3, 8)[:, 2:])


def test_no_leak_between_clips():
    x = torch.ones(2 * 4, 8, 1, 1)
    x[4:] = 2  # second clip
    out = temporal_shift(x, num_segments=4, fold_div=8).view(8, 8)
    assert out[3, 0] == 0 and out[4, 1] == 0  # clip boundaries stay empty
    assert out[2, 0] == 1 and out[5, 1] == 2


def test_gradients_flow_through_the_shift():
    x = torch.randn(8, 16, 2, 2, requires_grad=True)
    temporal_shift(x, 8).sum().backward()
    # The first frame's next-frame fold and the last frame's previous-frame fold go nowhere; the rest is used once.
    assert x.grad[0, 0:2].eq(0).all() and x.grad[7, 2:4].eq(0).all()
    assert x.grad[1:, 0:2].eq(1).all() and x.grad[:7, 2:4].eq(1).all() and x.grad[:, 4:].eq(1).all()


def test_errors():
    with pytest.raises(ValueError, match="unknown shift mode"):
        temporal_shift(torch.zeros(8, 8, 1, 1), 8, mode="circular")
    with pytest.raises(ValueError, match="whole number"):
        temporal_shift(torch.zeros(7, 8, 1, 1), 8)
