"""Micro-benchmark: `Codec.decode_many` against bare `fastavro.schemaless_reader`, same records, same run.

    .venv/bin/python bench/codec_bench.py [--records 200000] [--batch 1000] [--repeat 3]

Generates a deterministic mix of input records (EP3 updates and snapshots, risk snapshots, OG margin
sweeps, fills, marks), encodes them once per feed, then times (best of --repeat, interleaved):

- baseline: `fastavro.schemaless_reader` on each body with the logical schema (decimals as fastavro
  makes them, no framing, no canonical form, no contract check) — the ceiling for any Avro decode;
- decode_many: framing check, body read, canonical decimals and `parse_value` contract validation,
  producing frozen records;
- decode_value: as decode_many without the contract validation, to show where the time goes.
"""

from __future__ import annotations

import argparse
import io
import random
import time
from collections.abc import Callable
from decimal import Decimal

import fastavro

from streams.codec import Codec, input_codecs
from streams.core.records import (
    Ep3PositionEvent,
    Feed,
    Fill,
    Mark,
    OgMargin,
    PositionQty,
    Record,
    RiskPosition,
    RiskSnapshot,
)

Batches = list[tuple[Codec, list[bytes]]]
SYMBOLS = ["BTC-PERP", "ETH-PERP", "SOL-PERP", "XAU-PERP", "DOGE-PERP", "EUR-PERP", "NQ-PERP", "CL-PERP"]
TS = 1_780_000_000_000


def _qty(rng: random.Random) -> Decimal:
    return rng.choice([Decimal(rng.randint(-50, 50)), Decimal(rng.randint(-500000, 500000)) / 1000])


def _money(rng: random.Random) -> Decimal:
    return Decimal(rng.randint(-10**9, 10**10)) / 100


def _record(rng: random.Random, i: int) -> Record:
    acc, sym, ts = f"ACC-{rng.randint(1, 5000)}", rng.choice(SYMBOLS), TS + i
    roll = rng.random()
    if roll < 0.40:
        n = rng.randint(1, 3)
        pos = tuple(PositionQty(s, _qty(rng)) for s in rng.sample(SYMBOLS, n))
        return Ep3PositionEvent(acc, "UPDATE" if rng.random() < 0.95 else "SNAPSHOT", i, ts, pos)
    if roll < 0.60:
        return Fill(f"F-{i}", acc, sym, _qty(rng), _money(rng), ts)
    if roll < 0.80:
        return Mark(sym, Decimal(rng.randint(1, 10**8)) / 1000, ts)
    if roll < 0.90:
        return OgMargin(acc, ts, "EP3", _money(rng), _money(rng), _money(rng), _money(rng))
    pos_r = tuple(RiskPosition(s, _qty(rng), _money(rng)) for s in rng.sample(SYMBOLS, rng.randint(0, 4)))
    return RiskSnapshot(acc, ts, pos_r, _money(rng), _money(rng), _money(rng), _money(rng))


def make_batches(n: int, batch: int) -> Batches:
    """`n` mixed records, encoded, grouped per feed into batches (as a consumer poll returns them)."""
    rng = random.Random(42)
    codecs = input_codecs()
    by_feed: dict[Feed, list[bytes]] = {f: [] for f in Feed}
    for i in range(n):
        record = _record(rng, i)
        codec = next(c for c in codecs.values() if c.record_type is type(record))
        by_feed[codec.feed].append(codec.encode(record))
    return [(codecs[f], data[k:k + batch]) for f, data in by_feed.items() for k in range(0, len(data), batch)]


def baseline(batches: Batches) -> int:
    count = 0
    for codec, batch in batches:
        parsed = codec.schema.parsed
        for data in batch:
            fastavro.schemaless_reader(io.BytesIO(data[10:]), parsed, None)
            count += 1
    return count


def decode_many(batches: Batches) -> int:
    count = 0
    for codec, batch in batches:
        out = codec.decode_many(batch)
        count += len(out)
    return count


def decode_value(batches: Batches) -> int:
    count = 0
    for codec, batch in batches:
        for data in batch:
            codec.decode_value(data)
            count += 1
    return count


def best_rates(fns: dict[str, Callable[[Batches], int]], batches: Batches, repeat: int) -> dict[str, float]:
    """Best records/s of each function; runs are interleaved so load changes hit all of them alike."""
    best = dict.fromkeys(fns, 0.0)
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            count = fn(batches)
            best[name] = max(best[name], count / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    batches = make_batches(args.records, args.batch)
    errors = sum(isinstance(x, Exception) for c, b in batches for x in c.decode_many(b))
    assert errors == 0, f"{errors} records failed to decode"
    rates = best_rates({"base": baseline, "many": decode_many, "value": decode_value}, batches, args.repeat)
    base, many, value = rates["base"], rates["many"], rates["value"]
    print(f"records:                       {args.records} mixed, batches of {args.batch}")
    print(f"fastavro.schemaless_reader:    {base:>10,.0f} records/s  (baseline)")
    print(f"decode_value (no contract):    {value:>10,.0f} records/s  ({base / value:.2f}x baseline cost)")
    print(f"decode_many (records):         {many:>10,.0f} records/s  ({base / many:.2f}x baseline cost)")
    print(f"ratio decode_many / baseline:  {many / base:.2f}")


if __name__ == "__main__":
    main()
