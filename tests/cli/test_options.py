"""The command line as a whole: help text for every option, --version, and the devices --device accepts."""

import argparse

import pytest

import usema
from usema.cli import _build_parser, main


def _parsers(parser: argparse.ArgumentParser, path: str = "usema"):
    """(command path, parser) of the command and every subcommand below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, f"{path} {name}")


def test_every_option_and_argument_has_help():
    missing = [
        f"{path} {action.option_strings[-1] if action.option_strings else action.dest}"
        for path, parser in _parsers(_build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert missing == []


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"usema {usema.__version__}"


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "CUDA:0"])
def test_device_takes_cuda_with_an_index(device):
    args = _build_parser().parse_args(["predict", "RUN", "image.png", "-o", "out", "--device", device])
    assert args.device == device.lower()


def test_an_unknown_device_is_refused_naming_the_option(capsys):
    with pytest.raises(SystemExit) as stop:
        _build_parser().parse_args(["train", "DATA", "-o", "RUN", "--device", "gpu"])
    assert stop.value.code == 2
    assert "argument --device: 'gpu' is not a device: choose auto, cpu, cuda or cuda:N" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "D", "-o", "R", "--max-minutes", "0"], "argument --max-minutes: '0' is not a positive, finite number"),
        (["train", "D", "-o", "R", "--max-minutes", "-5"], "argument --max-minutes: '-5' is not a positive"),
        (["train", "D", "-o", "R", "--max-minutes", "nan"], "argument --max-minutes: 'nan' is not a positive"),
        (["train", "D", "-o", "R", "--max-minutes", "inf"], "argument --max-minutes: 'inf' is not a positive"),
        (["train", "D", "-o", "R", "--epochs", "0"], "argument --epochs: '0' is not an integer >= 1"),
        (["train", "D", "-o", "R", "--iters-per-epoch", "two"], "argument --iters-per-epoch: 'two' is not an integer"),
        (["train", "D", "-o", "R", "--num-workers", "-1"], "argument --num-workers: '-1' is not an integer >= 0"),
        (["train", "D", "-o", "R", "--fold", "-1"], "argument --fold: '-1' is not an integer >= 0"),
        (["predict", "R", "I", "-o", "O", "--fold", "one"],
         "argument --fold: 'one' is not a fold: an integer >= 0, or 'all' (nnU-Net's fold_all)"),
        (["plan", "D", "-o", "R", "--memory-gb", "0"], "argument --memory-gb: '0' is not a positive, finite number"),
        (["evaluate", "P", "G", "--tolerance-mm", "-1"], "argument --tolerance-mm: '-1' is not a positive"),
        (["nnunet-plans", "P.json", "--head-dim", "0"], "argument --head-dim: '0' is not an integer >= 1"),
        (["train", "D", "-o", "R", "--threads", "0"], "argument --threads: '0' is not an integer >= 1"),
    ],
)
def test_numeric_options_are_checked_before_any_work_naming_the_value(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"usema {argv[0]}: error: {message}")


def test_network_settings_are_json_objects_per_model_named_by_their_option():
    from usema.cli.options import network_settings
    from usema.errors import UsemaError

    assert network_settings(['usema={"head_dim": 16}', "nnunet={}"]) == {"usema": {"head_dim": 16}, "nnunet": {}}
    with pytest.raises(UsemaError, match=r"--model-overrides usema: expected a JSON object"):
        network_settings(["usema=[1]"], "--model-overrides")
    with pytest.raises(UsemaError, match=r"--network-settings 'usema': expected MODEL=JSON"):
        network_settings(["usema"])


def test_threads_set_torchs_cpu_threads_before_the_command_runs(tmp_path, capsys):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        # the run does not exist: the command fails after --threads took effect
        assert main(["predict", str(tmp_path / "no_run"), str(tmp_path), "-o", str(tmp_path / "out"),
                     "--threads", "1"]) == 2
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert "no_run" in capsys.readouterr().err
