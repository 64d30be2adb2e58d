"""Avro tapes: round trip, corrupt and truncated files named with their position, writer repair and
dedupe, the reorder window, and prune safety."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.cli import main
from streams.codec import Codec
from streams.core.records import Feed
from streams.tapes.avro import AvroTape, read_header
from streams.tapes.calendar import day_bounds, tape_path
from streams.tapes.errors import MalformedRecord, TapeError
from streams.tapes.model import TapeRecord
from streams.tapes.prune import prune
from streams.tapes.writer import TapeWriter, record_body
from tests.support.tapes import T


def sample() -> list[TapeRecord]:
    t = (T().instrument("XAU-PERP", cs="1", rate="0.05").mark("XAU-PERP", "11700.5")
         .ep3_snapshot("A1", seq=1, at=0, XAU_PERP="13").risk("A1", at=10, XAU_PERP="13")
         .ep3_snapshot("A2", seq=1, at=20).og("A1", at=30, avail="-5.25", im=None)
         .fill("A1", "XAU-PERP", "-0.5", at=40))
    for i in range(50):
        t.ep3_update("A1", seq=2 + i, at=100 + i, XAU_PERP=str(13 + i))
    return t.records()


def write(path: Path, records: list[TapeRecord], feed: Feed | None = None, **kw: object) -> Path:
    """Write the records of `feed` (default: the first record's) with offsets 0, 1, ..."""
    feed = feed or records[0].feed
    w = TapeWriter(path, feed, **kw)  # type: ignore[arg-type]
    for i, r in enumerate(x for x in records if x.feed is feed):
        w.append(r.ts_ms, feed.value, 0, i, record_body(feed, r.record))
    w.close()
    return path


def ep3_tape(tmp_path: Path, block_records: int = 20, codec: str = "deflate") -> Path:
    return write(tmp_path / "t.avro", sample(), Feed.EP3, block_records=block_records, codec=codec)


@pytest.mark.parametrize("codec", ["deflate", "null"])
def test_round_trip_every_feed(tmp_path: Path, codec: str) -> None:
    """What is written comes back equal (decimals by value), in order, with its block/record position."""
    records = sample()
    for feed in {r.feed for r in records}:
        path = write(tmp_path / f"{feed.value}.avro", records, feed, block_records=7, codec=codec)
        back = list(AvroTape(path))
        assert [(r.ts_ms, r.feed, r.record) for r in back] == [(r.ts_ms, r.feed, r.record)
                                                                for r in records if r.feed is feed]
    assert [r.where for r in AvroTape(tmp_path / "ep3.positions.avro")][7] == "block 1 record 0"


def test_fastavro_reads_our_files(tmp_path: Path) -> None:
    """The files are standard containers: fastavro reads them and sees Kafka coordinates."""
    import fastavro

    with ep3_tape(tmp_path).open("rb") as fh:
        entries = list(fastavro.reader(fh))
    assert len(entries) == 52 and entries[0]["topic"] == "ep3.positions" and entries[3]["offset"] == 3


def test_truncated_last_block_names_file_and_position(tmp_path: Path) -> None:
    """A file cut inside its last block raises MalformedRecord with the file, block index and byte."""
    path = ep3_tape(tmp_path)
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(MalformedRecord) as err:
        list(AvroTape(path))
    assert err.value.path == str(path) and err.value.where.startswith("block 2 (byte ")
    assert "truncated" in str(err.value)


def test_truncated_skip_bad_counts_the_cut_block(tmp_path: Path) -> None:
    """With skip_bad the good blocks are read and the cut block's declared records are counted."""
    path = ep3_tape(tmp_path)
    path.write_bytes(path.read_bytes()[:-30])
    tape = AvroTape(path, skip_bad=True)
    assert len(list(tape)) == 40
    assert (tape.skipped, tape.bad_blocks) == (12, 1)


def test_bad_sync_marker_and_resync(tmp_path: Path) -> None:
    """A damaged sync marker is named; skip_bad skips that block only and resumes at the next marker."""
    path = ep3_tape(tmp_path, codec="null")
    data = bytearray(path.read_bytes())
    sync = data[-16:]
    first = data.find(sync)  # the header's copy
    block0_end = data.find(sync, first + 16)
    data[block0_end + 3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(MalformedRecord, match=r"block 0 \(byte \d+\).*bad sync marker"):
        list(AvroTape(path))
    tape = AvroTape(path, skip_bad=True)
    assert len(list(tape)) == 32 and tape.skipped == 20


def test_corrupt_block_data(tmp_path: Path) -> None:
    """Garbage inside a compressed block is an error naming the block, never a silent drop.

    (Avro's deflate codec carries no checksum: a flip that still inflates to decodable entries can't be
    seen by any reader; a run of garbage, as from a torn page, is.)"""
    path = ep3_tape(tmp_path)
    data = bytearray(path.read_bytes())
    with path.open("rb") as fh:
        mid = read_header(fh).end + 40  # inside block 0's compressed data
    data[mid:mid + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    with pytest.raises(MalformedRecord, match=r"block 0 \(byte \d+\)"):
        list(AvroTape(path))


def test_contract_violation_names_the_record(tmp_path: Path) -> None:
    """Valid Avro that breaks the input contract names block and record; skip_bad skips just it."""
    path = tmp_path / "bad.avro"
    w = TapeWriter(path, Feed.EP3)
    good = {"account_id": "A1", "kind": "UPDATE", "seq": 1, "ts_ms": 5, "positions": []}
    enc = Codec(Feed.EP3).encode_value
    for i, kind in enumerate(["UPDATE", "REPLACE", "UPDATE"]):
        w.append(5 + i, "ep3.positions", 0, i, enc({**good, "kind": kind, "seq": i + 1})[10:])
    w.close()
    with pytest.raises(MalformedRecord, match=r"block 0 record 1 .*kind"):
        list(AvroTape(path))
    tape = AvroTape(path, skip_bad=True)
    assert [r.record.seq for r in tape] == [1, 3] and tape.skipped == 1  # type: ignore[union-attr]


def test_reorder_window_restores_ts_order(tmp_path: Path) -> None:
    """Interleaved partitions slightly out of ts order come out sorted, ties in file order."""
    path = tmp_path / "m.avro"
    w = TapeWriter(path, Feed.MARKS)
    body = record_body(Feed.MARKS, T().mark("BTC-PERP", "1").records()[0].record)
    for off, (ts, part) in enumerate([(100, 0), (103, 0), (101, 1), (102, 1), (103, 1), (104, 0)]):
        w.append(ts, "marks", part, off, body)
    w.close()
    tape = AvroTape(path)
    assert [r.ts_ms for r in tape] == [100, 101, 102, 103, 103, 104]
    assert [r.where for r in tape][3:5] == ["block 0 record 1", "block 0 record 4"]


def test_writer_repairs_torn_tail_and_dedupes(tmp_path: Path) -> None:
    """Reopening a file with a torn last block cuts it, logs how many records, and re-appending the
    same offsets writes each record exactly once."""
    records = [r for r in sample() if r.feed is Feed.EP3]
    path = ep3_tape(tmp_path)
    (tmp_path / "t.avro.offsets.json").unlink()  # as if the crash came before the first checkpoint
    path.write_bytes(path.read_bytes()[:-30])
    w = TapeWriter(path, Feed.EP3)
    assert w.cut == 12 and w.max_offsets == {("ep3.positions", 0): 39}
    added = [w.append(r.ts_ms, "ep3.positions", 0, i, record_body(Feed.EP3, r.record))
             for i, r in enumerate(records)]
    w.close()
    assert added.count(True) == 12 and w.duplicates == 40
    assert [r.record for r in AvroTape(path)] == [r.record for r in records]


def test_writer_uses_checkpoint_and_refuses_duplicates(tmp_path: Path) -> None:
    """After a clean close, reopening knows every offset from the checkpoint; duplicates are refused."""
    path = ep3_tape(tmp_path)
    w = TapeWriter(path, Feed.EP3)
    assert w.max_offsets == {("ep3.positions", 0): 51}
    assert not w.append(1, "ep3.positions", 0, 51, b"")
    w.close()
    assert len(list(AvroTape(path))) == 52


def test_writer_never_repairs_damage_in_the_middle(tmp_path: Path) -> None:
    """Damage followed by good blocks is not a torn tail: opening refuses and leaves the file alone."""
    path = ep3_tape(tmp_path, codec="null")
    (tmp_path / "t.avro.offsets.json").unlink()
    data = bytearray(path.read_bytes())
    sync = bytes(data[-16:])
    data[data.find(sync, data.find(sync) + 16) + 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(TapeError, match="not a torn tail"):
        TapeWriter(path, Feed.EP3)
    assert path.read_bytes() == bytes(data)


def test_cli_diff_reports_corrupt_file_exit_1(tmp_path: Path) -> None:
    """`tapes diff` on a truncated tape exits 1 naming file and block; --skip-bad exits 0 and counts."""
    path = ep3_tape(tmp_path)
    path.write_bytes(path.read_bytes()[:-30])
    res = CliRunner().invoke(main, ["tapes", "diff", str(path)])
    assert res.exit_code == 1 and str(path) in res.output and "block 2 (byte" in res.output
    res = CliRunner().invoke(main, ["tapes", "diff", "--skip-bad", "--json", str(path)])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["tapes"]["skipped_records"] == 12 and summary["records"] == 40


# --- prune ---------------------------------------------------------------------------------------

def make_days(root: Path, days: list[date]) -> None:
    for d in days:
        p = tape_path(root, d, "ep3.positions")
        p.parent.mkdir(parents=True)
        p.write_bytes(b"x")


DAYS = [date(2026, 3, d) for d in range(1, 11)]
NOW = day_bounds(date(2026, 3, 8))[0] + 1  # early in trading day 2026-03-08


def test_prune_keeps_current_and_n_previous(tmp_path: Path) -> None:
    """keep_days=2 on trading day 03-08 deletes 03-01..03-05, keeps 03-06..03-08 and later days."""
    make_days(tmp_path, DAYS)
    gone = prune(tmp_path, 2, NOW)
    assert [i.day.day for i in gone] == [1, 2, 3, 4, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == [d.isoformat() for d in DAYS[5:]]


def test_prune_zero_never_deletes_current_day(tmp_path: Path) -> None:
    """keep_days=0 deletes every past day but never the current one (nor a future one)."""
    make_days(tmp_path, DAYS)
    prune(tmp_path, 0, NOW)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2026-03-08", "2026-03-09", "2026-03-10"]


def test_prune_dry_run_deletes_nothing_and_strays_survive(tmp_path: Path) -> None:
    """--dry-run lists the plan and deletes nothing; non-day entries are never touched."""
    make_days(tmp_path, DAYS)
    (tmp_path / "keep-me").mkdir()
    (tmp_path / "2026-02-01.txt").write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    res = CliRunner().invoke(main, ["tapes", "prune", "--tapes-dir", str(tmp_path), "--keep-days", "0",
                                    "--dry-run"])
    assert res.exit_code == 0 and "would delete" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    prune(tmp_path, 0, NOW)
    assert {"keep-me", "2026-02-01.txt"} <= {p.name for p in tmp_path.iterdir()}


def test_prune_help_shows_env() -> None:
    """Every prune option names its DIVMON_ variable."""
    res = CliRunner().invoke(main, ["tapes", "prune", "--help"])
    assert "[env: DIVMON_TAPES_KEEP_DAYS]" in res.output and "[env: DIVMON_TAPES_DIR]" in res.output
