"""The one error type for bad input: what the user gave is wrong, not the code.

Every command (`torch_tsm.cli.user_errors`) prints a UserError as one line, `error: <file>: <what is
wrong>`, and exits 2; anything else is a bug and keeps its traceback. The message names the file
first and ends with a hint where one helps.

A subclass of ValueError, so callers that caught the ValueErrors these checks raised before still
catch them. This module imports nothing of the project: torch_tsm and conversion both use it.
"""

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path


class UserError(ValueError):
    """A bad file, folder or option given by the user; the message is one line and names the file."""


def first_line(error: BaseException) -> str:
    """A library's message cut to its first non-empty line (some run to pages), with its type when empty."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


@contextlib.contextmanager
def reading(path: str | Path, what: str) -> Iterator[None]:
    """Around a library's loader of a user's file: whatever it raises becomes a UserError naming the file.

    A loader fed a wrong or damaged file raises its own types (struct.error, flatbuffer ValueError,
    onnx DecodeError, pickle errors); none of them says which file, and none is a bug of ours.
    """
    try:
        yield
    except UserError:
        raise
    except OSError as error:
        if error.filename is not None:  # the system's own, naming its file (missing, unreadable): as it is
            raise
        raise UserError(_about(path, what, error)) from error
    except Exception as error:  # noqa: BLE001  any failure of the loader means: this file is not one
        raise UserError(_about(path, what, error)) from error


# A write that finds no room: a full disk, a quota, a file-size limit (ulimit -f).
NO_ROOM = tuple(os.strerror(code) for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG))


@contextlib.contextmanager
def room_to_write(folder: str | Path) -> Iterator[None]:
    """Around work that writes files into `folder` and to libraries' scratch files: a write that finds
    no room becomes a UserError naming the file where known, else `folder`.

    Each library says it in its own way: an OSError with an errno, numpy's "N requested and M
    written" (an OSError without one), TensorFlow's C++ "<path>; File too large" (not an OSError).
    """
    try:
        yield
    except UserError:
        raise
    except Exception as error:
        text = str(error)
        reason = next((reason for reason in NO_ROOM if reason in text), None)
        if isinstance(error, OSError) and re.search(r"\d+ requested and \d+ written", text):
            reason = "a short write"
        if reason is None:
            raise
        named = re.search(rf"(/[^\s;]+); {reason}", text)
        path = getattr(error, "filename", None) or (named.group(1) if named else folder)
        raise UserError(f"{path}: could not be written ({reason}; is the disk full?)") from error


def _about(path: str | Path, what: str, error: BaseException) -> str:
    detail = first_line(error)
    return detail if detail.startswith(str(path)) else f"{path}: not a readable {what} ({detail})"
