import os
import pickle

import pytest
import torch
from torchvision.models import mobilenet_v2

from tests.conftest import smooth_clips, training_checkpoint, with_real_batchnorm_statistics
from torch_tsm.model import ShiftedInvertedResidual, build_model, load_model


def test_shapes_and_shift_placement():
    model = build_model(num_classes=34, num_segments=8, width_mult=1.0)
    # The paper's MobileNetV2-TSM: the residual blocks, 10 of them at width 1.0.
    assert [i for i, m in enumerate(model.features) if isinstance(m, ShiftedInvertedResidual)] == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]
    assert model(torch.rand(2, 8, 3, 64, 64) * 255).shape == (2, 34)
    with pytest.raises(ValueError, match="expects 8 frames"):
        model(torch.rand(1, 4, 3, 64, 64))


def test_state_dict_keys_match_torchvision():
    # Same keys and shapes as torchvision's MobileNetV2, so its weights (and tf_reference's mapping) apply directly.
    ours = build_model(num_classes=10, width_mult=0.5).state_dict()
    theirs = mobilenet_v2(num_classes=10, width_mult=0.5).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_local_pretrained_state_dict(tmp_path):
    source = mobilenet_v2(num_classes=1000, width_mult=0.5)
    torch.save(source.state_dict(), tmp_path / "backbone.pt")
    model = build_model(num_classes=7, width_mult=0.5, pretrained=tmp_path / "backbone.pt")
    assert torch.equal(model.features[0][0].weight, source.features[0][0].weight)
    with pytest.raises(ValueError, match="do not fit"):
        build_model(num_classes=7, width_mult=1.0, pretrained=tmp_path / "backbone.pt")


def test_pretrained_from_a_training_checkpoint_of_ours(tmp_path):
    # Fine-tuning our own model (e.g. trained small, then at 224 px): the checkpoint's whole network loads,
    # the classifier too when the classes match.
    source = build_model(num_classes=7, width_mult=0.35, shift="causal")
    torch.save(training_checkpoint(source, labels=[f"c{i}" for i in range(7)]), tmp_path / "best.ckpt")
    model = build_model(num_classes=7, width_mult=0.35, shift="causal", pretrained=tmp_path / "best.ckpt")
    assert all(torch.equal(value, source.state_dict()[key]) for key, value in model.state_dict().items())


def test_gradients_reach_every_parameter(small_model):
    small_model.train()
    loss = small_model(torch.rand(2, 4, 3, 32, 32) * 255).logsumexp(1).sum()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in small_model.parameters())


def test_shift_changes_the_output_and_none_is_tsn(small_model):
    clips = smooth_clips(2, 4, 32)
    plain = build_model(num_classes=5, num_segments=4, width_mult=0.35, shift="none").eval()
    plain.load_state_dict(small_model.state_dict())
    with torch.no_grad():
        shifted, unshifted = small_model(clips), plain(clips)
        # TSN: the mean of independent per-frame logits.
        per_frame = torch.stack([plain.forward_frames(clips[:, t]) for t in range(4)], 1).mean(1)
    assert torch.allclose(unshifted, per_frame, atol=1e-4)
    assert (shifted - unshifted).abs().max() > 0.1 * unshifted.abs().max()


def test_batch_of_one_equals_batch(small_model):
    clips = torch.rand(3, 4, 3, 32, 32) * 255
    with torch.no_grad():
        together = small_model(clips)
        alone = torch.cat([small_model(clips[i : i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-4)


def test_load_model_round_trip(tmp_path, small_model):
    torch.save(training_checkpoint(small_model, ["а", "б", "в", "г", "д"]), tmp_path / "model.ckpt")
    loaded = load_model(tmp_path / "model.ckpt")
    clips = torch.rand(1, 4, 3, 32, 32) * 255
    assert not loaded.training and loaded.labels[0] == "а" and loaded.image_size == 32 and loaded.shift == "bidirectional"
    with torch.no_grad():
        assert torch.equal(loaded(clips), small_model(clips))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_load_model_refuses_pickled_payload(tmp_path, small_model):
    marker = str(tmp_path / "payload-ran")
    checkpoint = training_checkpoint(small_model, list("abcde"))
    checkpoint["hyper_parameters"]["extra"] = _Payload(marker)
    with open(tmp_path / "evil.ckpt", "wb") as handle:
        pickle.dump(checkpoint, handle)  # a zip-less pickle, as an attacker would write it
    torch.save(checkpoint, tmp_path / "evil-zip.ckpt")
    for name in ("evil.ckpt", "evil-zip.ckpt"):
        with pytest.raises(ValueError, match="refusing to load"):
            load_model(tmp_path / name)
    assert not os.path.exists(marker)


def test_pretrained_refuses_a_pickled_file(tmp_path):
    # --pretrained with a local file goes through the same safe loading as checkpoints.
    marker = str(tmp_path / "payload-ran")
    state = mobilenet_v2(num_classes=1000, width_mult=0.5).state_dict()
    state["extra"] = _Payload(marker)
    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump(state, handle)
    torch.save(state, tmp_path / "evil-zip.pt")
    for name in ("evil.pt", "evil-zip.pt"):
        with pytest.raises(ValueError, match=f"refusing to load .*{name}"):
            build_model(num_classes=7, width_mult=0.5, pretrained=tmp_path / name)
    assert not os.path.exists(marker)


def test_load_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_model(tmp_path / "missing.ckpt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a torch_tsm training checkpoint"):
        load_model(tmp_path / "other.ckpt")


def test_real_batchnorm_statistics_make_random_models_sensitive():
    model = with_real_batchnorm_statistics(build_model(num_classes=5, num_segments=4, width_mult=0.35))
    with torch.no_grad():
        logits = model(smooth_clips(2, 4, 32))
    assert logits.std(0).max() > 0.1 * logits.abs().max()  # different clips, different logits
