"""This machine's memory, as the system tells it."""

from usema.utils import memory


def test_physical_memory_is_what_the_system_says_or_none(monkeypatch):
    total = memory.physical_memory_bytes()
    assert total is not None and total > 2**28  # any machine that runs the tests has more than 256 MB

    def unknown(name):
        raise ValueError(name)

    monkeypatch.setattr(memory.os, "sysconf", unknown)  # a system without these names
    assert memory.physical_memory_bytes() is None
