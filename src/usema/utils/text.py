"""Wording shared by messages."""

from __future__ import annotations


def counted(number: int, noun: str) -> str:
    """"1 channel", "3 channels", "2 classes": a count with its noun in the right number (regular nouns)."""
    if number == 1:
        return f"{number} {noun}"
    return f"{number} {noun}{'es' if noun.endswith(('s', 'x', 'sh', 'tch')) else 's'}"


def listed(values: list, most: int = 8) -> str:
    """A list for a message, shortened where long: "[1, 2, 3]", or "[1, 2, 3, 4, ..., 229] (229 values)" so that
    an instance map's hundreds of ids do not bury the message."""
    if len(values) <= most:
        return str(list(values))
    shown = ", ".join(map(str, values[:most // 2]))
    return f"[{shown}, ..., {values[-1]}] ({counted(len(values), 'value')})"
