"""Recipes as files: --config, --print-config, flags over files, one-line errors for a bad file, and every
default taken from the code that uses it. Parse-only, a few seconds (the run that writes config.yaml is in
tests/test_training.py)."""

import inspect
import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
import yaml

from torch_tsm.cli import run
from torch_tsm.datamodule import ClipDataModule
from torch_tsm.lightning_module import TSMClassifier
from torch_tsm.train import data_module, main, parse_args, parser, run_config

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def printed_config(argv: list[str], capsys) -> dict:
    capsys.readouterr()
    assert main([*argv, "--print-config"]) is None
    return yaml.safe_load(capsys.readouterr().out)


def test_config_file_values_are_used(tmp_path):
    recipe = write(tmp_path / "recipe.yaml", "lr: 0.05\nbatch_size: 3\nflip: true\nsynthetic_clips: [20, 10]\nuntil_accuracy: off\n")
    args = parse_args(["--config", recipe])
    assert (args.lr, args.batch_size, args.flip, args.synthetic_clips) == (0.05, 3, True, [20, 10])
    assert run_config(args, data_module(args))["until_accuracy"] == "off"  # a bare YAML off too
    assert args.weight_decay == inspect.signature(TSMClassifier).parameters["weight_decay"].default  # not in the file: the default


@pytest.mark.parametrize("before", [True, False], ids=["flag before the file", "flag after the file"])
def test_a_flag_overrides_the_file_wherever_it_stands(tmp_path, before):
    recipe = write(tmp_path / "recipe.yaml", "lr: 0.05\nbatch_size: 3\nphotometric: true\n")
    flags = ["--lr", "0.1", "--no-photometric"]
    args = parse_args([*flags, "--config", recipe] if before else ["--config", recipe, *flags])
    assert (args.lr, args.photometric, args.batch_size) == (0.1, False, 3)


def test_print_config_prints_the_defaults_resolved_as_configs_demo_yaml_holds_them(capsys):
    printed = printed_config([], capsys)
    assert printed == yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text(encoding="utf-8"))
    # the defaults that depend on the data kind, resolved for the built-in data
    assert printed["flip"] is False and printed["flip_pairs"] == [["move_right", "move_left"]]
    assert printed["until_accuracy"] == 0.99 and printed["stream_training"] is True
    bukva = printed_config(["--data", "bukva", "--data-root", "/data/bukva"], capsys)
    assert bukva["flip"] is True and bukva["flip_pairs"] == [] and bukva["until_accuracy"] == "off" and bukva["stream_training"] is False


def test_printed_config_runs_as_the_same_configuration(tmp_path, capsys):
    first = printed_config(["--data", "bukva", "--data-root", "/data/bukva", "--lr", "0.3", "--no-blur", "--until-accuracy", "0.9"], capsys)
    again = write(tmp_path / "config.yaml", yaml.safe_dump(first))
    assert printed_config(["--config", again], capsys) == first


def test_bukva_recipe_file_is_the_authors_recipe(capsys):
    recipe = printed_config(["--config", str(ROOT / "configs" / "bukva.yaml"), "--data-root", "/data/bukva-256"], capsys)
    expected = {
        "data": "frames",
        "data_root": "/data/bukva-256",
        "num_segments": 8,
        "image_size": 224,
        "width_mult": 1.0,
        "pretrained": "imagenet",
        "optimizer": "sgd",
        "lr": 0.02,
        "weight_decay": 2e-5,
        "head_lr_mult": 10,
        "gradient_clip": 20,
        "warmup_epochs": 20,
        "max_epochs": 100,
        "resize": "multiscale",
        "flip": True,
        "until_accuracy": "off",
    }
    assert {key: recipe[key] for key in expected} == expected


def test_every_default_is_the_one_of_the_code_that_uses_it():
    defaults = parser().get_defaults()
    owners = {TSMClassifier: set(), ClipDataModule: {"flip", "stream_training", "synthetic_sizes"}}
    for owner, resolved_elsewhere in owners.items():
        for name, parameter in inspect.signature(owner).parameters.items():
            if name in defaults and name not in resolved_elsewhere:
                assert defaults[name] == parameter.default, name
    assert defaults["synthetic_clips"] == list(inspect.signature(ClipDataModule).parameters["synthetic_sizes"].default)
    trainer = inspect.signature(pl.Trainer).parameters
    assert defaults["gradient_clip"] == trainer["gradient_clip_val"].default
    assert all(defaults[name] == trainer[name].default for name in ("accelerator", "devices", "strategy", "num_nodes", "precision"))
    # the model and its data share the input's shape: their signatures must agree
    model, data = inspect.signature(TSMClassifier).parameters, inspect.signature(ClipDataModule).parameters
    assert all(model[name].default == data[name].default for name in ("num_segments", "image_size"))


BAD_FILES = [
    ("misspelt key", "lr: 0.1\nweight_decy: 0.01\n", r"Option 'weight_decy' is not accepted"),
    ("bad value", "lr: fast\n", r'"lr": Expected a .*float.*Got value: fast'),
    ("bad choice", "optimizer: adam\n", r'"optimizer": \'adam\' not among choices'),
    ("bad accuracy", "until_accuracy: 1.5\n", r"expected an accuracy in \(0, 1\] or 'off', got 1.5"),
    ("not YAML", "lr: [0.1\n", r"Problems parsing config"),
]


@pytest.mark.parametrize("text, message", [case[1:] for case in BAD_FILES], ids=[case[0] for case in BAD_FILES])
def test_a_bad_config_file_is_one_line_naming_it(tmp_path, capsys, text, message):
    recipe = write(tmp_path / "recipe.yaml", text)
    capsys.readouterr()
    assert run(main, ["--config", recipe, "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: {recipe}: ") and re.search(message, err), err
    assert not (tmp_path / "run").exists()


def test_a_missing_config_file_and_a_bad_flag_are_one_line(tmp_path, capsys):
    capsys.readouterr()
    assert run(main, ["--config", str(tmp_path / "nowhere.yaml")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nowhere.yaml'}: No such file or directory\n"
    assert run(main, ["--until-accuracy", "2"]) == 2
    assert capsys.readouterr().err == "error: argument --until-accuracy: expected an accuracy in (0, 1] or 'off', got 2\n"


def test_a_folder_with_a_checkpoint_is_not_trained_into_without_resume(tmp_path):
    (tmp_path / "last.ckpt").write_bytes(b"")  # a killed run's
    with pytest.raises(SystemExit, match="already holds a run's checkpoint; pass --resume"):
        main(["--output", str(tmp_path)])
