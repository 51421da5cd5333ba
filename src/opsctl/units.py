"""Durations for people: "3 s", "0.5 s", "2 min 5 s", never "2.99996s"."""

from __future__ import annotations


def seconds(value: float) -> str:
    """A duration in seconds, rounded for reading: 0.3 s, 1.5 s, 3 s, 45 s, 2 min 5 s."""
    v = max(0.0, float(value))
    if v < 10:
        text = f"{round(v, 1):g}"
        return f"{text} s"
    if v < 120:
        return f"{round(v):d} s"
    m, s = divmod(round(v), 60)
    return f"{m} min {s} s" if s else f"{m} min"
