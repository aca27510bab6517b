"""Small English helpers for the lines the apps print and the tables they write."""

from __future__ import annotations


def plural(word: str) -> str:
    """The plural of a kind's name (``loss`` -> ``losses``, ``head`` -> ``heads``)."""
    return word + ("es" if word.endswith(("s", "x")) else "s")


def count(n: int, word: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{n} {word if n == 1 else plural(word)}"


def span(low: float, high: float, fmt: str = ".1f") -> str:
    """``2.5-3.1`` for a range, ``2.5`` when both ends read the same at ``fmt``."""
    a, b = format(low, fmt), format(high, fmt)
    return a if a == b else f"{a}-{b}"


__all__ = ["plural", "count", "span"]
