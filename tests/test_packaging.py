"""The package and its commands, cheaply: metadata, console scripts, --verbose, a quiet start-up.

The installed wheel itself is checked by `make wheel-check` (.ci/wheel-check): it builds it, installs
it away from the source tree and runs the commands from another folder; too slow for every test run.
"""

import importlib
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from torch_tsm import cli

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
COMMANDS = {  # console script -> the module that python -m runs
    "tsm-train": "torch_tsm.train",
    "tsm-prepare": "torch_tsm.prepare",
    "tsm-evaluate": "runtime.evaluate",
    "tsm-predict": "runtime.predict",
    "tsm-convert": "conversion.to_tflite",
    "tsm-inspect": "conversion.inspect",
    "tsm-parity": "conversion.parity",
    "tsm-web": "runtime.web",
    "tsm-live": "runtime.live",
}


def test_this_python_is_one_the_package_declares():
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert version in SpecifierSet(PROJECT["requires-python"])
    assert all(f"3.{minor}" in SpecifierSet(PROJECT["requires-python"]) for minor in (11, 12, 13))
    assert "3.10" not in SpecifierSet(PROJECT["requires-python"]) and "3.14" not in SpecifierSet(PROJECT["requires-python"])


def test_every_console_script_runs_its_module():
    assert set(PROJECT["scripts"]) == set(COMMANDS)
    for script, target in PROJECT["scripts"].items():
        module, function = target.split(":")
        command = getattr(importlib.import_module(module), function)
        assert command.__doc__ == f"The console script for python -m {COMMANDS[script]}."
        assert importlib.util.find_spec(COMMANDS[script]) is not None


@pytest.mark.parametrize("module", ["torch_tsm.train", "runtime.evaluate", "runtime.predict"])
def test_entry_points_take_verbose(module):
    parse_args = importlib.import_module(module).parse_args
    required = {"torch_tsm.train": [], "runtime.evaluate": ["--model", "m.tflite"], "runtime.predict": ["v.mp4", "--model", "m.tflite"]}[
        module
    ]
    assert parse_args([*required, "--verbose"]).verbose is True
    assert parse_args(required).verbose is False


def test_quiet_environment_keeps_what_the_user_set(monkeypatch):
    monkeypatch.delenv(cli.VERBOSE_ENV, raising=False)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    assert cli.prepare(["--verbose"]) is True and "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    assert cli.prepare([]) is False and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    cli.prepare([])
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    monkeypatch.setenv(cli.VERBOSE_ENV, "1")
    assert cli.verbose_requested([]) is True


def test_only_the_non_actionable_warnings_are_dropped(monkeypatch):
    from conversion.export_onnx import unfolded_slices_unreported

    monkeypatch.setattr(sys, "warnoptions", [])
    monkeypatch.delenv(cli.VERBOSE_ENV, raising=False)
    unfolded = "Constant folding - Only steps=1 can be constant folded for opset >= 10 onnx::Slice op."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli.setup(verbose=False)
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
        with unfolded_slices_unreported():
            warnings.warn(unfolded, UserWarning, stacklevel=1)
            warnings.warn("something the user can act on", UserWarning, stacklevel=1)
        cli.setup(verbose=True)
        with unfolded_slices_unreported():
            warnings.warn(unfolded, UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something the user can act on", unfolded]


def test_tensorflow_startup_notices_are_dropped_only_when_there_is_no_cuda_driver():
    banner = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
    no_driver = "I0000 00:00:1.0  1 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used."
    cuinit = (
        "E0000 00:00:1.0  1 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)"
    )
    onednn = "I0000 00:00:1.0  1 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`."
    other = "E0000 00:00:1.0  1 something.cc:1] a real error"
    assert cli.without_startup_noise([banner, no_driver, onednn, banner, no_driver, cuinit, other]) == [other]
    assert cli.without_startup_noise([cuinit, other]) == [cuinit, other]  # a driver that fails: worth seeing


def test_no_private_names_of_lightning():
    """An upgrade of Lightning may rename its private names at any time, silently: none is used (a run's
    folder used to override ModelCheckpoint's name-mangled _ModelCheckpoint__warn_if_dir_not_empty)."""
    private = re.compile(r"\b_[A-Z]\w*__\w+|from (?:pytorch_)?lightning[\w.]* import _|lightning[\w.]*\._[a-z]")
    sources = [
        path
        for folder in ("torch_tsm", "conversion", "runtime")
        for path in (ROOT / folder).rglob("*.py")
        if "node_modules" not in path.parts
    ]
    assert [
        f"{path.relative_to(ROOT)}: {match.group()}" for path in sources for match in private.finditer(path.read_text(encoding="utf-8"))
    ] == []


def test_converter_starts_quietly():
    """python -m conversion.to_tflite loads TensorFlow at the top: its start-up says nothing, unless --verbose."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", cli.VERBOSE_ENV)}
    run = subprocess.run(
        [sys.executable, "-m", "conversion.to_tflite", "--help"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    assert run.returncode == 0 and "--verbose" in run.stdout
    assert run.stderr == "", run.stderr
