"""Counts with their nouns in messages."""

from usema.utils.text import counted


def test_one_is_singular_and_every_other_count_plural():
    assert [counted(n, "channel") for n in (0, 1, 2, 3)] == ["0 channels", "1 channel", "2 channels", "3 channels"]
    assert [counted(n, "class") for n in (1, 4)] == ["1 class", "4 classes"]
    assert [counted(2, noun) for noun in ("epoch", "patch")] == ["2 epochs", "2 patches"]
