"""The Keras reference model against the PyTorch model it is loaded from (bounds: docs/parity.md)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch
from ai_edge_litert.interpreter import Interpreter

import tf_reference
from conversion.parity import FLOAT_MAX_ABS_NORMALIZED
from tests.conftest import smooth_clips, training_checkpoint, with_real_batchnorm_statistics
from tf_reference.model import TemporalShift
from torch_tsm.model import build_model as build_torch_model
from torch_tsm.shift import temporal_shift
from torch_tsm.streaming import Stream, StreamingTSM


def _torch_pair(width_mult=0.35, num_segments=4, shift="bidirectional", num_classes=5):
    torch.manual_seed(0)
    torch_model = with_real_batchnorm_statistics(build_torch_model(num_classes, num_segments, width_mult, shift))
    return torch_model, tf_reference.from_torch_model(torch_model)


@pytest.fixture(scope="module")
def pair():
    return _torch_pair()


def _nhwc(clips: torch.Tensor) -> np.ndarray:
    # (N, T, 3, H, W) -> (N, T, H, W, 3)
    return clips.permute(0, 1, 3, 4, 2).numpy()


def _torch_logits(torch_model, clips: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch_model(clips).numpy()


def _assert_parity(logits: np.ndarray, reference: np.ndarray, what: str) -> None:
    _assert_close(logits, reference, what)
    assert (logits.argmax(1) == reference.argmax(1)).all(), f"{what}: top-1 differs from torch"


def _assert_close(values: np.ndarray, reference: np.ndarray, what: str) -> None:
    normalized = np.abs(values - reference).max() / max(1.0, np.abs(reference).max())
    assert normalized <= FLOAT_MAX_ABS_NORMALIZED, f"{what}: normalized max |diff| {normalized:.2e}"


def _input_families(num_segments: int, size: int) -> dict[str, torch.Tensor]:
    # several clips (the shift masks clip boundaries) and a single clip (it does not)
    return {
        "smooth clips": smooth_clips(3, num_segments, size, seed=1),
        "random pixels": torch.rand(2, num_segments, 3, size, size, generator=torch.Generator().manual_seed(2)) * 255,
        "one clip": smooth_clips(1, num_segments, size, seed=3),
    }


@pytest.mark.parametrize(
    ("width_mult", "num_segments", "shift", "size"),
    [(0.35, 4, "bidirectional", 32), (0.5, 8, "causal", 48), (0.5, 4, "none", 40)],  # 40 px: odd maps (5, 3) after stride 2
)
def test_logits_match_torch(width_mult, num_segments, shift, size):
    torch_model, keras_model = _torch_pair(width_mult, num_segments, shift)
    for what, clips in _input_families(num_segments, size).items():
        reference = _torch_logits(torch_model, clips)
        _assert_parity(keras_model(_nhwc(clips), training=False).numpy(), reference, f"{shift} {width_mult} {size}px, {what}")
    if shift != "none":
        # The bound above is meaningful: the same weights without the shift are far off.
        unshifted = tf_reference.build_model(5, num_segments, width_mult, shift="none")
        tf_reference.load_torch_state_dict(unshifted, torch_model.state_dict())
        clips = smooth_clips(3, num_segments, size, seed=1)
        reference = _torch_logits(torch_model, clips)
        assert np.abs(unshifted(_nhwc(clips), training=False).numpy() - reference).max() > 0.1 * np.abs(reference).max()


def test_every_feature_block_matches_torch(pair):
    torch_model, keras_model = pair
    clips = smooth_clips(2, 4, 32, seed=4)
    torch_outputs = []
    hooks = [block.register_forward_hook(lambda _module, _input, output: torch_outputs.append(output)) for block in torch_model.features]
    _torch_logits(torch_model, clips)
    for hook in hooks:
        hook.remove()
    # The last layer of block i is the one named features.i (residual add) or the last named features.i.*
    names = [layer.name for layer in keras_model.layers]
    block_outputs = [
        [name for name in names if name == f"features.{i}" or name.startswith(f"features.{i}.")][-1]
        for i in range(len(torch_model.features))
    ]
    extractor = keras.Model(keras_model.input, [keras_model.get_layer(name).output for name in block_outputs])
    for i, (name, ours, theirs) in enumerate(zip(block_outputs, extractor(_nhwc(clips), training=False), torch_outputs, strict=True)):
        theirs = theirs.permute(0, 2, 3, 1).numpy()  # (N*T, C, H, W) -> (N*T, H, W, C)
        assert ours.shape == theirs.shape, f"features.{i} ({name}): shape {ours.shape} vs torch {theirs.shape}"
        normalized = np.abs(ours.numpy() - theirs).max() / max(1.0, np.abs(theirs).max())
        assert normalized <= FLOAT_MAX_ABS_NORMALIZED, f"features.{i} ({name}): normalized max |diff| {normalized:.2e}"


@pytest.mark.parametrize("mode", ["bidirectional", "causal", "none"])
@pytest.mark.parametrize("num_clips", [1, 2])
def test_temporal_shift_is_torchs(mode, num_clips):
    frames = torch.randn(num_clips * 4, 16, 3, 3, generator=torch.Generator().manual_seed(5))  # (N*T, C, H, W)
    expected = temporal_shift(frames, 4, mode=mode).permute(0, 2, 3, 1).numpy()
    x = tf.constant(frames.permute(0, 2, 3, 1).numpy())
    with tf.GradientTape() as tape:
        tape.watch(x)
        shifted = TemporalShift(4, mode)(x)
        first_fold_of_frame_0 = tf.reduce_sum(shifted[0, ..., :2])  # fold = 16 // 8
    np.testing.assert_array_equal(shifted.numpy(), expected)
    # The gradient of a shifted fold lands on the frame it came from: the next one (bidirectional),
    # none before frame 0 (causal), the frame itself (none).
    source_frame = {"bidirectional": 1, "causal": None, "none": 0}[mode]
    gradient = np.zeros(x.shape, np.float32)
    if source_frame is not None:
        gradient[source_frame, ..., :2] = 1
    np.testing.assert_array_equal(tape.gradient(first_fold_of_frame_0, x).numpy(), gradient)


def test_one_training_step_flows_through_the_shift():
    torch_model, keras_model = _torch_pair()
    clips = _nhwc(smooth_clips(2, 4, 32, seed=6))
    # Through the shift only: the logits of frame 0 of clip 0 depend on frame 1 of clip 0, never on clip 1.
    per_frame = keras.Model(keras_model.input, keras_model.get_layer("classifier.1").output)  # (N*T, K)
    x = tf.constant(clips)
    with tf.GradientTape() as tape:
        tape.watch(x)
        frame_0_logit = tf.reduce_sum(per_frame(x, training=False)[0])
    gradient = np.abs(tape.gradient(frame_0_logit, x).numpy())
    assert gradient[0, 1].max() > 0 and gradient[1].max() == 0

    before = {name: keras_model.get_layer(name).kernel.numpy() for name in ("features.0.0", "features.3.conv.0.0", "classifier.1")}
    keras_model.compile(optimizer=keras.optimizers.SGD(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = keras_model.fit(clips, np.array([0, 3]), batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    for name, kernel in before.items():
        assert not np.array_equal(keras_model.get_layer(name).kernel.numpy(), kernel), f"{name} did not train"


def test_checkpoint_round_trip(tmp_path, pair):
    torch_model, _ = pair
    torch.save(training_checkpoint(torch_model), tmp_path / "model.ckpt")
    clips = smooth_clips(2, 4, 32, seed=7)
    keras_model = tf_reference.from_torch_checkpoint(tmp_path / "model.ckpt")
    logits = keras_model(_nhwc(clips), training=False).numpy()
    _assert_parity(logits, _torch_logits(torch_model, clips), "from_torch_checkpoint")
    # The custom layers carry their configuration through Keras saving.
    keras_model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(reloaded(_nhwc(clips), training=False).numpy(), logits)


def test_mismatched_weights_raise_and_assign_nothing(tmp_path, pair):
    torch_model, keras_model = pair
    state = torch_model.state_dict()
    untouched = {variable.path: variable.numpy() for variable in keras_model.weights}

    wider = build_torch_model(5, 4, width_mult=0.5)
    torch.save(training_checkpoint(wider), tmp_path / "wider.ckpt")
    with pytest.raises(ValueError, match=r"layer features\.[\w.]+: torch .* of shape"):
        tf_reference.load_torch_checkpoint(keras_model, tmp_path / "wider.ckpt")
    with pytest.raises(ValueError, match=r"layer classifier\.1: .*shape"):
        tf_reference.load_torch_state_dict(keras_model, build_torch_model(7, 4, width_mult=0.35).state_dict())
    missing = {k: v for k, v in state.items() if k != "features.5.conv.1.1.running_var"}
    with pytest.raises(ValueError, match=r"layer features\.5\.conv\.1\.1: .*'features\.5\.conv\.1\.1\.running_var'"):
        tf_reference.load_torch_state_dict(keras_model, missing)
    with pytest.raises(ValueError, match=r"no Keras layer: \['features\.3\.extra'\]"):
        tf_reference.load_torch_state_dict(keras_model, {**state, "features.3.extra": torch.zeros(1)})

    torch.save(training_checkpoint(build_torch_model(5, 4, width_mult=0.35, shift="causal")), tmp_path / "causal.ckpt")
    with pytest.raises(ValueError, match=r"layer features\.3\.shift: shift 'bidirectional'.*'causal'"):
        tf_reference.load_torch_checkpoint(keras_model, tmp_path / "causal.ckpt")
    for variable in keras_model.weights:
        np.testing.assert_array_equal(variable.numpy(), untouched[variable.path], err_msg=f"{variable.path} changed by a failed load")


@pytest.mark.parametrize("batch_size", [1, None])  # one clip (no clip-boundary mask) and any number of clips
def test_tflite_float32_matches_torch_with_builtin_ops_only(pair, batch_size):
    torch_model, _ = pair
    keras_model = tf_reference.from_torch_model(torch_model, image_size=32, batch_size=batch_size)
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()  # applies the default XNNPACK delegate
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    assert not {op for op in ops if op.startswith("Flex") or op == "CUSTOM"}, ops
    assert not set(ops) & {"GATHER", "TRANSPOSE"}, ops  # the shift is pads, slices and concatenations
    if batch_size == 1:  # the deployed graph: XNNPACK takes all of it, in one partition
        assert ops.count("DELEGATE") == 1, ops
    (clip_input,), (logits_output,) = interpreter.get_input_details(), interpreter.get_output_details()
    for what, clips in _input_families(4, 32).items():
        if batch_size is None:
            interpreter.resize_tensor_input(clip_input["index"], [len(clips), 4, 32, 32, 3])
            batches = [clips]
        else:
            batches = [clips[i : i + 1] for i in range(len(clips))]
        interpreter.allocate_tensors()
        logits = []
        for batch in batches:
            interpreter.set_tensor(clip_input["index"], _nhwc(batch))
            interpreter.invoke()
            logits.append(interpreter.get_tensor(logits_output["index"]))
        _assert_parity(np.concatenate(logits), _torch_logits(torch_model, clips), f"tflite batch {batch_size}, {what}")


# --- the streaming twin (tf_reference.streaming) --------------------------------------------------


def test_streaming_twin_matches_torch_streaming_frame_by_frame():
    # 12 frames at 40 px (odd maps after stride 2): per-frame logits and every carried buffer, past
    # the length of one clip. A wrong buffer (order, channels, layout) shows in the buffers at once.
    torch.manual_seed(0)
    torch_model = with_real_batchnorm_statistics(build_torch_model(5, 4, 0.35, "causal"), image_size=40)
    torch_model.image_size = 40
    keras_model = tf_reference.streaming_from_torch_model(torch_model)
    stream = Stream(StreamingTSM(torch_model), 40)
    assert [tuple(t.shape) for t in keras_model.inputs[1:]] == [tuple(b.permute(0, 2, 3, 1).shape) for b in stream.buffers]
    buffers = [np.zeros(t.shape, np.float32) for t in keras_model.inputs[1:]]
    for index, frame in enumerate(smooth_clips(1, 12, 40, seed=4)[0]):  # (3, S, S)
        expected = stream(frame[None]).numpy()
        logits, *buffers = (np.asarray(t) for t in keras_model([frame.permute(1, 2, 0)[None].numpy(), *buffers], training=False))
        _assert_parity(logits, expected, f"frame {index}")
        for i, (ours, theirs) in enumerate(zip(buffers, stream.buffers)):
            # Held to the float bound of the parity contract, as the logits: a buffer is a block's whole input, and
            # the two runtimes order their float32 sums differently (both first convolutions take raw pixels
            # 0..255, FoldedStem): here at most 6.1e-5 of a buffer's largest value (1.2e-4 on a value of 0.11).
            _assert_close(ours, theirs.permute(0, 2, 3, 1).numpy(), f"frame {index}, buffer {i}")


def test_streaming_twin_refuses_a_model_without_the_causal_shift(pair):
    torch_model, _ = pair
    with pytest.raises(ValueError, match="shift='causal'.*'bidirectional'"):
        tf_reference.streaming_from_torch_model(torch_model)
