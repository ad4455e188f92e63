"""The command line's own behaviour: warnings as one line each."""

import nibabel as nib
import numpy as np

from usema.cli import main


def test_a_warning_is_one_line_without_python_source(tmp_path, capsys):
    for folder, value in (("gt", 1), ("pred", 1)):
        (tmp_path / folder).mkdir()
        label = np.zeros((6, 6, 6), np.uint8)
        label[2:4, 2:4, 2:4] = value
        nib.save(nib.Nifti1Image(label, np.eye(4)), tmp_path / folder / "a.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((6, 6, 6), np.uint8), np.eye(4)), tmp_path / "gt" / "b.nii.gz")

    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--chill"]) == 0

    warning_lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert warning_lines == [
        f"usema: warning: 1 of 2 reference cases have no prediction in {tmp_path / 'pred'} and are not scored "
        "(chill), e.g. b"
    ]


def _subcommands(parser, prefix=()):
    import argparse

    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[prefix + (name,)] = sub
                found.update(_subcommands(sub, prefix + (name,)))
    return found


def test_the_synopsis_of_docs_cli_names_every_command_and_only_options_that_exist():
    """docs/cli.md's synopsis against the parser: every command is there, no option that the command lacks, and
    the pipeline's commands with every option (deprecated ones are described in the prose instead)."""
    import re
    from pathlib import Path

    from usema.cli import _build_parser

    text = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    documented, command = {}, None
    for line in block.splitlines():
        if line.startswith("usema "):
            command = tuple(w for w in line.split()[1:3] if re.fullmatch(r"[a-z][a-z-]*", w))
        elif not line.startswith(" "):  # torchrun lines
            command = None
        if command:
            documented.setdefault(command, set()).update(re.findall(r"(?<![\w-])--?[a-z][a-z0-9-]*", line.split("#")[0]))
    commands = _subcommands(_build_parser())
    leaves = {c for c in commands if not any(o[: len(c)] == c and o != c for o in commands)}
    assert leaves - set(documented) == set()
    deprecated = {"--tta", "--model-overrides", "--network"}
    for command, tokens in documented.items():
        actions = [a for a in commands[command]._actions if a.option_strings and "--help" not in a.option_strings]
        known = {o for a in actions for o in a.option_strings}
        assert tokens - known == set(), command
        if command[0] in ("plan", "train", "predict", "export", "evaluate", "demo", "nnunet-install-trainer"):
            absent = [a.option_strings[-1] for a in actions if not set(a.option_strings) & tokens]
            assert set(absent) - deprecated == set(), command
