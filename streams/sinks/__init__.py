"""Sinks: where output events go. One protocol (`Sink`), ClickHouse (server or chdb) behind it.

Public API: `Sink`, `ClickHouseSink`, `MemorySink`, `BatchingSink`, `Backoff`, the errors of
`streams.sinks.errors`, `connect` (a raw clickhouse-connect client for queries) and `migrations`.
Heavy imports (clickhouse_connect, chdb) happen only when a ClickHouse client is opened.
"""

from streams.sinks.base import Sink
from streams.sinks.batching import Backoff, BatchingSink
from streams.sinks.clickhouse import ClickHouseSink
from streams.sinks.connect import connect, describe
from streams.sinks.errors import (
    Backpressure,
    SinkConfigError,
    SinkError,
    SinkRejected,
    SinkUnavailable,
    StoreLocked,
)
from streams.sinks.factory import AutoFlushSink, open_sink
from streams.sinks.memory import MemorySink

__all__ = [
    "AutoFlushSink",
    "Backoff",
    "Backpressure",
    "BatchingSink",
    "ClickHouseSink",
    "MemorySink",
    "Sink",
    "SinkConfigError",
    "SinkError",
    "SinkRejected",
    "SinkUnavailable",
    "StoreLocked",
    "connect",
    "describe",
    "open_sink",
]
