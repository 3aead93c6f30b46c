"""temporal_shift, its export form temporal_shift_conv and the stream's one-frame form causal_shift_step against a
hand-written frame-by-frame loop on tiny tensors."""

import pytest
import torch

from torch_tsm.model import build_model, export_form
from torch_tsm.shift import causal_shift_step, shift_taps, temporal_shift, temporal_shift_conv

SHIFTS = [temporal_shift, temporal_shift_conv]


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
@pytest.mark.parametrize("shift", SHIFTS)
def test_matches_hand_written_loop(shift, mode, clips, num_segments, channels, fold_div):
    x = torch.randn(clips * num_segments, channels, 2, 3)
    expected = reference_shift(x, num_segments, fold_div, mode)
    assert torch.equal(shift(x, num_segments, fold_div, mode), expected)


@pytest.mark.parametrize("mode", ["bidirectional", "causal"])
def test_export_form_is_the_training_shift_bit_for_bit(mode):
    # Several clips stacked, channels-last memory as in training, values of every magnitude: equal, not close.
    x = torch.randn(3 * 8, 32, 5, 7) * torch.logspace(-6, 6, 32).view(1, -1, 1, 1)
    x = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(temporal_shift_conv(x, 8, mode=mode), temporal_shift(x, 8, mode=mode))


@pytest.mark.parametrize("channels, fold_div, height, width", [(16, 8, 5, 7), (12, 4, 1, 3), (9, 2, 4, 4), (8, 8, 2, 1)])
def test_stream_step_is_the_causal_shift_frame_by_frame_bit_for_bit(channels, fold_div, height, width):
    # A stream of T frames, each shifted with the previous frame's input (zeros before the first): frame for
    # frame the clip's causal shift, equal, not close, on values of every magnitude.
    frames = torch.randn(6, channels, height, width) * torch.logspace(-6, 6, channels).view(1, -1, 1, 1)
    expected = reference_shift(frames, 6, fold_div, "causal")
    previous = torch.zeros_like(frames[:1])
    for t in range(6):
        assert torch.equal(causal_shift_step(frames[t : t + 1], previous, fold_div), expected[t : t + 1])
        previous = frames[t : t + 1]


def test_shift_taps_pick_one_frame_per_channel():
    taps = shift_taps(16, 8, "bidirectional")
    assert taps.sum(dim=1).eq(1).all()
    assert taps[:2].tolist() == [[0, 0, 1]] * 2 and taps[2:4].tolist() == [[1, 0, 0]] * 2 and taps[4:].eq(torch.tensor([0.0, 1, 0])).all()
    assert shift_taps(16, 8, "causal")[:2].tolist() == [[1, 0, 0]] * 2 and shift_taps(16, 8, "none")[:, 1].eq(1).all()


@pytest.mark.parametrize("mode", ["bidirectional", "causal"])
def test_model_in_export_form_gives_the_same_logits(mode):
    torch.manual_seed(0)
    model = build_model(num_classes=5, num_segments=4, width_mult=0.35, shift=mode).eval()
    clips = torch.rand(2, 4, 3, 32, 32) * 255
    with torch.no_grad():
        expected = model(clips)
        with export_form(model):
            assert all(block.shift_fn is temporal_shift_conv for block in model.shifted_blocks())
            exported = model(clips)
    assert all(block.shift_fn is temporal_shift for block in model.shifted_blocks())
    torch.testing.assert_close(exported, expected, rtol=0, atol=1e-6 * max(1.0, expected.abs().max().item()))


@pytest.mark.parametrize("shift", SHIFTS)
def test_known_values_bidirectional(shift):
    # One clip of 3 frames, 8 channels, fold 1: frame values t*10 + channel, 1x1 pixels.
    x = torch.tensor([[t * 10.0 + c for c in range(8)] for t in range(3)]).view(3, 8, 1, 1)
    out = shift(x, num_segments=3, fold_div=8).view(3, 8)
    assert out[:, 0].tolist() == [10.0, 20.0, 0.0]  # from the next frame, zero at the end (no wrap-around)
    assert out[:, 1].tolist() == [0.0, 1.0, 11.0]  # from the previous frame, zero at the start
    assert torch.equal(out[:, 2:], x.view(3, 8)[:, 2:])


@pytest.mark.parametrize("shift", SHIFTS)
def test_no_leak_between_clips(shift):
    x = torch.ones(2 * 4, 8, 1, 1)
    x[4:] = 2  # second clip
    out = shift(x, num_segments=4, fold_div=8).view(8, 8)
    assert out[3, 0] == 0 and out[4, 1] == 0  # clip boundaries stay empty
    assert out[2, 0] == 1 and out[5, 1] == 2


@pytest.mark.parametrize("shift", SHIFTS)
def test_gradients_flow_through_the_shift(shift):
    x = torch.randn(8, 16, 2, 2, requires_grad=True)
    shift(x, 8).sum().backward()
    # The first frame's next-frame fold and the last frame's previous-frame fold go nowhere; the rest is used once.
    assert x.grad[0, 0:2].eq(0).all() and x.grad[7, 2:4].eq(0).all()
    assert x.grad[1:, 0:2].eq(1).all() and x.grad[:7, 2:4].eq(1).all() and x.grad[:, 4:].eq(1).all()


@pytest.mark.parametrize("shift", SHIFTS)
def test_errors(shift):
    with pytest.raises(ValueError, match="unknown shift mode"):
        shift(torch.zeros(8, 8, 1, 1), 8, mode="circular")
    with pytest.raises(ValueError, match="whole number"):
        shift(torch.zeros(7, 8, 1, 1), 8)
