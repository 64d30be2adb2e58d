"""Micro-benchmark: `Codec.decode_many` and `EventCodec.encode_event` against bare fastavro, same run.

    .venv/bin/python bench/codec_bench.py [--records 200000] [--batch 1000] [--events 50000] [--repeat 5]

Generates a deterministic mix of input records (EP3 updates and snapshots, risk snapshots, OG margin
sweeps, fills, marks), encodes them once per feed, then times (best of --repeat, interleaved):

- baseline: `fastavro.schemaless_reader` on each body with the logical schema (decimals as fastavro
  makes them, no framing, no canonical form, no contract check) — the ceiling for any Avro decode;
- decode_many: framing check, body read, canonical decimals and contract validation, producing
  frozen records (for these bytes, all of our own schemas, on the direct path of `direct.py`);
- decode_value: as decode_many without the contract validation, to show where the time goes.

Then it builds a deterministic mix of output events (mostly position mismatches, as a worker emits;
a quarter of their decimals fresh values, the others repeating recent ones, about as on a simulated
day) and times, in CPU microseconds per event (best of --repeat, interleaved):

- fastavro raw: `fastavro.schemaless_writer` of mappings prepared beforehand with decimals already
  as bytes (the raw schema, as the codec writes) — the floor for any fastavro-based encoder;
- fastavro logical: `fastavro.schemaless_writer` of plain mappings with `Decimal` values and the
  logical schema (fastavro converts the decimals) — what a straightforward encoder would cost;
- encode via fastavro: the whole path from event object to framed bytes as it was before the
  compiled encoders, and as it still is for values they leave to it (field extraction, exact decimal
  conversion with its checks, strict fastavro write, header);
- encode_event: the whole path, through the event class's compiled encoder (`codec/encoder.py`).
"""

from __future__ import annotations

import argparse
import io
import random
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import fastavro

from streams.codec import Codec, EventCodec, default_schemas, input_codecs
from streams.codec.convert import to_mapping
from streams.core.events import EVENT_TYPES, Event, FeedHealth, PositionMismatch, SourceTransition
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
Prepared = list[tuple[Any, dict[str, Any]]]
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


def _recent(rng: random.Random, pool: list[Decimal], fresh: Callable[[random.Random], Decimal]) -> Decimal:
    """A fresh value one time in four (remembered), else a recent one: decimals repeat in events."""
    if not pool or rng.random() < 0.25:
        pool.append(fresh(rng))
        del pool[:-2000]
        return pool[-1]
    return rng.choice(pool)


def _maybe(rng: random.Random, d: Decimal) -> Decimal | None:
    return None if rng.random() < 0.2 else d


def make_events(n: int) -> list[Event]:
    """`n` output events: ~97% position mismatches with optional decimals, the rest transitions and health."""
    rng = random.Random(7)
    qtys: list[Decimal] = []
    money: list[Decimal] = []
    out: list[Event] = []
    for i in range(n):
        acc, sym, ts = f"ACC-{rng.randint(1, 5000)}", rng.choice(SYMBOLS), TS + i
        roll = rng.random()
        if roll < 0.97:
            ep3, re_ = _recent(rng, qtys, _qty), _recent(rng, qtys, _qty)
            m = [_maybe(rng, _recent(rng, money, _money)) for _ in range(6)]
            out.append(PositionMismatch(
                f"{i:032x}", rng.randint(1, 3), "prod", "EP3", acc, sym, rng.choice(["opened", "confirmed"]),
                rng.choice([None, "persistent", "propagation_race"]), _maybe(rng, ep3), _maybe(rng, re_),
                ep3 - re_, ts, _maybe(rng, ts + 1), None, "EP3", *m[:3], rng.randint(0, 5000), *m[3:]))
        elif roll < 0.99:
            out.append(SourceTransition(f"{i:032x}", 1, "prod", "EP3", ts, "RISK_ENGINE", "EP3", acc, "p0"))
        else:
            out.append(FeedHealth(f"{i:032x}", 1, "prod", "EP3", ts, "ep3.positions", rng.randint(0, 9999), "p0"))
    return out


def prepare_events(events: list[Event]) -> tuple[Prepared, Prepared]:
    """Per event (raw schema, wire mapping) and (logical schema, plain mapping), built outside the timing."""
    schemas = default_schemas()
    raw: Prepared = []
    logical: Prepared = []
    for ev in events:
        schema = schemas[EVENT_TYPES[ev.TYPE].__name__]
        plain = to_mapping(ev)
        raw.append((schema.raw, plain if schema.to_wire is None else schema.to_wire(plain, "")))
        logical.append((schema.parsed, plain))
    return raw, logical


def write_prepared(prepared: Prepared) -> int:
    for schema, value in prepared:
        bio = io.BytesIO()
        fastavro.schemaless_writer(bio, schema, value, strict=True)
        bio.getvalue()
    return len(prepared)


def encode_events(events: list[Event]) -> int:
    encode = EventCodec().encode_event
    for ev in events:
        encode(ev)
    return len(events)


def encode_reference(events: list[Event]) -> int:
    encode = EventCodec()._encode_reference  # the fastavro path, for comparison
    for ev in events:
        encode(ev)
    return len(events)


def best_cpu_us(fns: dict[str, Callable[[], int]], repeat: int) -> dict[str, float]:
    """Best CPU microseconds per item of each function, interleaved (CPU time is steadier on a shared box)."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.process_time()
            count = fn()
            best[name] = min(best[name], (time.process_time() - start) / count * 1e6)
    return best


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
    parser.add_argument("--events", type=int, default=50_000)
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
    print(f"ratio decode_many / baseline:  {many / base:.2f}  ({1e6 / many:.2f} µs/record, baseline {1e6 / base:.2f})")

    events = make_events(args.events)
    raw, logical = prepare_events(events)
    us = best_cpu_us({"raw": lambda: write_prepared(raw), "logical": lambda: write_prepared(logical),
                      "reference": lambda: encode_reference(events), "encode": lambda: encode_events(events)},
                     args.repeat)
    print(f"events:                        {args.events} mixed (CPU µs per event, best of {args.repeat})")
    print(f"fastavro.schemaless_writer:    {us['raw']:>10.2f} µs/event  (baseline: raw schema, wire values prebuilt)")
    for name, label in (("logical", "fastavro, logical decimals:"), ("reference", "encode via fastavro:"),
                        ("encode", "encode_event (whole path):")):
        print(f"{label:<31}{us[name]:>10.2f} µs/event  ({us[name] / us['raw']:.2f}x baseline cost)")


if __name__ == "__main__":
    main()
