"""What every command-line entry point shares: a quiet start-up, `--verbose`, and the console scripts.

Quiet by default: TensorFlow's and absl's C++ logging at errors only, TensorFlow's start-up notices
(no CUDA driver on a CPU machine) dropped, Lightning's info lines and model summary off, and the
warnings nobody can act on dropped where they arise (`ignoring_warning`; NOT_ACTIONABLE for those
raised deep inside a library). `--verbose`, or TSM_VERBOSE=1, brings all of it back; what the user set
(TF_CPP_MIN_LOG_LEVEL, PYTHONWARNINGS or -W) is always kept.

Each entry point adds the flag with `add_verbose_flag(parser)` and calls `setup(args.verbose)` first
thing in main(). TensorFlow reads its log level once, when it loads: a module that imports TensorFlow
at the top also calls `prepare()` in an `if __name__ == "__main__":` block above its imports (for
`python -m`), and the console scripts below call `prepare()` before they import their command.

Bad input, one convention for every command: a UserError (torch_tsm/errors.py) or an OSError (a
missing file, a full disk, a file where a folder belongs) ends as one line `error: <file>: <what is
wrong>` on stderr and exit status 2 (`user_errors`, around a main()'s work, and `run`, the process
boundary of `python -m` and the console scripts); a bug keeps its traceback; --verbose prints the
traceback of bad input too.

This module imports neither torch nor TensorFlow at load, and nothing from `conversion` (torch_tsm is
the lower layer).
"""

import argparse
import contextlib
import importlib
import io
import logging
import os
import re
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence

from torch_tsm.errors import UserError, first_line

VERBOSE_FLAG = "--verbose"
VERBOSE_ENV = "TSM_VERBOSE"

# Set with os.environ.setdefault: a value the user set wins.
QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow / absl C++: errors only (no oneDNN, cpu-feature or converter notices)
}

# Warnings raised inside our dependencies that nobody running our commands can act on:
# (message regex, category). Only these are filtered, and only in the quiet mode of an entry point.
NOT_ACTIONABLE: list[tuple[str, type[Warning]]] = [
    # Lightning 2.6.6 calls torch.utils._pytree.LeafSpec, which torch 2.14 deprecates: between the two pins.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", Warning),
]

# Lightning's info-level loggers: "GPU available: False", "Seed set to 0", the litlogger tip,
# "Loading `train_dataloader` to estimate ...". Its warnings stay on.
LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")

# What TensorFlow writes to stderr while it loads on a machine without a CUDA driver, before its own
# log level applies; dropped by `import_tensorflow` when it is all there is.
TENSORFLOW_STARTUP_NOISE = (
    re.compile(r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"),
    re.compile(r"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, GPU will not be used"),
    # Only on the CPUs where TensorFlow turns its oneDNN kernels on by default (AVX-512 and AMX Xeons, not AVX2-only ones)
    re.compile(r"port\.cc:\d+\] oneDNN custom operations are on"),
)
NO_CUDA_DRIVER = TENSORFLOW_STARTUP_NOISE[1]
CUINIT_FAILED = re.compile(r"cuda_platform\.cc:\d+\] failed call to cuInit")  # expected when there is no driver


def verbose_requested(argv: Sequence[str] | None = None) -> bool:
    """--verbose among the arguments (sys.argv when not given), or TSM_VERBOSE set to anything but 0."""
    argv = sys.argv[1:] if argv is None else argv
    return VERBOSE_FLAG in argv or os.environ.get(VERBOSE_ENV, "0") not in ("", "0")


def add_verbose_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        VERBOSE_FLAG,
        action="store_true",
        default=verbose_requested([]),
        help=f"all logging and warnings of TensorFlow, Lightning and the other libraries (also: {VERBOSE_ENV}=1)",
    )


def prepare(argv: Sequence[str] | None = None) -> bool:
    """Before TensorFlow loads: the quiet environment, unless verbose. Returns whether verbose."""
    verbose = verbose_requested(argv)
    if not verbose:
        for name, value in QUIET_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
    return verbose


_verbose = False  # set by setup(): the command runs with --verbose


def setup(verbose: bool, tensorflow: bool = False) -> None:
    """First thing in an entry point's main(): quiet logging and warnings unless `verbose`.

    tensorflow: the command will use TensorFlow; it is loaded here, quietly (`import_tensorflow`).
    """
    global _verbose
    _verbose = verbose
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)
    if not verbose:
        prepare([])
        quiet_opencv()
        if not sys.warnoptions:  # -W or PYTHONWARNINGS: the user's own choice
            for message, category in NOT_ACTIONABLE:
                warnings.filterwarnings("ignore", message=message, category=category)
    if tensorflow:
        import_tensorflow(verbose)


def quiet_opencv() -> None:
    """OpenCV's C++ log at errors only: its warnings (e.g. "can't open camera by index") repeat our own one-line error."""
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


@contextlib.contextmanager
def ignoring_warning(message: str, category: type[Warning] = Warning) -> Iterator[None]:
    """Around the call that causes it: drops a warning nobody can act on (a regex of its start).

    Kept under --verbose, TSM_VERBOSE=1, and when the user chose warnings with -W or PYTHONWARNINGS.
    """
    with warnings.catch_warnings():
        if not (_running_verbose() or sys.warnoptions):
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


@contextlib.contextmanager
def without_prints() -> Iterator[None]:
    """Around a library call that prints what nobody can act on (Keras 3's export, which the TFLite
    converter runs on a Keras model, lists all of the model's hundreds of captured tensors): its
    standard output dropped, unless --verbose or TSM_VERBOSE=1."""
    with contextlib.nullcontext() if _running_verbose() else contextlib.redirect_stdout(io.StringIO()):
        yield


def _running_verbose() -> bool:
    # the command's --verbose (setup), or TSM_VERBOSE for library calls made outside a command
    return _verbose or verbose_requested([])


def import_tensorflow(verbose: bool = False) -> None:
    """Loads TensorFlow and lets it look for GPUs, with its start-up notices of a CPU-only machine dropped.

    TensorFlow's own log level does not reach what it writes while its libraries load ("Could not
    find cuda drivers", once per library, each after an absl banner), and looking for GPUs then logs
    an error that cuInit failed. Both say only that this machine has no GPU driver; the lines are
    read back from stderr and anything else is passed on.
    """
    import torch._dynamo  # noqa: F401  # before TensorFlow, verbose or not (conversion/__init__.py)

    if verbose or "tensorflow" in sys.modules:
        import tensorflow as tf  # noqa: F401

        return

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in without_startup_noise(captured.read().decode(errors="replace").splitlines()):
                print(line, file=sys.stderr)


def without_startup_noise(lines: list[str]) -> list[str]:
    """TensorFlow's start-up stderr less the notices that only say that this machine has no CUDA driver."""
    no_driver = any(NO_CUDA_DRIVER.search(line) for line in lines)
    return [
        line
        for line in lines
        if not any(pattern.search(line) for pattern in TENSORFLOW_STARTUP_NOISE) and not (no_driver and CUINIT_FAILED.search(line))
    ]


class UserExit(SystemExit):
    """Exit status 2 after a user error; str() is the line already printed, for callers of main() in-process."""

    def __init__(self, line: str) -> None:
        super().__init__(2)
        self.line = line

    def __str__(self) -> str:
        return self.line


def error_line(error: UserError | OSError) -> str:
    """`error: <file>: <what is wrong>`: an OSError names its file in .filename, a UserError in its message."""
    if isinstance(error, OSError) and error.filename is not None:
        return f"error: {error.filename}: {error.strerror or first_line(error)}"
    return f"error: {first_line(error)}"


@contextlib.contextmanager
def user_errors(verbose: bool) -> Iterator[None]:
    """Around a command's work: bad input becomes one line on stderr and exit status 2 (see the module doc)."""
    try:
        yield
    except (UserError, OSError) as error:
        if verbose:
            traceback.print_exc()
        line = error_line(error)
        print(line, file=sys.stderr)
        raise UserExit(line) from error


def run(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """A command as a process (`python -m` and the console scripts): its exit status, bad input as one line.

    Most main()s already end bad input this way themselves (so their in-process callers get the exit
    too); to_tflite's main() raises it, as its library function does, and relies on this boundary.
    """
    try:
        with user_errors(verbose_requested(argv)):
            result = main(argv)
    except UserExit as exit:  # the line is printed; the status is what is left
        return exit.code
    return result if isinstance(result, int) else 0


def _command(module: str, tensorflow: bool = False) -> Callable[[], int]:
    def command() -> int:
        verbose = prepare()
        if tensorflow:  # the module imports TensorFlow at the top
            import_tensorflow(verbose)
        return run(importlib.import_module(module).main)

    command.__doc__ = f"The console script for python -m {module}."
    return command


# The console scripts ([project.scripts] in pyproject.toml): each is `python -m <module>`.
train = _command("torch_tsm.train")
prepare_data = _command("torch_tsm.prepare")
evaluate = _command("runtime.evaluate")
predict = _command("runtime.predict")
to_tflite = _command("conversion.to_tflite", tensorflow=True)
inspect = _command("conversion.inspect")
parity = _command("conversion.parity")
web = _command("runtime.web")
live = _command("runtime.live")


def summary(title: str, rows: list[tuple[str, str]]) -> str:
    """The closing lines of a command: `title:` and aligned `name  value` rows."""
    width = max(len(name) for name, _ in rows)
    return "\n".join([f"{title}:", *(f"  {name:<{width}}  {value}" for name, value in rows)])
