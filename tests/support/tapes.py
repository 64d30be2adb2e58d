"""A tiny builder for readable engine inputs, with times relative to a base timestamp.

    records = (T()
               .instrument("XAU-PERP", cs="1", rate="0.05").mark("XAU-PERP", "11700")
               .ep3_snapshot("A1", seq=1, at=0, XAU_PERP="13")
               .risk("A1", at=0, XAU_PERP="13")
               .records())

Keyword symbols use `_` for `-` (`XAU_PERP` is "XAU-PERP"); pass a mapping to spell them exactly.
Quantities and money are decimal strings, as on a JSON Lines tape. A risk position's IM defaults to
what the instruments and marks given so far imply, or None (unknown) when they can't value it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from streams.core.events import Event
from streams.core.params import EngineConfig
from streams.core.records import (
    Ep3PositionEvent,
    Feed,
    Fill,
    Instrument,
    Mark,
    OgMargin,
    PositionQty,
    Record,
    RiskPosition,
    RiskSnapshot,
)
from streams.tapes import replay
from streams.tapes.jsonl import write_record
from streams.tapes.model import TapeRecord

BASE = 1_780_000_020_000  # a whole minute, so the first witness sweep falls at BASE + 60 s
CLOCK = "CLOCK"  # the symbol of `tick` marks: moves event time, values nothing


def _positions(given: Mapping[str, Any] | None, kw: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(given or {})
    out.update({k.replace("_", "-"): v for k, v in kw.items()})
    return out


def _dec(v: Any) -> Decimal | None:
    return None if v is None else Decimal(str(v))


class T:
    """Collects records at `base + at` milliseconds; `records()` returns them in ts order."""

    def __init__(self, base: int = BASE) -> None:
        self.base = base
        self._items: list[tuple[int, Feed, Record]] = []
        self._inst: dict[str, Instrument] = {}
        self._marks: dict[str, Decimal] = {}
        self._fills = 0

    def _add(self, at: int, feed: Feed, record: Record) -> T:
        self._items.append((self.base + at, feed, record))
        return self

    def instrument(self, symbol: str, cs: str = "1", rate: str = "0.05", at: int = 0) -> T:
        inst = Instrument(symbol, Decimal(cs), Decimal(rate))
        self._inst[symbol] = inst
        return self._add(at, Feed.INSTRUMENTS, inst)

    def mark(self, symbol: str, price: str, at: int = 0) -> T:
        self._marks[symbol] = Decimal(price)
        return self._add(at, Feed.MARKS, Mark(symbol, Decimal(price), self.base + at))

    def tick(self, at: int) -> T:
        """A record that only moves event time forward (so due grace timers fire)."""
        return self._add(at, Feed.MARKS, Mark(CLOCK, Decimal(1), self.base + at))

    def _ep3(self, kind: str, account: str, seq: int, at: int, positions: Mapping[str, Any] | None,
             kw: Mapping[str, Any]) -> T:
        pos = tuple(PositionQty(s, Decimal(str(q))) for s, q in _positions(positions, kw).items())
        return self._add(at, Feed.EP3, Ep3PositionEvent(account, kind, seq, self.base + at, pos))  # type: ignore[arg-type]

    def ep3_snapshot(self, account: str, seq: int, at: int, positions: Mapping[str, Any] | None = None,
                     **kw: Any) -> T:
        """A full EP3 snapshot; with no positions it is the bookmark."""
        return self._ep3("SNAPSHOT", account, seq, at, positions, kw)

    def ep3_update(self, account: str, seq: int, at: int, positions: Mapping[str, Any] | None = None,
                   **kw: Any) -> T:
        return self._ep3("UPDATE", account, seq, at, positions, kw)

    def _im(self, symbol: str, qty: Decimal) -> Decimal | None:
        inst, mark = self._inst.get(symbol), self._marks.get(symbol)
        if inst is None or mark is None:
            return None
        return abs(qty) * inst.contract_size * mark * inst.im_rate

    def risk(self, account: str, at: int, positions: Mapping[str, Any] | None = None, *,
             published: int | None = None, avail: str = "1000", equity: str = "10000", oom: str = "0",
             im_total: str | None = None, **kw: Any) -> T:
        """An RE snapshot; a position is `qty` or `(qty, im)`; `published` defaults to `at`."""
        pos = []
        for s, v in _positions(positions, kw).items():
            qty, im = (Decimal(str(v[0])), _dec(v[1])) if isinstance(v, tuple) else (Decimal(str(v)), None)
            pos.append(RiskPosition(s, qty, im if isinstance(v, tuple) else self._im(s, qty)))
        ims = [p.im for p in pos]
        total = _dec(im_total) if im_total is not None else (
            None if None in ims else sum((i for i in ims if i is not None), Decimal(0)))
        pub = self.base + (at if published is None else published)
        return self._add(at, Feed.RISK, RiskSnapshot(account, pub, tuple(pos), total, Decimal(oom),
                                                      Decimal(equity), Decimal(avail)))

    def og(self, account: str, at: int, avail: str, source: str = "RISK_ENGINE", im: str | None = "0",
           oom: str = "0", equity: str = "10000") -> T:
        return self._add(at, Feed.OG_MARGIN, OgMargin(account, self.base + at, source, _dec(im),  # type: ignore[arg-type]
                                                      Decimal(oom), Decimal(equity), Decimal(avail)))

    def fill(self, account: str, symbol: str, qty: str, at: int, price: str = "1") -> T:
        self._fills += 1
        return self._add(at, Feed.FILLS, Fill(f"F{self._fills}", account, symbol, Decimal(qty), Decimal(price),
                                              self.base + at))

    def records(self) -> list[TapeRecord]:
        """In ts order, ties in the order they were added (what a tape on disk would hold)."""
        ordered = sorted(self._items, key=lambda item: item[0])
        return [TapeRecord(ts, feed, rec, f"line {i}") for i, (ts, feed, rec) in enumerate(ordered, 1)]

    def write_jsonl(self, path: Path) -> Path:
        write_jsonl(self.records(), path)
        return path


def write_jsonl(records: Iterable[TapeRecord], path: Path) -> None:
    with path.open("w", encoding="utf-8") as out:
        for r in records:
            write_record(out, r.feed, r.ts_ms, r.record)


def run(records: Iterable[TapeRecord], **cfg: Any) -> list[Event]:
    """Replay `records` through a fresh engine; every event in its final state."""
    return replay.run(iter(records), EngineConfig(**cfg)).final_events()
