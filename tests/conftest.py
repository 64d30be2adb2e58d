"""Shared fixtures. Sections are owned by different parts of the suite; add yours as a new section."""

from __future__ import annotations

# --- ClickHouse sink fixtures (streams.sinks) ----------------------------------------------------
# chdb hosts one data directory per process at a time, so the whole test process shares one chdb
# directory and every test gets a fresh database in it (measured: switching directories works only
# once every handle is closed, which a failing test may not guarantee).
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from streams.config import Settings
from streams.core import events as ev


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one chdb data directory of this test process."""
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture
def ch_settings(chdb_dir: Path) -> Settings:
    """Settings for the embedded store with a database of this test's own."""
    return Settings.load({"clickhouse_path": str(chdb_dir),
                          "clickhouse_database": f"t_{uuid.uuid4().hex[:12]}"}, environ={})


@pytest.fixture
def ch_http(chdb_dir: Path) -> Iterator[Any]:
    """The HTTP test fixture (tests/support/ch_http.py) serving the process's chdb directory."""
    from tests.support.ch_http import ChHttpServer

    server = ChHttpServer(str(chdb_dir)).start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def ch_http_settings(ch_http: Any, ch_settings: Settings) -> Settings:
    """Settings pointing the sink at the HTTP fixture (server code path), own database."""
    from dataclasses import replace

    return replace(ch_settings, clickhouse_url=ch_http.url)


def _recent_hour_ms() -> int:
    """Start of the hour two hours ago: recent enough that the 90-day TTL keeps the rows."""
    return (int(time.time() * 1000) // 3_600_000 - 2) * 3_600_000


@pytest.fixture
def make_events() -> Callable[..., list[Any]]:
    """Factory: one event of every output type (NULLs, zeros, arrays), ids suffixed by `tag`."""

    def make(tag: str = "", base_ms: int | None = None, version: int = 1) -> list[Any]:
        t = _recent_hour_ms() if base_ms is None else base_ms
        d0 = Decimal(0)
        return [
            ev.PositionMismatch(f"pm{tag}", version, "test", "RISK_ENGINE", "A1", "XAU-PERP", "confirmed",
                                "never_in_cache", None, Decimal("13"), Decimal("-13"), t, t + 2000, None,
                                "RE", Decimal("2345.678901234567"), d0, None, 0, None, Decimal("-5.5"), d0),
            ev.AvailGapFlip(f"fl{tag}", version, "test", "EP3", "A2", d0, "opened", t + 5, None,
                            Decimal("-1.5"), Decimal("2.25"), Decimal("-3.75"), d0, Decimal("1"), None,
                            Decimal("7.1"), Decimal("100"), 0, True, ("BTC-PERP", "ETH-PERP"),
                            (Decimal("1.5"), None)),
            ev.Unvaluable(f"uv{tag}", version, "test", "EP3", "A3", "DOGE-PERP", "EP3", "opened", d0,
                          "missing_mark", t + 7, None),
            ev.WitnessCheck(f"wa{tag}", version, "test", "EP3", "anomaly", t + 9, "A4", "SOL-PERP",
                            Decimal("3"), None, "never_in_cache", "confirmed", "risk", t + 9, t + 2009, None,
                            "all", None, None, None, None, None),
            ev.WitnessCheck(f"ws{tag}", version, "test", "EP3", "sweep", t + 60_000, None, None, None, None,
                            None, None, None, None, None, None, "p0", 12, 0, 0, 3, 0),
            ev.SourceTransition(f"st{tag}", version, "test", "EP3", t + 11, "RISK_ENGINE", "EP3", "A1", "all"),
            ev.FeedHealth(f"fh{tag}", version, "test", "EP3", t, "ep3.positions", 0, "p1"),
        ]

    return make


@pytest.fixture
def read_events() -> Callable[..., list[Any]]:
    """Factory: read a table back as event dataclasses (`final`: collapse versions with FINAL)."""
    from dataclasses import fields

    def read(client: Any, database: str, table: str, final: bool = True) -> list[Any]:
        cls = ev.EVENT_TYPES[table]
        names = [f.name for f in fields(cls)]
        cols = ", ".join("`class`" if n == "cls" else f"`{n}`" for n in names)
        rows = client.query(f"SELECT {cols} FROM {database}.{table} {'FINAL' if final else ''} "
                            f"ORDER BY event_id, version").result_rows
        return [cls(**{n: tuple(v) if isinstance(v, list) else v for n, v in zip(names, r, strict=True)})
                for r in rows]

    return read
