"""Typed errors of the sinks; every sink raises only these (the cause is chained with `from`).

Exception tree::

    SinkError                      base: anything a sink could not do
    ├── SinkUnavailable            transient: the store is unreachable or overloaded. Carries
    │   │                          `retry_after` (seconds). Nothing of the failed batch is
    │   │                          acknowledged; retry the *same* batch later (it is idempotent).
    │   └── Backpressure           BatchingSink's buffer is full because writes are failing or slow:
    │                              pause consumption for `retry_after` seconds, then poll/offer again.
    ├── StoreLocked                the embedded chdb data directory is held by another process
    │                              (chdb allows one process per directory). Not retryable here.
    ├── SinkConfigError            the settings cannot work (bad database name, bad URL, a second
    │                              chdb path in one process). Not retryable.
    └── SinkRejected               the store is reachable but refused the statement or the data
                                   (schema drift, bad value). Not retryable; the batch is kept.

Command-line mapping (`divmon db`): SinkConfigError -> exit 2; SinkUnavailable, StoreLocked -> exit 1.
"""

from __future__ import annotations


class SinkError(Exception):
    """Base class of every sink error."""


class SinkUnavailable(SinkError):
    """The store cannot take writes right now; retry the same batch after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = max(0.0, float(retry_after))

    def __str__(self) -> str:
        return f"{self.args[0]} (retry after {self.retry_after:.2f}s)"


class Backpressure(SinkUnavailable):
    """The batching buffer is at its bound: stop consuming for `retry_after` seconds."""


class StoreLocked(SinkError):
    """The embedded ClickHouse (chdb) directory is locked by another process."""


class SinkConfigError(SinkError):
    """The sink's settings cannot work; the message names the setting."""


class SinkRejected(SinkError):
    """The store refused a statement or the data; retrying the same batch will not help."""
