"""One ClickHouse client for the report and the gate, opened exactly like the sink opens it.

Delegates to `streams.sinks.connect.connect` (server over HTTP(S) when `DIVMON_CLICKHOUSE_URL` is set,
else embedded chdb under `DIVMON_CLICKHOUSE_PATH`, with its lock probe and typed errors), and maps
its errors onto two cases the commands treat differently: a configuration that cannot work
(`ClientConfigError`, exit 2) and a store that cannot be reached (`ClientError`, exit 1 /
NOT_CLEARED). Messages never contain the password.
"""

from __future__ import annotations

from typing import Any

from streams.config import Settings


class ClientError(RuntimeError):
    """ClickHouse could not be opened; the message says where and why."""


class ClientConfigError(ClientError):
    """The ClickHouse settings cannot work (bad URL, bad database name, a second chdb path)."""


def open_client(settings: Settings) -> Any:
    """A connected clickhouse-connect client; ClientError / ClientConfigError when that fails."""
    from streams.sinks.connect import connect, describe
    from streams.sinks.errors import SinkConfigError, SinkError
    from streams.sinks.schema import check_identifier

    try:
        check_identifier(settings.clickhouse_database)
        return connect(settings)
    except SinkConfigError as exc:
        raise ClientConfigError(str(exc)) from exc
    except SinkError as exc:
        raise ClientError(str(exc)) from exc
    except Exception as exc:
        raise ClientError(f"cannot open ClickHouse at {describe(settings)}: {type(exc).__name__}") from exc
