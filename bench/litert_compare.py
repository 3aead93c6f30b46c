"""Row 14: our uint8 TSM graph against what litert-torch (Google's PyTorch -> LiteRT converter) makes of the
same model, int8 by PT2E static per-channel quantization: the converter a user would pick instead.

litert-torch is a bench-only extra, never a dependency of the toolkit: `make bench-compare` installs it into
a venv of its own and runs every benchmark there. Without it the rows say so and are skipped. The TSM model
and the plain MobileNetV2 (shift="none") from both converters, and keras.applications' MobileNetV2 as
TensorFlow's own converter makes it, run in turns in this one process on the same real clip: the plain
models tell a gap in the backbone's convolutions from one in the shift's data movement.

    python -m bench.litert_compare [--quick]
"""

import importlib.util
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from bench.common import WORK, Report, Row, Settings, alternate_times, load_average, markdown_table, ratio_row, run_alone
from bench.latency import keras_applications_call, tflite_call
from bench.models import benchmark_models, spec, synthetic_data
from conversion.inspect import inspect_tflite
from torch_tsm.clips import load_clips
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
    ours = benchmark_models(settings)
    calibration, _ = load_clips(synthetic_data(spec(settings, "bidirectional")), "train", 8)
    clips, _ = load_clips(synthetic_data(spec(settings, "none")), "val", 1)
    theirs = {
        shift: litert_torch_int8(
            ours[shift].folder / "checkpoint" / "model.ckpt", calibration, WORK / f"litert-torch-{spec(settings, shift).key}.tflite"
        )
        for shift in ours
    }
    calls: dict[str, Callable[[], object]] = {}
    for shift, name in (("bidirectional", "TSM"), ("none", "plain")):
        calls[f"ours {name}"] = tflite_call(ours[shift].uint8, clips[0], settings.threads)[0]
        calls[f"litert-torch {name}"] = float_frames_call(theirs[shift], clips[0], settings.threads)
    calls["keras.applications"] = keras_applications_call(settings, clips[0])
    load_before = load_average()
    seconds = {name: statistics.median(values) for name, values in alternate_times(calls, settings.runs, settings.warmup).items()}
    row = ratio_row("14", measure_name, (seconds["ours TSM"], seconds["litert-torch TSM"]), ("ours", "litert-torch"), TARGET, True, command)
    plain = ratio_row(
        "14b",
        "clip latency, plain MobileNetV2: our uint8 TFLite / litert-torch int8 (PT2E), same weights, same clip (for the record)",
        (seconds["ours plain"], seconds["litert-torch plain"]),
        ("ours", "litert-torch"),
        None,
        True,
        command,
    )
    ops, our_ops = inspect_tflite(theirs["bidirectional"]).ops, inspect_tflite(ours["bidirectional"].uint8).ops
    if not row.met:
        row.why = why_missed(seconds, ops, our_ops)
    timing = markdown_table(
        ["model (uint8 / int8, 8 frames)", "median ms per clip"], [[name, f"{value * 1000:.2f}"] for name, value in seconds.items()]
    )
    details = [
        f"**litert-torch int8** ({settings.label}; load average before the timed runs {load_before}, after {load_average()}): "
        f"{theirs['bidirectional'].stat().st_size / 1e6:.2f} MB, ops {dict(ops.most_common())}; ours "
        f"{ours['bidirectional'].uint8.stat().st_size / 1e6:.2f} MB, ops {dict(our_ops.most_common())}.\n\n{timing}"
    ]
    return Report([row, plain], details)


def why_missed(seconds: dict[str, float], ops: dict[str, int], our_ops: dict[str, int]) -> str:
    """Where the TSM gap lies: in the backbone (the plain models differ as much) or in the shift's data movement."""
    shift_cost = {who: seconds[f"{who} TSM"] / seconds[f"{who} plain"] for who in ("ours", "litert-torch")}
    backbone = {who: seconds[f"{who} plain"] / seconds["keras.applications"] for who in ("ours", "litert-torch")}
    no_shift = seconds["ours plain"] / seconds["litert-torch TSM"]
    return (
        f"The plain MobileNetV2 runs {backbone['ours']:.2f}x keras.applications' from our converter and {backbone['litert-torch']:.2f}x "
        f"from litert-torch (row 14b: {seconds['ours plain'] / seconds['litert-torch plain']:.2f}); TSM / plain is "
        f"{shift_cost['ours']:.2f} for ours and {shift_cost['litert-torch']:.2f} for litert-torch's (its {ops['TRANSPOSE']} "
        f"TRANSPOSE ops included). litert-torch's TSM graph runs {ops['CONV_2D']} convolutions and {ops['DEPTHWISE_CONV_2D']} "
        f"depthwise convolutions, ours {our_ops['CONV_2D']} and {our_ops['DEPTHWISE_CONV_2D']}. Our plain graph, with no shift at "
        f"all, runs {no_shift:.2f}x litert-torch's TSM graph: a shift that cost nothing would "
        f"{'still miss' if no_shift > TARGET else 'meet'} the target."
    )


def main(argv: list[str] | None = None) -> Report:
    return run_alone("python -m bench.litert_compare", __doc__, measure, argv)


if __name__ == "__main__":
    main()
