"""The tests' trained model (tests/fixture_model.py) has the margins that the uint8 tests stand on.

Its weights are the same bits on every machine; its logits are this machine's arithmetic. Every uint8
gate of the suite (top-1 agreement >= 98%) holds by a wide margin when no clip's two best classes lie
near a tie. This checks that they do not, with the current model code and data: a regenerated model that
learnt too little, a change to the built-in data, or a broken shift (the direction pairs are the same
frames in another order, so only the shift tells them apart) fails here, by name, instead of as a
uint8 agreement of 96% somewhere else.
"""

from tests.fixture_model import MIN_MARGIN, validation_margins
from torch_tsm.card import read_card

# MIN_MARGIN: measured here, the smallest margin is 1.46 logits (median 9.8).


def test_every_validation_clip_is_right_with_a_margin(trained_run):
    margins = validation_margins(trained_run)
    assert len(margins) == 200 and margins.min() >= MIN_MARGIN
    card = read_card(trained_run)
    assert card["validation"]["accuracy"] == 1.0 and card["validation"]["direction_pair_accuracy"] == 1.0  # training's own figures, here
