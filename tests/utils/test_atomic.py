"""Atomic writes on a full disk: one line naming the file, and the file written before is intact."""

import errno
from pathlib import Path

import pytest

from usema.errors import UsemaError
from usema.utils.atomic import atomic_path, atomic_write_text


def _no_space(code):
    def write_text(self, *args, **kwargs):
        raise OSError(code, "simulated full disk")

    return write_text


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_one_error_naming_the_file_and_the_old_file_is_kept(tmp_path, monkeypatch, code):
    target = atomic_write_text(tmp_path / "plans.json", "old")
    monkeypatch.setattr(Path, "write_text", _no_space(code))
    with pytest.raises(UsemaError, match=rf"{target}: cannot write it, .*; free some space") as err:
        atomic_write_text(target, "new")
    assert "\n" not in str(err.value)
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["plans.json"]  # no temporary file left behind


def test_other_write_errors_are_not_mistaken_for_a_full_disk(tmp_path):
    with pytest.raises(PermissionError), atomic_path(tmp_path / "x.txt"):
        raise PermissionError(errno.EACCES, "denied")
