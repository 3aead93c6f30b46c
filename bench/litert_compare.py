"""Row 14: our uint8 TSM graph against what litert-torch (Google's PyTorch -> LiteRT converter) makes of the
same model, int8 by PT2E static per-channel quantization: the converter a user would pick instead.

litert-torch is a bench-only extra, never a dependency of the toolkit: `make bench-compare` installs it into
a venv of its own and runs every benchmark there. Without it the row says so and is skipped. Both models
run in turns in this one process on the same real clip.

    python -m bench.litert_compare [--quick]
"""

import importlib.util
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from bench.common import WORK, Report, Row, Settings, alternate_times, load_average, ratio_row, run_alone
from bench.latency import tflite_call
from bench.models import benchmark_models, spec, synthetic_data
from conversion.clips import load_clips
from conversion.inspect import inspect_tflite
from torch_tsm.model import load_model

NOT_INSTALLED = "not installed: make bench-compare"
TARGET = 0.95  # ours / litert-torch: ours must be the faster


class AsUsersHaveIt(nn.Module):
    """The trained model as a user hands it to litert-torch: its own forward, normalization inside, none of
    our export's rewrites (FoldedStem's constant borders become BROADCAST_TO ops that LiteRT 2.3 refuses)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: Tensor) -> Tensor:
        # (T, 3, H, W) pixels 0..255 -> (1, K) clip logits
        return self.model(frames[None])


def litert_torch_int8(checkpoint: Path, calibration: np.ndarray, output: Path) -> Path:
    """The checkpoint's clip model, frames (T, 3, S, S) float 0..255 in, through litert-torch with the PT2E
    recipe its documentation gives for static int8: symmetric per-channel weights, calibrated activations."""
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e  # PT2E moved out of torch.ao into torchao

    if output.is_file():
        return output
    model = AsUsersHaveIt(load_model(checkpoint)).eval()
    frames = [torch.from_numpy(clip).permute(0, 3, 1, 2).float() for clip in calibration]  # (T, 3, S, S) each
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(model, (frames[0],)).module(), quantizer)
    with torch.no_grad():
        for clip in frames:
            prepared(clip)
    quantized = convert_pt2e(prepared, fold_quantize=False)
    edge = litert_torch.convert(quantized, (frames[0],), quant_config=QuantConfig(pt2e_quantizer=quantizer))
    output.parent.mkdir(parents=True, exist_ok=True)
    edge.export(str(output))
    return output


def float_frames_call(path: Path, clip: np.ndarray, threads: int) -> Callable[[], None]:
    # clip (T, S, S, 3) uint8 -> a call that runs the litert-torch model once: it takes float frames (T, 3, S, S)
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.ascontiguousarray(clip.transpose(0, 3, 1, 2), dtype=np.float32))
    return interpreter.invoke


def measure(settings: Settings) -> Report:
    command = f"python -m bench.litert_compare{settings.flag}"
    measure_name = f"clip latency, TSM: our uint8 TFLite / litert-torch int8 (PT2E), same weights, same clip ({settings.label})"
    if importlib.util.find_spec("litert_torch") is None:
        return Report([Row("14", measure_name, NOT_INSTALLED, f"<= {TARGET:g}", None, command)])
    ours = benchmark_models(settings)["bidirectional"]
    calibration, _ = load_clips(synthetic_data(spec(settings, "bidirectional")), "train", 8)
    clips, _ = load_clips(synthetic_data(spec(settings, "none")), "val", 1)
    theirs = litert_torch_int8(ours.folder / "checkpoint" / "model.ckpt", calibration, WORK / f"litert-torch-{spec(settings, 'bidirectional').key}.tflite")
    calls: dict[str, Callable[[], object]] = {"ours": tflite_call(ours.uint8, clips[0], settings.threads)[0]}
    calls["litert-torch"] = float_frames_call(theirs, clips[0], settings.threads)
    load_before = load_average()
    seconds = {name: statistics.median(values) for name, values in alternate_times(calls, settings.runs, settings.warmup).items()}
    row = ratio_row("14", measure_name, (seconds["ours"], seconds["litert-torch"]), ("ours", "litert-torch"), TARGET, True, command)
    ops, our_ops = inspect_tflite(theirs).ops, inspect_tflite(ours.uint8).ops
    if not row.met:
        row.why = (
            f"Not diagnosed. litert-torch's graph runs {ops['CONV_2D']} convolutions and {ops['DEPTHWISE_CONV_2D']} depthwise "
            f"convolutions to our {our_ops['CONV_2D']} and {our_ops['DEPTHWISE_CONV_2D']}, adds {ops['TRANSPOSE']} TRANSPOSE ops "
            f"and takes float32 frames; ours takes uint8 frames (op histograms under Details). Compare rows 1b and 13: ours "
            f"against TensorFlow's own MobileNetV2 in the same run."
        )
    details = [
        f"**litert-torch int8** ({settings.label}; load average before the timed runs {load_before}, after {load_average()}): "
        f"{theirs.stat().st_size / 1e6:.2f} MB, ops {dict(ops.most_common())}; ours {ours.uint8.stat().st_size / 1e6:.2f} MB, "
        f"ops {dict(our_ops.most_common())}."
    ]
    return Report([row], details)


def main(argv: list[str] | None = None) -> Report:
    return run_alone("python -m bench.litert_compare", __doc__, measure, argv)


if __name__ == "__main__":
    main()
