"""What the Kafka actions share: argument schemas and the redrive header."""

from __future__ import annotations

REDRIVEN_HEADER = "x-opsctl-redriven"
TOPIC = {"type": "string", "minLength": 1}


def text(data: bytes | None, limit: int) -> str | None:
    """A record's bytes for display: decoded, truncated to ``limit`` bytes (with how many were cut)."""
    if data is None:
        return None
    shown = data[:limit].decode("utf-8", errors="replace")
    return shown if len(data) <= limit else f"{shown}... (+{len(data) - limit} bytes)"
