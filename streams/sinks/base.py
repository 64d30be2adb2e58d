"""The one narrow seam between the engine's events and a store (STYLE item 2).

A `Sink` gets whole batches. Guarantees every implementation gives:

- `setup()` connects (and, for ClickHouse, migrates); constructors never do I/O.
- `write(batch)` is all-or-nothing from the caller's point of view: it returns only when the store
  has acknowledged every event of the batch, otherwise it raises a `SinkError`. Writing the same batch
  again is harmless (deterministic event ids, versions and insert deduplication tokens), so a caller
  may retry a batch whose outcome is unknown.
- `write` raises `SinkUnavailable(retry_after)` when the store is unreachable, never a library error.
- `close()` is idempotent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from streams.core.events import Event


@runtime_checkable
class Sink(Protocol):
    """Store for output events; see the module docstring for the guarantees."""

    def setup(self) -> None: ...

    def write(self, batch: Sequence[Event]) -> None: ...

    def close(self) -> None: ...
