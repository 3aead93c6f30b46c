"""Rows 5-6: the original project's uint8 model beside ours (does a stock LiteRT run it? its ops), and model sizes.

python -m bench.model_files [--quick]
"""

from collections import Counter
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from bench.common import Report, Row, Settings, markdown_table, run_alone
from bench.models import benchmark_models
from conversion.inspect import inspect_tflite

ORIGINAL = Path(__file__).resolve().parents[1] / "tests" / "data" / "original-project-uint8.tflite"  # docs/background.md
BUKVA_ONNX_MB = 9.1  # the Bukva authors' float32 ONNX model (docs/background.md); not on this machine


def stock_litert_error(path: Path) -> str | None:
    """None when a stock LiteRT interpreter runs the model once; else its error text."""
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        interpreter.invoke()  # Flex ops fail only here, when their kernels are prepared
    except Exception as error:
        return " ".join(str(error).split())
    return None


def measure(settings: Settings) -> Report:
    ours = benchmark_models(settings)["bidirectional"]
    command = f"python -m bench.model_files{settings.flag}"
    rows, details = [], []
    if ORIGINAL.is_file():
        error = stock_litert_error(ORIGINAL)
        original_ops, our_ops = inspect_tflite(ORIGINAL).ops, inspect_tflite(ours.uint8).ops
        figure = "runs" if error is None else f'refused: "{error}"'
        rows.append(Row("5", "original uint8 model on stock LiteRT (ai-edge-litert)", figure, command=command))
        details.append(f"**Op histogram, original uint8 model vs ours (uint8 TSM, {settings.label})**\n\n{op_table(original_ops, our_ops)}")
    else:
        rows.append(Row("5", "original uint8 model on stock LiteRT", f"not measured: {ORIGINAL} not found", command=command))
    rows.append(Row("6", f"model sizes, ours ({settings.label})", sizes_figure(ours.float32, ours.uint8, ours.onnx), command=command))
    return Report(rows, details)


def sizes_figure(float32: Path, uint8: Path, onnx: Path) -> str:
    mb = lambda path: path.stat().st_size / 1e6  # noqa: E731
    original = f"original uint8 {mb(ORIGINAL):.2f} MB; " if ORIGINAL.is_file() else ""
    return f"float32 TFLite {mb(float32):.2f} MB, uint8 TFLite {mb(uint8):.2f} MB, float32 ONNX {mb(onnx):.2f} MB ({original}Bukva float32 ONNX {BUKVA_ONNX_MB} MB)"


def op_table(original: Counter, ours: Counter) -> str:
    names = sorted(set(original) | set(ours), key=lambda name: -(original[name] + ours[name]))
    rows = [[name, str(original[name]), str(ours[name])] for name in names]
    rows.append(["total", str(sum(original.values())), str(sum(ours.values()))])
    return markdown_table(["op", "original", "ours"], rows)


def main(argv: list[str] | None = None) -> Report:
    return run_alone("python -m bench.model_files", __doc__, measure, argv)


if __name__ == "__main__":
    main()
