"""Instants as epoch milliseconds UTC: parsing command-line values and printing them for people.

Guarantees: `parse_instant` accepts integer epoch milliseconds or ISO 8601 (a naive ISO value is UTC)
and raises `ValueError` naming the value otherwise; `iso` never raises for any int.
"""

from __future__ import annotations

from datetime import UTC, datetime

MINUTE_MS = 60_000
HOUR_MS = 3_600_000


def parse_instant(value: str) -> int:
    """Epoch ms from `1780000000000` or `2026-06-01T12:00:00Z`; ValueError on anything else."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not epoch milliseconds or ISO 8601: {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def now_ms() -> int:
    """The wall clock, read only by the command layer (everything below takes `now` as an argument)."""
    return int(datetime.now(tz=UTC).timestamp() * 1000)


def iso(ts_ms: int | None) -> str:
    """`2026-06-01T12:00:00Z` (seconds precision), or `-` for None."""
    if ts_ms is None:
        return "-"
    try:
        return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(ts_ms)


def hours(ms: int) -> float:
    """Milliseconds as hours, rounded to 0.01 h for display."""
    return round(ms / HOUR_MS, 2)
