"""python -m conversion.inspect MODEL.tflite: what a TFLite model holds, and whether any stock LiteRT runs it.

Reads the flatbuffer directly (no interpreter: a model with Flex ops cannot even be loaded by one) and
fails loudly, with a non-zero exit, on what breaks deployment on a stock runtime:
- Flex / Select-TF or other custom ops (need a TensorFlow build on the device),
- float islands: DEQUANTIZE/QUANTIZE inside a quantized graph (float kernels between int ones),
- dynamic-shape ops or tensors (SHAPE, FLOOR_DIV/PACK shape arithmetic, -1 dimensions),
- resource variables (VAR_HANDLE, READ_VARIABLE...): weights the converter failed to freeze into
  constants, which integer calibration cannot run and the delegates do not take.
"""

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from torch_tsm.cli import add_verbose_flag, run, setup, user_errors
from torch_tsm.errors import UserError, reading

_OP_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
_TYPE_NAMES = {code: name.lower() for name, code in vars(schema.TensorType).items() if not name.startswith("_")}
DYNAMIC_SHAPE_OPS = {"SHAPE", "FLOOR_DIV", "PACK", "RANGE", "DYNAMIC_UPDATE_SLICE", "BROADCAST_ARGS"}
VARIABLE_OPS = {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE"}
QUANTIZED_TYPES = {"uint8", "int8"}


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float | None
    zero_point: int | None

    def __str__(self) -> str:
        quant = f", scale={self.scale:.6g}, zero_point={self.zero_point}" if self.scale is not None else ""
        return f"{self.name}: {list(self.shape)} {self.dtype}{quant}"


@dataclass
class Inspection:
    path: Path
    size_bytes: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    ops: Counter
    float_islands: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self) -> str:
        lines = [f"{self.path}  ({self.size_bytes / 1e6:.2f} MB, {sum(self.ops.values())} ops)"]
        lines += [f"  input  {tensor}" for tensor in self.inputs]
        lines += [f"  output {tensor}" for tensor in self.outputs]
        lines += ["  ops:"] + [f"    {count:4d}  {name}" for name, count in self.ops.most_common()]
        lines += [f"  PROBLEM: {problem}" for problem in self.problems] or [
            "  OK: builtin ops only, static shapes, no float islands, constant weights"
        ]
        return "\n".join(lines)


def inspect_tflite(path: str | Path) -> Inspection:
    """What a .tflite file holds; a UserError naming the file when it is not a whole TFLite model."""
    path = Path(path)
    buffer = path.read_bytes()
    with reading(path, "TFLite model"):  # a truncated flatbuffer fails deep in the reader (struct.error)
        if not schema.Model.ModelBufferHasIdentifier(buffer, 0):
            raise UserError(f"{path}: not a TFLite model (no TFL3 identifier)")
        return _inspect(path, buffer)


def _inspect(path: Path, buffer: bytes) -> Inspection:
    model = schema.Model.GetRootAsModel(buffer, 0)
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    ops: Counter = Counter()
    dynamic_tensors, float_islands = [], 0
    inputs, outputs = [], []
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        tensors = [_tensor_info(graph.Tensors(i)) for i in range(graph.TensorsLength())]
        dynamic_tensors += [t.name for i, t in enumerate(tensors) if _is_dynamic(graph.Tensors(i))]
        graph_inputs = {graph.Inputs(i) for i in range(graph.InputsLength())}
        graph_outputs = {graph.Outputs(i) for i in range(graph.OutputsLength())}
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            name = _op_name(codes[op.OpcodeIndex()])
            ops[name] += 1
            float_islands += _is_float_island(name, op, tensors, graph_inputs, graph_outputs)
        if s == 0:
            inputs = [tensors[i] for i in sorted(graph_inputs)]
            outputs = [tensors[i] for i in sorted(graph_outputs)]
    inspection = Inspection(path, len(buffer), inputs, outputs, ops, float_islands)
    inspection.problems = _problems(inspection, dynamic_tensors)
    return inspection


def _is_float_island(name: str, op, tensors: list[TensorInfo], graph_inputs: set[int], graph_outputs: set[int]) -> bool:
    # QUANTIZE from a float graph input and DEQUANTIZE to a float graph output are the interface;
    # QUANTIZE between two integer types is a requantization. Any other (de)quantization runs float
    # kernels in the middle of the graph.
    if name not in ("QUANTIZE", "DEQUANTIZE"):
        return False
    source, result = op.Inputs(0), op.Outputs(0)
    if name == "DEQUANTIZE":
        return result not in graph_outputs
    return tensors[source].dtype == "float32" and source not in graph_inputs


def _problems(inspection: Inspection, dynamic_tensors: list[str]) -> list[str]:
    problems = []
    custom = {name: count for name, count in inspection.ops.items() if name.startswith("custom:")}
    if custom:
        listed = ", ".join(f"{count} {name.removeprefix('custom:')}" for name, count in custom.items())
        problems.append(f"custom / Flex (Select-TF) ops, which a stock LiteRT cannot run: {listed}")
    quantized = any(t.dtype in QUANTIZED_TYPES for t in inspection.inputs)
    if quantized and inspection.float_islands:
        problems.append(
            f"float islands in a quantized graph: {inspection.ops['DEQUANTIZE']} DEQUANTIZE, {inspection.ops['QUANTIZE']} QUANTIZE"
        )
    dynamic_ops = {name: count for name, count in inspection.ops.items() if name in DYNAMIC_SHAPE_OPS}
    if dynamic_ops:
        problems.append(f"dynamic-shape ops: {', '.join(f'{count} {name}' for name, count in dynamic_ops.items())}")
    if dynamic_tensors:
        problems.append(f"{len(dynamic_tensors)} tensors with dynamic dimensions (e.g. {dynamic_tensors[0]})")
    variable_ops = {name: count for name, count in inspection.ops.items() if name in VARIABLE_OPS}
    if variable_ops:
        problems.append(
            f"resource variables, weights not frozen into constants: {', '.join(f'{count} {name}' for name, count in variable_ops.items())}"
        )
    return problems


def _op_name(code) -> str:
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if builtin == schema.BuiltinOperator.CUSTOM:
        return f"custom:{code.CustomCode().decode()}"
    return _OP_NAMES.get(builtin, f"builtin:{builtin}")


def _tensor_info(tensor) -> TensorInfo:
    quantization = tensor.Quantization()
    scale = zero_point = None
    if quantization is not None and quantization.ScaleLength() == 1:
        scale, zero_point = float(quantization.Scale(0)), int(quantization.ZeroPoint(0))
    shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    return TensorInfo(tensor.Name().decode(), shape, _TYPE_NAMES.get(tensor.Type(), str(tensor.Type())), scale, zero_point)


def _is_dynamic(tensor) -> bool:
    return tensor.ShapeSignatureLength() > 0 and bool(np.any(tensor.ShapeSignatureAsNumpy() < 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conversion.inspect", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+", type=Path, help=".tflite files")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    setup(args.verbose)
    failed = False
    with user_errors(args.verbose):
        for path in args.models:
            inspection = inspect_tflite(path)
            print(inspection.report())
            failed |= not inspection.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run(main))
