"""Provenance of a result: the command as typed, the machine, and the Markdown lines read back."""

import pytest
import torch

from usema.utils import provenance as provenance_module
from usema.utils.provenance import (
    command_line,
    describe_machine,
    provenance,
    provenance_from_markdown,
    provenance_markdown,
    set_cli_argv,
)


def test_the_command_is_the_usema_call_quoted_as_a_shell_would_take_it(monkeypatch):
    monkeypatch.setattr(provenance_module, "_CLI_ARGV", None)
    assert command_line().startswith("python ")
    set_cli_argv(["bench", "loader", "--shape", "8x8x8", "--plan", "a b"])
    assert command_line() == "usema bench loader --shape 8x8x8 --plan 'a b'"


def test_the_markdown_lines_read_back_as_they_were_written(monkeypatch):
    monkeypatch.setattr(provenance_module, "_CLI_ARGV", ["demo", "-o", "x"])
    machine = describe_machine(torch.device("cpu"))
    assert machine["cores"] >= 1 and machine["torch"] == torch.__version__ and "gpu" not in machine
    prov = provenance()
    text = provenance_markdown(prov)
    assert text.startswith("Command: `usema demo -o x`  \nMachine: ") and f"Date: {prov['date']}" in text
    back = provenance_from_markdown(text)
    assert back["command"] == "usema demo -o x" and back["date"] == prov["date"]
    assert provenance_markdown(back) == text  # a report rewritten from its own lines keeps them
    with pytest.raises(ValueError, match="no Command: line"):
        provenance_from_markdown("# a report without provenance")


def test_the_commit_names_the_checkout_and_says_when_tracked_files_differ(tmp_path):
    import subprocess

    from usema.utils.provenance import git_commit

    assert git_commit(tmp_path) == "unknown"  # not a checkout
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    (tmp_path / "a.txt").write_text("one")
    for args in (["init", "-q"], ["add", "a.txt"], ["commit", "-qm", "one"]):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, env={**env, "PATH": "/usr/bin:/bin"})
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert git_commit(tmp_path) == head
    (tmp_path / "untracked.txt").write_text("not part of the code")
    assert git_commit(tmp_path) == head
    (tmp_path / "a.txt").write_text("two")
    assert git_commit(tmp_path) == head + "+dirty"
    assert provenance()["commit"] == git_commit()


def test_only_the_code_folder_makes_the_commit_dirty(tmp_path):
    import subprocess

    from usema.utils.provenance import git_commit

    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": "/usr/bin:/bin"}
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "model.py").write_text("one")
    (tmp_path / "results.csv").write_text("0.8")
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "one"]):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, env=env)
    head = git_commit(tmp_path)
    (tmp_path / "results.csv").write_text("0.9")  # a tracked result rewritten by a study
    assert git_commit(tmp_path / "code") == head
    assert git_commit(tmp_path) == head + "+dirty"
    (tmp_path / "code" / "model.py").write_text("two")
    assert git_commit(tmp_path / "code") == head + "+dirty"
