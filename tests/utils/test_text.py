"""Counts with their nouns, and lists short enough to read, in messages."""

from usema.utils.text import counted, listed


def test_one_is_singular_and_every_other_count_plural():
    assert [counted(n, "channel") for n in (0, 1, 2, 3)] == ["0 channels", "1 channel", "2 channels", "3 channels"]
    assert [counted(n, "class") for n in (1, 4)] == ["1 class", "4 classes"]
    assert [counted(2, noun) for noun in ("epoch", "patch")] == ["2 epochs", "2 patches"]


def test_a_long_list_is_shortened_and_counted():
    assert listed([1, 2, 3]) == "[1, 2, 3]"
    assert listed(list(range(1, 9))) == "[1, 2, 3, 4, 5, 6, 7, 8]"  # up to 8 in full
    assert listed(list(range(1, 230))) == "[1, 2, 3, 4, ..., 229] (229 values)"
