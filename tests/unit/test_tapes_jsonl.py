"""JSON Lines tape reader: the typed (msgspec) fast path reads exactly what the json path reads.

Every comparison reads the same file twice, `typed=True` (fast path, json path for what it refuses)
and `typed=False` (json path only), and wants the same records (compared by repr, so types and
decimal exponents count), the same positions, the same error message or the same skipped count.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.tapes import jsonl
from streams.tapes.errors import MalformedRecord
from streams.tapes.jsonl import JsonlTape
from streams.tapes.model import topic_map

BASE = 1_780_000_020_000

VALID: dict[str, dict[str, Any]] = {
    "ep3.positions": {"account_id": "A1", "kind": "SNAPSHOT", "seq": 1, "ts_ms": BASE,
                      "positions": [{"symbol": "BTC-PERP", "qty": "2"}, {"symbol": "ETH-PERP", "qty": "-0.50"}]},
    "risk.snapshots": {"account_id": "A1", "published_ts_ms": BASE,
                       "positions": [{"symbol": "BTC-PERP", "qty": "2", "im": "6000.000"},
                                     {"symbol": "ETH-PERP", "qty": "-1.5"},
                                     {"symbol": "SOL-PERP", "qty": "0", "im": None}],
                       "im_total": "6100.5", "open_orders_margin": "400", "equity": "100000", "avail": "93499.500"},
    "og.margin": {"account_id": "A1", "ts_ms": BASE, "positions_source": "RISK_ENGINE", "im_positions": "6100.5",
                  "open_orders_margin": "400", "equity": "100000", "avail": "93499.5"},
    "fills": {"fill_id": "F1", "account_id": "A1", "symbol": "BTC-PERP", "qty": "-0.013", "price": "60000.0",
              "ts_ms": BASE},
    "marks": {"symbol": "BTC-PERP", "price": "60000.0", "ts_ms": BASE},
    "instruments": {"symbol": "BTC-PERP", "contract_size": "1", "im_rate": "0.05"},
}

# what a field may be instead of its valid value: each is either accepted by both paths or refused
# with the same message
ODD_VALUES: list[Any] = [None, "", " ", 1, 0, -3, 1.5, 1e3, True, False, 2**70, "NaN", "-Infinity", "Inf", "sNaN",
                         "1e5", "-0", " 1 ", "1_000", "abc", "0x10", [], {}, ["BTC-PERP"], "SNAPSHOT", "EP3",
                         "BTC-€", "\u2028"]


def envelope(topic: str, value: Any, ts: Any = BASE, **extra: Any) -> dict[str, Any]:
    return {"topic": topic, "ts_ms": ts, "value": value, **extra}


def line(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def read(path: Path, typed: bool, **kw: Any) -> tuple[str, str, int]:
    tape = JsonlTape(path, typed=typed, topics=topic_map(kw.pop("topics", None)), **kw)
    try:
        got = [(r.ts_ms, r.feed, r.record, str(r.where)) for r in tape]
    except MalformedRecord as exc:
        return "error", str(exc), tape.skipped
    except Exception as exc:  # whatever it is, both paths must raise the same
        return type(exc).__name__, str(exc), tape.skipped
    return "ok", repr(got), tape.skipped


def same_both_ways(path: Path, text: str, **kw: Any) -> tuple[str, str, int]:
    path.write_text(text, encoding="utf-8")
    fast, slow = read(path, True, **kw), read(path, False, **kw)
    assert fast == slow, text
    return fast


def field_variants(value: dict[str, Any]) -> list[dict[str, Any]]:
    """The value with each field (and each field of its first position) missing or odd."""
    out = []
    for name in value:
        out.append({k: v for k, v in value.items() if k != name})
        out.extend({**value, name: odd} for odd in ODD_VALUES)
    if value.get("positions"):
        first = value["positions"][0]
        for name in first:
            out.append({**value, "positions": [{k: v for k, v in first.items() if k != name}, *value["positions"][1:]]})
            out.extend({**value, "positions": [{**first, name: odd}, *value["positions"][1:]]} for odd in ODD_VALUES)
        out.append({**value, "positions": [first, first]})  # a symbol listed twice
        out.append({**value, "positions": [*value["positions"], {**first, "qty": "7"}]})
        out.append({**value, "positions": []})
        out.append({**value, "positions": {"symbol": "BTC-PERP", "qty": "1"}})
        out.append({**value, "positions": ["BTC-PERP"]})
    return out


RAW_LINES = [
    "", "   ", "\t", "not json", "{oops", "[]", "null", "1", '"x"', "{}", '{"topic":"marks"}',
    '{"topic":"marks","ts_ms":1780000020000}', '{"ts_ms":1780000020000,"value":{}}',
    '{"topic":"marks","ts_ms":1780000020000,"value":{"symbol":"X","price":"1","ts_ms":1780000020000}} trailing',
    '  {"topic":"marks","ts_ms":1780000020000,"value":{"symbol":"X","price":"1","ts_ms":1780000020000}}  ',
    '{"topic":"marks","ts_ms":1780000020000,"value":{"symbol":"X","price":"1","ts_ms":1780000020000}}\r',
    '\ufeff{"topic":"marks","ts_ms":1780000020000,"value":{"symbol":"X","price":"1","ts_ms":1780000020000}}',
    '{"topic":"marks","ts_ms":1780000020000,"value":{"symbol":"X","price":"1","ts_ms":1780000020000},"x":NaN}',
    '{"topic":"marks","ts_ms":1780000020000,"value":{"symbol":"X","price":"1","ts_ms":1780000020000,"x":Infinity}}',
    '{"topic":"marks","ts_ms":1780000020000,"value":{"symbol":"\\ud800","price":"1","ts_ms":1780000020000}}',
    '{"topic":"marks","ts_ms":1780000020000,"value":{"symbol":"\\ud83d\\ude00","price":"1","ts_ms":1780000020000}}',
    '{"topic":"marks","ts_ms":1780000020000,"value":{"\\u0073ymbol":"X","price":"1","ts_ms":1780000020000}}',
    '{"topic":"marks","ts_ms":1780000020000,"value":{"symbol":"X\tY","price":"1","ts_ms":1780000020000}}',
    '{"topic":"marks","ts_ms":1780000020000,"value":{"symbol":"X","price":"1","ts_ms":1780000020000,"symbol":"Y"}}',
    '{"topic":"marks","ts_ms":1780000020000,"value":{"symbol":1,"price":"1","ts_ms":1780000020000,"symbol":"Y"}}',
    '{"topic":"marks","ts_ms":1780000020000,"value":{"symbol":"Y","price":"1","ts_ms":1780000020000,"symbol":1}}',
    '{"topic":"fills","ts_ms":1780000020000,"value":{"symbol":"X","price":"1","ts_ms":1780000020000},"topic":"marks"}',
    '{"topic":"marks","ts_ms":1780000020000,"value":{"symbol":"X","price":"1","ts_ms":1780000020000},"topic":"marks"}',
    '{"topic":"marks","ts_ms":1780000020000,"value":{"symbol":"X","price":"1","ts_ms":1780000020000},"ts_ms":1}',
    '{"value":{"symbol":"X","price":"1","ts_ms":1780000020000},"ts_ms":1780000020000,"topic":"marks"}',
    '{"topic":"marks","ts_ms":1780000020000,"value":{"symbol":"X","price":"1","ts_ms":1780000020000,'
    '"deep":[[[[[[[[[[{"a":[1,2.5,-0e-0,true,false,null,"\\u00e9\\n"]}]]]]]]]]]]}}',
    '{"topic":"marks","ts_ms":1780000020000,"value":{"symbol":"X","price":"1","ts_ms":1780000020000,"n":01}}',
    '{"topic":"marks","ts_ms":1780000020000,"value":{"symbol":"X","price":"1","ts_ms":1780000020000,"n":1.}}',
    '{"topic":"marks","ts_ms":1780000020000,"value":{"symbol":"X","price":"1","ts_ms":1780000020000,"n":"' + "9" * 5000
    + '"}}',
    '{"topic":"marks","ts_ms":' + "9" * 5000 + ',"value":{"symbol":"X","price":"1","ts_ms":1780000020000}}',
    '{"topic":"marks","ts_ms":1780000020000,"value":' + "[" * 3000 + "]" * 3000 + "}",
    '{"topic":["marks"],"ts_ms":1780000020000,"value":{}}', '{"topic":5,"ts_ms":1780000020000,"value":{}}',
]


def corpus() -> list[str]:
    lines = list(RAW_LINES)
    for topic, value in VALID.items():
        lines.append(line(envelope(topic, value)))
        lines.extend(line(envelope(topic, v)) for v in field_variants(value))
        lines.extend(line(envelope(topic, value, ts=odd)) for odd in ODD_VALUES)
        lines.extend(line(e) for e in [envelope(topic, None), envelope(topic, [value]), envelope(topic, "x"),
                                       envelope(topic.upper(), value), envelope(topic, value, extra=[1, {"a": None}]),
                                       {"topic": topic, "ts_ms": BASE}])
    return lines


CORPUS = corpus()


@pytest.mark.parametrize("i", range(0, len(CORPUS), 100))
def test_each_line_reads_the_same_both_ways(tmp_path: Path, i: int) -> None:
    """Line by line, after a good line: same records, or same MalformedRecord naming file and line 2."""
    good = line(envelope("marks", VALID["marks"]))
    for text in CORPUS[i:i + 100]:
        kind, message, _ = same_both_ways(tmp_path / "t.jsonl", f"{good}\n{text}\n")
        if kind == "error":
            assert "t.jsonl:line 2: " in message


def test_whole_corpus_with_skip_bad_reads_and_counts_the_same(tmp_path: Path) -> None:
    """With skip_bad (and sort, as odd ts_ms values are in it), the same records come through in the
    same order and the same number of lines is skipped."""
    text = "".join(x + "\n" for x in CORPUS if "[[[[[[[[[[[[" not in x)  # too deep: raises, skip_bad or not
    kind, _, skipped = same_both_ways(tmp_path / "t.jsonl", text, skip_bad=True, sort=True)
    assert kind == "ok" and skipped > len(CORPUS) // 2


def test_ts_order_and_sort_are_the_same_both_ways(tmp_path: Path) -> None:
    """A ts_ms that goes back is refused naming the same line; with sort, the same order comes out."""
    later = line(envelope("marks", {**VALID["marks"], "ts_ms": BASE + 5}, ts=BASE + 5))
    earlier = line(envelope("fills", VALID["fills"]))
    kind, message, _ = same_both_ways(tmp_path / "t.jsonl", f"{later}\n\n{earlier}\n")
    assert (kind, message) == ("error", f"{tmp_path / 't.jsonl'}:line 3: ts_ms {BASE} goes back before {BASE + 5}: "
                                        "tapes must be in ts_ms order (use --sort for a small hand-written tape)")
    assert same_both_ways(tmp_path / "t.jsonl", f"{later}\n\n{earlier}\n", sort=True)[0] == "ok"


def test_configured_topic_names_take_the_fast_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A configured topic name reads like the default one, typed, while the default name still works."""
    calls = count_json_path(monkeypatch)
    text = "".join(line(envelope(t, VALID["marks"])) + "\n" for t in ("px.marks", "marks"))
    assert same_both_ways(tmp_path / "t.jsonl", text, topics={"marks": "px.marks"})[0] == "ok"
    assert calls == [2]  # only the json-only read went the json way


def count_json_path(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    parse: Callable[..., Any] = JsonlTape._parse

    def counting(self: JsonlTape, text: str) -> Any:
        calls[0] += 1
        return parse(self, text)

    monkeypatch.setattr(JsonlTape, "_parse", counting)
    return calls


def test_valid_lines_take_the_fast_path_and_odd_ones_the_json_path(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Valid lines of every feed never reach the json path; an int quantity does, and is accepted."""
    calls = count_json_path(monkeypatch)
    path = tmp_path / "t.jsonl"
    path.write_text("".join(line(envelope(t, v)) + "\n" for t, v in VALID.items()))
    assert len(list(JsonlTape(path))) == len(VALID)
    assert calls == [0]
    path.write_text(line(envelope("fills", {**VALID["fills"], "qty": 2})) + "\n")
    [rec] = JsonlTape(path)
    assert (calls, str(rec.record.qty)) == ([1], "2")  # type: ignore[union-attr]


SNIPPETS = ['"', "\\", ",", ":", "{", "}", "[", "]", "0", "1", "-", ".", "e", " ", "\t", "null", "true", "NaN",
            "\\u0000", "\\ud800", '"x"', '""', "\u00e9", "\x00", "\n", "\r", "9" * 30, '"qty":1.5,', '"im":null,',
            '"kind":"UPDATE",']


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(topic=st.sampled_from(sorted(VALID)), at=st.integers(0, 10_000), cut=st.integers(0, 3),
       snippet=st.sampled_from(SNIPPETS))
def test_mutated_lines_read_the_same_both_ways(tmp_path: Path, topic: str, at: int, cut: int, snippet: str) -> None:
    """A valid line with a snippet spliced in (replacing 0-3 characters) reads the same both ways."""
    text = line(envelope(topic, VALID[topic]))
    at %= len(text)
    same_both_ways(tmp_path / "t.jsonl", text[:at] + snippet + text[at + cut:] + "\n")


DECIMAL_TEXT = st.one_of(st.decimals(allow_nan=True, allow_infinity=True).map(str), st.text(max_size=6),
                         st.integers(-10**20, 10**20), st.none())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(symbols=st.lists(st.text(max_size=4), max_size=4), qty=DECIMAL_TEXT, im=DECIMAL_TEXT, avail=DECIMAL_TEXT)
def test_generated_risk_values_read_the_same_both_ways(tmp_path: Path, symbols: list[str], qty: Any, im: Any,
                                                       avail: Any) -> None:
    """Arbitrary symbols and decimal texts in a risk snapshot read the same both ways."""
    value = {**VALID["risk.snapshots"], "avail": avail, "im_total": im,
             "positions": [{"symbol": s, "qty": qty, "im": im} for s in symbols]}
    same_both_ways(tmp_path / "t.jsonl", line(envelope("risk.snapshots", value)) + "\n")


# The reader reads bytes (_blocks) and decodes only what isn't ASCII. It must split and decode lines
# exactly as text-mode reading did (UTF-8, universal newlines), wherever its blocks happen to end.
PIECES = [b"a", b"{}", b" ", b"\n", b"\r", b"\r\n", b"\n\r", b"\xe2\x82\xac", b"\xe2\x80\xa8", b"\xc2\x85", b"\x1c",
          b"\x0b", b"\x0c", b"\xef\xbb\xbf", b"\x00", b"\t"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(st.sampled_from(PIECES), max_size=40), block=st.sampled_from([1, 2, 3, 5, 8, 1 << 18]))
def test_blocks_split_lines_as_text_mode_reading_did(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     pieces: list[bytes], block: int) -> None:
    """Any UTF-8 text, cut into blocks of any size, gives the lines text mode gives, as bytes when ASCII."""
    monkeypatch.setattr(jsonl, "_BLOCK", block)
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"".join(pieces))
    with path.open("rb") as fh:
        got = [x for lines in jsonl._blocks(fh) for x in lines]
    with path.open(encoding="utf-8") as fh:
        assert [jsonl._text(x) for x in got] == list(fh)
    assert all(type(x) is bytes for x in got if jsonl._text(x).isascii())


BAD_UTF8 = [
    (b'"BTC-PERP"', b'"BTC\xff"'),          # in a string the fast path reads
    (b'"price"', b'"\xc3\xa9":"\xff","price"'),  # in a field the fast path skips (msgspec doesn't check it)
    (b'"BTC-PERP"', b'"\xed\xa0\x80"'),   # an encoded surrogate
    (b'"BTC-PERP"', b'"\xc0\xaf"'),       # overlong
    (b'"60000.0"', b'"6\xe2\x82"'),       # truncated
]


@pytest.mark.parametrize(("old", "new"), BAD_UTF8)
@pytest.mark.parametrize("typed", [True, False])
def test_a_line_that_is_not_utf8_is_one_bad_record(tmp_path: Path, old: bytes, new: bytes, typed: bool) -> None:
    """Invalid UTF-8 is a MalformedRecord naming the line, or one skipped line with skip_bad; the lines
    around it read as usual (text-mode reading raised UnicodeDecodeError for the whole file instead)."""
    good = line(envelope("marks", VALID["marks"])).encode()
    path = tmp_path / "t.jsonl"
    path.write_bytes(good + b"\n" + good.replace(old, new, 1) + b"\n" + good + b"\n" + good.replace(old, new, 1))
    tape = JsonlTape(path, typed=typed)
    with pytest.raises(MalformedRecord, match=r"t\.jsonl:line 2: invalid UTF-8: .* at byte \d+ of the line$"):
        list(tape)
    tape = JsonlTape(path, typed=typed, skip_bad=True)
    assert ([str(r.where) for r in tape], tape.skipped) == (["line 1", "line 3"], 2)


def test_utf8_error_names_the_byte_in_the_line(tmp_path: Path) -> None:
    """The message says what was wrong and where in the line (1-based), as a column in the line's bytes."""
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'\n{"a":"\xe2\x82\xac\xff"}\n')
    with pytest.raises(MalformedRecord) as err:
        list(JsonlTape(path))
    assert str(err.value) == f"{path}:line 2: invalid UTF-8: invalid start byte at byte 10 of the line"


def test_non_ascii_and_carriage_returns_read_the_same_both_ways(tmp_path: Path) -> None:
    """Lines with non-ASCII text, CRLF endings or a bare CR (which ends a line) read the same both ways."""
    text = line(envelope("marks", {**VALID["marks"], "symbol": "BTC-€"}))
    for joined in (f"{text}\r\n{text}\r\n", f"{text}\r{text}", f"{text}\n\r\n{text}\r", f"{text[:40]}\r{text[40:]}\n",
                   f"{text}\n{text[:-1]}, \"x\": \"\u2028\"}}\n", f"\u00e9{text}\n"):
        same_both_ways(tmp_path / "t.jsonl", joined, skip_bad=True)
        same_both_ways(tmp_path / "t.jsonl", joined)
