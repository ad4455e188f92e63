"""Wording shared by messages."""

from __future__ import annotations


def counted(number: int, noun: str) -> str:
    """"1 channel", "3 channels": a count with its noun in the right number (nouns that take an s)."""
    return f"{number} {noun}{'' if number == 1 else 's'}"
