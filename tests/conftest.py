import pytest
import torch

from torch_tsm.model import MobileNetV2TSM, build_model


def smooth_clips(n: int, t: int, size: int, seed: int = 0) -> torch.Tensor:
    # -> (N, T, 3, S, S) pixels 0..255: smooth random images, so that frames differ after global pooling
    # (white noise pools to the same features in every frame and hides what the shift does)
    coarse = torch.rand(n * t, 3, 4, 4, generator=torch.Generator().manual_seed(seed)) * 255
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear").view(n, t, 3, size, size)


def with_real_batchnorm_statistics(model: MobileNetV2TSM, image_size: int = 32) -> MobileNetV2TSM:
    """Random weights with default BN statistics give near-constant logits that hide any bug; a few
    forward passes in train mode give BatchNorm real statistics, so the shift changes the logits a lot."""
    batchnorms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in batchnorms:
        bn.reset_running_stats()
        bn.momentum = None  # an exact average over the passes below
    model.train()
    with torch.no_grad():
        for seed in range(3):
            model(smooth_clips(4, model.num_segments, image_size, seed=100 + seed))
    for bn in batchnorms:
        bn.momentum = 0.1
    return model.eval()


@pytest.fixture
def small_model() -> MobileNetV2TSM:
    torch.manual_seed(0)
    return with_real_batchnorm_statistics(build_model(num_classes=5, num_segments=4, width_mult=0.35))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """The demo model with the causal shift and 5 epochs instead of 6 (about 2 minutes here). Parity
    on random weights proves nothing and uint8 agreement needs real margins, so every conversion test
    works on this one; being causal, it also serves the streaming tests."""
    from torch_tsm.train import main

    output = tmp_path_factory.mktemp("trained") / "run"
    return main(["--output", str(output), "--shift", "causal", "--synthetic-clips", "1600", "200", "--max-epochs", "5"])


@pytest.fixture(scope="session")
def converted(trained_run, tmp_path_factory):
    """trained_run converted once by both routes (about 1.5 minutes): model.onnx, saved_model/,
    float32 and uint8 TFLite through onnx2tf, and float32 and uint8 TFLite from the Keras twin."""
    from conversion.to_tflite import main

    output = tmp_path_factory.mktemp("converted")
    with pytest.MonkeyPatch.context() as patch:
        # Any attempt to reach the network fails at once: the conversion must not need it.
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            patch.setenv(name, "http://127.0.0.1:9")
        for route in ("onnx", "keras"):
            main(["--checkpoint", str(trained_run / "best.ckpt"), "--output", str(output), "--calibration-clips", "100", "--route", route])
    return output


@pytest.fixture(scope="session")
def streaming_converted(trained_run, tmp_path_factory):
    """trained_run converted to streaming float32 and uint8 TFLite models by the command line
    (python -m conversion.to_tflite --streaming), by both routes: about two minutes."""
    from conversion.to_tflite import main

    output = tmp_path_factory.mktemp("streaming")
    for route in ("onnx", "keras"):
        main(["--checkpoint", str(trained_run / "best.ckpt"), "--output", str(output), "--streaming", "--calibration-clips", "48", "--route", route])
    return output
