"""The C event ids and constructors (`IdDigest`, `SlotBuilder` in streams/core/_cevents.c) are the
Python ones of streams/core/events.py, in C: the same id for any parts (or the Python function's own
answer), an instance equal in every way to the dataclass's, and no reference leaked. The module is the
native build's, or one compiled for the test: these run in the pure pass too."""

from __future__ import annotations

import copy
import dataclasses
import gc
import hashlib
import pickle
import sys
import weakref
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import _native
from streams.core import events, state
from streams.core.events import (
    FeedHealth,
    PositionMismatch,
    SourceTransition,
    Unvaluable,
    WitnessCheck,
    _Event,
    fast_constructor,
    py_episode_id,
    py_event_id,
)
from streams.core.records import Feed
from tests.support import cnative

ENGINE_EVENTS = (PositionMismatch, Unvaluable, WitnessCheck, SourceTransition, FeedHealth)


@pytest.fixture(scope="module")
def c(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return cnative.module("_cevents", tmp_path_factory.mktemp("cevents"))


def blake(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


# --- ids -------------------------------------------------------------------------------------------

texts = st.text() | st.text(alphabet="ab\x1fé€😀", min_size=100, max_size=700)
ints = st.integers() | st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from(
    [0, -1, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64])


@settings(max_examples=300)
@given(st.binary(max_size=600) | st.integers(0, 5).map(lambda k: b"x" * (128 * k)))
def test_blake2b_is_hashlibs(c: ModuleType, data: bytes) -> None:
    assert c.blake2b_128_hex(data) == hashlib.blake2b(data, digest_size=16).hexdigest()


@pytest.mark.parametrize("n", [0, 1, 111, 127, 128, 129, 255, 256, 257, 384, 1000])
def test_blake2b_on_block_edges(c: ModuleType, n: int) -> None:
    data = bytes(range(256)) * 4
    assert c.blake2b_128_hex(data[:n]) == hashlib.blake2b(data[:n], digest_size=16).hexdigest()


@settings(max_examples=300)
@given(texts, texts, texts, texts, ints)
def test_episode_id_is_the_python_twins(c: ModuleType, env: str, kind: str, account: str, symbol: str,
                                        first_seen: int) -> None:
    fast = c.IdDigest(py_episode_id, 5)
    expected = blake(f"{env}\x1f{kind}\x1f{account}\x1f{symbol}\x1f{first_seen}")
    assert fast(env, kind, account, symbol, first_seen) == py_episode_id(env, kind, account, symbol,
                                                                          first_seen) == expected


@pytest.mark.parametrize("size", [128, 256, 384])
def test_episode_id_on_texts_of_whole_blocks(c: ModuleType, size: int) -> None:
    """Texts of exactly 1, 2, 3 blocks: the last full block is the final one, compressed once."""
    fixed = len("demo\x1fk\x1fA\x1f\x1f") + len("12345")
    parts = ("demo", "k", "A", "é" * ((size - fixed) // 2) + "s" * ((size - fixed) % 2), 12345)
    assert len("\x1f".join(map(str, parts)).encode()) == size
    assert c.IdDigest(py_episode_id, 5)(*parts) == py_episode_id(*parts) == blake("\x1f".join(map(str, parts)))


parts = st.lists(texts | ints | st.none() | st.decimals(allow_nan=False) | st.booleans()
                 | st.sampled_from([Feed.MARKS, Feed.EP3]), max_size=7)


@settings(max_examples=300)
@given(parts)
def test_event_id_is_the_python_twins(c: ModuleType, ps: list[Any]) -> None:
    """Any parts: written in C (str, int, None) or handed to the twin (Decimal, bool, str subclass)."""
    assert c.IdDigest(py_event_id)(*ps) == py_event_id(*ps)


@pytest.mark.parametrize("args", [
    ("demo", "k", "A", "S", True),  # a bool is no plain int
    ("demo", "k", "A", "S", 2**64),  # beyond 64 bits
    (Feed.MARKS, "k", "A", "S", 1),  # a str subclass
    ("demo", "k", "A", None, 1),  # None is no str: the twin's general path
    ("demo", "k", "A", "S", Decimal("1.5")),
], ids=["bool", "huge-int", "str-subclass", "none", "decimal"])
def test_other_parts_go_to_the_twin(c: ModuleType, args: tuple[Any, ...]) -> None:
    seen: list[tuple[Any, ...]] = []

    def twin(*a: Any) -> str:
        seen.append(a)
        return py_episode_id(*a)

    if args[3] is None:  # None is written in C (as event_id does), no fallback needed
        assert c.IdDigest(twin, 5)(*args) == py_event_id(*args) and not seen
    else:
        assert c.IdDigest(twin, 5)(*args) == py_event_id(*args) and seen == [args]


def test_calls_off_the_fast_path_are_the_twins(c: ModuleType) -> None:
    """Keywords, the wrong count, a lone surrogate: the twin's answer or its own error."""
    fast = c.IdDigest(py_episode_id, 5)
    kw = {"env": "demo", "kind": "k", "account_id": "A", "symbol": "S", "first_seen": 7}
    assert fast(**kw) == py_episode_id(**kw)
    with pytest.raises(TypeError, match="py_episode_id"):
        fast("demo", "k", "A", "S")
    with pytest.raises(UnicodeEncodeError):
        fast("demo", "k", "\ud800", "S", 1)
    assert c.IdDigest(py_event_id)() == py_event_id() == blake("")
    with pytest.raises(TypeError):
        c.IdDigest(42)


def test_ids_leak_no_reference(c: ModuleType) -> None:
    fast, slow_part = c.IdDigest(py_event_id), Decimal("2.5")
    text, huge, uni = "acct-" + "x" * 200, 2**80, "é" * 10
    before = [sys.getrefcount(x) for x in (text, huge, uni, slow_part)]
    for _ in range(2000):
        fast(text, huge, uni, slow_part, 12)
        fast(text, uni, 12, None)
    gc.collect()
    assert [sys.getrefcount(x) for x in (text, huge, uni, slow_part)] == before


# --- constructors ----------------------------------------------------------------------------------

def field_values(cls: type) -> st.SearchStrategy[list[Any]]:
    """Values of the types a field holds (None where it may), per field."""
    out = []
    for f in dataclasses.fields(cls):
        t = str(f.type)
        if "tuple" in t:
            s: st.SearchStrategy[Any] = st.tuples(st.text(max_size=3), st.decimals(allow_nan=False))
        elif "Decimal" in t:
            s = st.decimals(allow_nan=False, allow_infinity=False)
        elif t.startswith("int"):
            s = st.integers()
        elif t == "bool":
            s = st.booleans()
        else:
            s = st.text(max_size=8)
        out.append(s | st.none() if "None" in t else s)
    return st.tuples(*out).map(list)


@pytest.mark.parametrize("cls", ENGINE_EVENTS, ids=lambda c: c.__name__)
def test_slot_builder_makes_what_the_dataclass_makes(c: ModuleType, cls: type) -> None:
    build = c.SlotBuilder(cls, tuple(f.name for f in dataclasses.fields(cls)))
    assert build.__name__ == f"new_{cls.__name__}" and build.cls is cls

    @settings(max_examples=60)
    @given(field_values(cls))
    def check(values: list[Any]) -> None:
        made, ref = build(*values), cls(*values)
        assert type(made) is cls
        assert made == ref and hash(made) == hash(ref)
        assert made.to_dict() == ref.to_dict()
        assert [getattr(made, f.name) is v for f, v in zip(dataclasses.fields(made), values, strict=True)] \
            == [True] * len(values)
        assert dataclasses.asdict(made) == dataclasses.asdict(ref)
        assert pickle.loads(pickle.dumps(made)) == ref
        assert copy.copy(made) == ref and dataclasses.replace(made) == ref
        with pytest.raises(dataclasses.FrozenInstanceError):
            made.version = 99
        assert repr(made) == repr(ref)

    check()


def test_slot_builder_off_the_fast_path_is_the_class(c: ModuleType) -> None:
    """The wrong count or keywords: the class's own constructor, whose error names the class."""
    build = c.SlotBuilder(FeedHealth, tuple(f.name for f in dataclasses.fields(FeedHealth)))
    values = ["id", 1, "demo", "EP3", 60_000, "marks", 3, "s"]
    with pytest.raises(TypeError, match="FeedHealth"):
        build(*values[:-1])
    with pytest.raises(TypeError, match="FeedHealth"):
        build(*values, "extra")
    names = [f.name for f in dataclasses.fields(FeedHealth)]
    assert build(**dict(zip(names, values, strict=True))) == FeedHealth(*values)


def test_slot_builder_leaves_out_of_the_cyclic_gc_only_what_cannot_be_in_a_cycle(c: ModuleType) -> None:
    """An event of atomic fields (text, numbers, Decimals, None: all the engine makes) is untracked,
    so the events a worker keeps until their checkpoint cost the collector nothing; one holding a
    tracked object stays tracked, and a cycle through it is still collected."""
    build = c.SlotBuilder(FeedHealth, tuple(f.name for f in dataclasses.fields(FeedHealth)))
    values: list[Any] = ["id", 1, "demo", "EP3", 60_000, "marks", Decimal(3), "s"]
    assert not gc.is_tracked(build(*values))

    class Box:
        event: Any = None

    box = Box()
    gone = weakref.ref(box)
    event = build(*values[:-1], [box])  # a list in a field: event -> list -> box -> event
    box.event = event
    assert gc.is_tracked(event)
    del event, box
    gc.collect()
    assert gone() is None


def test_slot_builder_leaks_no_reference(c: ModuleType) -> None:
    names = tuple(f.name for f in dataclasses.fields(PositionMismatch))
    build = c.SlotBuilder(PositionMismatch, names)
    values = [f"v{i}-{'x' * i}" for i in range(len(names))]  # each its own object
    before = [sys.getrefcount(v) for v in values]
    held = [build(*values) for _ in range(1000)]
    assert sys.getrefcount(values[0]) == before[0] + 1000
    del held
    for _ in range(1000):
        build(*values)
    gc.collect()
    assert [sys.getrefcount(v) for v in values] == before


@dataclasses.dataclass(frozen=True, slots=True)
class _Two(_Event):
    TYPE: ClassVar[str] = "two"
    a: str
    b: str


@dataclasses.dataclass(frozen=True, slots=True, weakref_slot=True)
class _WithWeakref(_Event):
    TYPE: ClassVar[str] = "weakref"
    a: str


@dataclasses.dataclass(frozen=True)
class _NoSlots(_Event):
    TYPE: ClassVar[str] = "no_slots"
    a: str


class _OwnNew(_Event):
    __slots__ = ("a",)

    def __new__(cls, *args: Any) -> _OwnNew:
        return super().__new__(cls)


class _Sub(_Two):
    __slots__ = ("c",)


@pytest.mark.parametrize(("cls", "names"), [
    (_Two, ("a",)),  # a slot left unfilled
    (_Two, ("a", "a")),  # named twice
    (_Two, ("a", "TYPE")),  # not a slot
    (_Two, ("a", 1)),  # not a name
    (_WithWeakref, ("a",)),
    (_NoSlots, ("a",)),
    (_OwnNew, ("a",)),
    (_Sub, ("a", "b", "c")),  # slots of a base class
    (slice, ("start", "stop", "step")),  # read-only members of a static type
    (42, ("a",)),
], ids=["unfilled", "twice", "classvar", "not-str", "weakref", "no-slots", "own-new", "inherited", "slice",
        "not-a-class"])
def test_slot_builder_refuses_layouts_it_cannot_fill(c: ModuleType, cls: Any, names: tuple[Any, ...]) -> None:
    with pytest.raises(TypeError):
        c.SlotBuilder(cls, names)
    assert c.SlotBuilder(_Two, ("b", "a"))("x", "y") == _Two("y", "x")  # any order of the class's own slots


# --- set checksums ----------------------------------------------------------------------------------

_symbols = st.sampled_from(["BTC-PERP", "ETH-PERP", "EUR-PERP", "AVAX-PERP", "é€😀"])
_qtys = st.decimals(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [Decimal(0), Decimal("0.000"), Decimal("-0"), Decimal(62), Decimal("62.0"), Decimal("-50.5"), Decimal("1e30")])


def _reference(positions: dict[str, Decimal]) -> int:
    """The set checksum from its definition (the Python twin's position hash, summed mod 2**64)."""
    return sum(state.position_hash(s, q) for s, q in positions.items() if q) % 2**64


@settings(max_examples=300)
@given(st.dictionaries(_symbols, _qtys, max_size=5))
def test_set_checksum_is_the_python_twins(c: ModuleType, positions: dict[str, Decimal]) -> None:
    """With every symbol keyed, the C checksum is the definition's; zero quantities count for nothing."""
    for s in positions:
        state.position_hash(s, Decimal(1))  # makes the symbol's key
    assert c.set_checksum(positions, state._SYMBOL_KEYS) == _reference(positions)
    assert state.checksum(positions) == _reference(positions)  # what the sweep runs, in this build


def test_set_checksum_leaves_to_the_twin_what_it_cannot_key(c: ModuleType) -> None:
    """A symbol without a key, or a key that isn't an int of 64 bits, is answered None (the twin then
    makes the key); a flat position needs no key; a quantity that can't be hashed raises its own error."""
    one = {"NEW-PERP": Decimal(1)}
    assert c.set_checksum(one, {}) is None
    assert c.set_checksum({"NEW-PERP": Decimal(0)}, {}) == 0
    for bad in (-1, 2**64, "7", 7.0, True):
        assert c.set_checksum(one, {"NEW-PERP": bad}) is None
    with pytest.raises(TypeError, match="signaling NaN"):
        c.set_checksum({"X": Decimal("sNaN")}, {"X": 1})
    with pytest.raises(TypeError, match="set_checksum"):
        c.set_checksum([], {})
    symbols = list(state._SYMBOL_KEYS)
    q = Decimal(3)
    before = [sys.getrefcount(x) for x in (q, *symbols)]
    for _ in range(1000):
        c.set_checksum(dict.fromkeys(symbols, q), state._SYMBOL_KEYS)
    assert [sys.getrefcount(x) for x in (q, *symbols)] == before


# --- what events.py runs -------------------------------------------------------------------------

def test_events_runs_the_c_twins_exactly_when_the_build_runs() -> None:
    compiled = _native.engine_build() == "compiled"
    for name in ("new_position_mismatch", "new_unvaluable", "new_witness_check", "new_source_transition",
                 "new_feed_health"):
        fn = getattr(events, name)
        assert (type(fn).__name__ == "SlotBuilder") is compiled, name
    assert (events.event_id is py_event_id) is not compiled
    assert (events.episode_id is py_episode_id) is not compiled
    assert (state._SET_CHECKSUM is not None) is compiled


def test_constructor_falls_back_when_c_refuses(c: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "_C", c)
    assert type(events.constructor(PositionMismatch)).__name__ == "SlotBuilder"
    assert events.constructor(_NoSlots) is _NoSlots  # the Python check refuses first

    class Refusing:
        @staticmethod
        def SlotBuilder(klass: type, names: tuple[str, ...]) -> Any:
            raise TypeError("refused")

    monkeypatch.setattr(events, "_C", Refusing)
    made = events.constructor(_Two)
    assert made.__name__ == "new__Two" and made("x", "y") == _Two("x", "y")  # the Python fast_constructor
    assert type(made) is type(fast_constructor(_Two))



ASAN_PROBE = """
import dataclasses, hashlib, random, sys
sys.path.insert(0, sys.argv[2])
from tests.support import cnative
from decimal import Decimal
from streams.core.events import PositionMismatch, py_event_id
from streams.core import state
c = cnative.load(cnative.Path(sys.argv[1]))
rng = random.Random(7)
ids = c.IdDigest(py_event_id)
build = c.SlotBuilder(PositionMismatch, tuple(f.name for f in dataclasses.fields(PositionMismatch)))
checked = 0
for n in range(int(sys.argv[3])):
    data = bytes(rng.randrange(256) for _ in range(n % 700))
    assert c.blake2b_128_hex(data) == hashlib.blake2b(data, digest_size=16).hexdigest()
    parts = ["é" * rng.randrange(80), "x" * rng.randrange(300), rng.randrange(-2**63, 2**63), None]
    assert ids(*parts) == py_event_id(*parts)
    values = [str(i) * rng.randrange(3) for i in range(22)]
    assert build(*values) == PositionMismatch(*values)
    book = {f"S{rng.randrange(n % 40 + 1)}": Decimal(rng.randrange(-9, 9)) for _ in range(n % 40)}
    want = state.checksum(book)  # DIVMON_PURE: the Python twin, which also makes the keys
    assert c.set_checksum(book, state._SYMBOL_KEYS) == want
    checked += 1
print(checked)
"""


@pytest.mark.slow
def test_the_c_ids_and_constructors_stay_in_bounds_under_address_sanitizer(tmp_path: Path) -> None:
    """Compiled with -fsanitize=address, ids over every length up to several blocks, thousands of
    events and set checksums: any access outside a buffer or an instance would abort the process."""
    run = cnative.run_under_asan("_cevents", tmp_path, ASAN_PROBE, "1500")
    assert run.returncode == 0, run.stderr[-4000:]
    assert int(run.stdout.split()[-1]) == 1500
