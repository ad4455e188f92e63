"""Wording shared by messages."""

from __future__ import annotations


def counted(number: int, noun: str) -> str:
    """"1 channel", "3 channels", "2 classes": a count with its noun in the right number (regular nouns)."""
    if number == 1:
        return f"{number} {noun}"
    return f"{number} {noun}{'es' if noun.endswith(('s', 'x', 'sh', 'tch')) else 's'}"
