"""open_model(path): the one place a model file becomes a runner, for predict, evaluate, live, parity and the page.

A training checkpoint (.ckpt, .pt, .pth: PyTorch), an ONNX file, a SavedModel folder or a .tflite
file, clip or streaming (told by the file's inputs, not its name). Every runner it gives has the same
attributes: `labels` (labels.txt beside the file, else the checkpoint's own class names, else None),
`image_size`, `num_segments` (T: a streaming file's from the model card beside it), `num_classes` and
`streaming` (whether it also steps frame by frame, runtime.stream). Any runner runs clips.
"""

from pathlib import Path

from runtime.clip import OnnxRunner, Runner, SavedModelRunner, TFLiteRunner, TorchRunner
from runtime.stream import OnnxStreamRunner, StreamingTFLiteRunner, StreamRunner, TorchStreamRunner, is_streaming_file
from torch_tsm.card import card_segments
from torch_tsm.errors import UserError, reading
from torch_tsm.labels import check_label_count, read_labels

ModelRunner = Runner | StreamRunner
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")
FILE_RUNNERS = {  # suffix -> what a user's error line calls the file, its clip runner, its streaming runner
    ".onnx": ("ONNX model", OnnxRunner, OnnxStreamRunner),
    ".tflite": ("TFLite model", TFLiteRunner, StreamingTFLiteRunner),
}
STREAMING_NAMES = "model_streaming*.tflite / .onnx, model_keras_streaming_*.tflite, or a checkpoint trained with --shift causal"


def open_model(path: str | Path, streaming: bool | None = None, threads: int = 2) -> ModelRunner:
    """The runner for a model file; a file that is not what its name says raises a UserError naming it.

    streaming None: the model as the file holds it (a checkpoint: its clip model). True: a runner that
    steps frame by frame (a checkpoint: its streaming model); a clip model file is refused. False: a
    clip model; a streaming file is refused.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: model not found")
    suffix = path.suffix.lower()
    if path.is_dir():
        runner = _saved_model(path)
    elif suffix in CHECKPOINT_SUFFIXES:
        runner = _checkpoint(path, bool(streaming))
    elif suffix in FILE_RUNNERS:
        kind, clip_runner, stream_runner = FILE_RUNNERS[suffix]
        with reading(path, kind):
            runner = (stream_runner if is_streaming_file(path) else clip_runner)(path, threads)
    else:
        raise UserError(f"{path}: unknown model type {suffix!r}; expected .ckpt, .onnx, .tflite or a SavedModel folder")
    if streaming is False and runner.streaming:
        raise UserError(
            f"{path}: a streaming model (a frame and buffers in, logits and buffers out), where a clip model is needed; "
            "predict, evaluate, live and the page take it, or convert the checkpoint without --streaming"
        )
    if streaming and not runner.streaming:
        raise UserError(f"{path}: a clip model, where a streaming model is needed ({STREAMING_NAMES})")
    if runner.streaming and suffix in FILE_RUNNERS:
        runner.num_segments = card_segments(path)  # the file takes one frame at a time and cannot tell its T
    runner.labels = labels_beside(path, runner.num_classes) or runner.labels
    return runner


def class_names(runner: ModelRunner) -> list[str]:
    """The runner's labels, else the class numbers."""
    return runner.labels or [str(i) for i in range(runner.num_classes)]


def labels_beside(path: Path, count: int) -> list[str] | None:
    """labels.txt beside the model, checked against its `count` classes; None where there is none."""
    labels_file = path.parent / "labels.txt"
    if not labels_file.is_file():
        return None
    labels = read_labels(labels_file)
    check_label_count(labels, count, labels_file)
    return labels


def _saved_model(path: Path) -> SavedModelRunner:
    if not (path / "saved_model.pb").is_file():
        raise UserError(f"{path}: a folder but not a SavedModel (no saved_model.pb)")
    with reading(path, "SavedModel"):
        return SavedModelRunner(path)


def _checkpoint(path: Path, streaming: bool) -> TorchRunner | TorchStreamRunner:
    from torch_tsm.model import load_model
    from torch_tsm.streaming import StreamingTSM

    with reading(path, "checkpoint"):
        model = load_model(path)
    if not streaming:
        return TorchRunner(model)
    try:
        return TorchStreamRunner(StreamingTSM(model), model.image_size)
    except ValueError as error:  # not the causal shift
        raise UserError(f"{path}: {error}") from error
