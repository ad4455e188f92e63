"""The run-folder lock: one writer at a time, the holder named by pid, a dead holder's lock taken over."""

import os
import subprocess
import sys
import time

import pytest

from usema.errors import UsemaError
from usema.utils.lock import LOCK_NAME, folder_lock

HOLD = """
import sys, time
from usema.utils.lock import folder_lock
with folder_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 60)
"""


def hold(folder, seconds=60):
    """A process holding `folder`'s lock for `seconds`, once it has it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)], stdout=subprocess.PIPE,
                              text=True, env=env)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_holder_is_refused_naming_the_folder_and_the_pid(tmp_path):
    with folder_lock(tmp_path / "run") as path:
        assert path.read_text() == f"{os.getpid()}\n"
        refused = pytest.raises(UsemaError, match=rf"{tmp_path / 'run'} is in use .* \(pid {os.getpid()}\)")
        with refused, folder_lock(tmp_path / "run"):
            pass
    assert not path.exists()  # released: the file goes with the lock
    with folder_lock(tmp_path / "run"):  # and the folder can be locked again
        pass


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    holder = hold(tmp_path)
    try:
        with pytest.raises(UsemaError, match=rf"\(pid {holder.pid}\)"), folder_lock(tmp_path):
            pass
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / LOCK_NAME).read_text() == f"{holder.pid}\n"  # a stale lock file is left behind
    started = time.monotonic()
    with folder_lock(tmp_path) as path:
        assert path.read_text() == f"{os.getpid()}\n"
    assert time.monotonic() - started < 5


def test_a_waiting_process_takes_the_lock_when_the_holder_lets_go_and_gives_up_after_its_wait(tmp_path, capsys):
    holder = hold(tmp_path, seconds=1.0)
    try:
        started = time.monotonic()
        with folder_lock(tmp_path, wait_s=60) as path:
            assert time.monotonic() - started > 0.8  # taken when the holder let go, not from it
            assert path.read_text() == f"{os.getpid()}\n"
    finally:
        holder.kill()
        holder.wait()
    assert capsys.readouterr().err == f"{tmp_path} is in use by usema process {holder.pid}; waiting for it\n"
    holder = hold(tmp_path)
    try:
        started = time.monotonic()
        with pytest.raises(UsemaError, match=rf"\(pid {holder.pid}\)"), folder_lock(tmp_path, wait_s=0.5):
            pass
        assert 0.5 <= time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.wait()


def test_folders_the_lock_made_go_again_when_the_block_wrote_nothing(tmp_path):
    with folder_lock(tmp_path / "runs" / "a" / "run"):
        assert (tmp_path / "runs" / "a" / "run" / LOCK_NAME).is_file()
    assert not (tmp_path / "runs").exists() and tmp_path.is_dir()  # a failed command leaves no empty run folder
    with folder_lock(tmp_path / "runs" / "b"):
        (tmp_path / "runs" / "b" / "plans.json").write_text("{}")
    assert sorted(p.name for p in (tmp_path / "runs" / "b").iterdir()) == ["plans.json"]
    (tmp_path / "kept").mkdir()
    with folder_lock(tmp_path / "kept"):
        pass
    assert (tmp_path / "kept").is_dir()  # a folder that was there before stays, empty or not
