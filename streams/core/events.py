"""Output events of DESIGN section 3, as frozen dataclasses.

Every event carries a deterministic `event_id` (a hash of what identifies the episode, never of
wall-clock time or process identity), `env` and the `positions_source` in force. Events with a
lifecycle (mismatch, flip, unvaluable, witness anomaly) are emitted again, with the *same* event_id
and a higher `version`, each time their state changes; sinks keep the highest version per id
(ClickHouse ReplacingMergeTree), so replays and restarts never duplicate a row.

`None` means *absent* (or unknown) and is printed as JSON null; it is never a zero.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from decimal import Context, Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from streams import _native

MismatchClass = Literal["propagation_race", "persistent", "never_in_cache", "phantom"]
Fresher = Literal["EP3", "RE", "UNKNOWN"]
State = Literal["opened", "confirmed", "resolved"]
_EXACT = Context(prec=200)  # normalize() rounds to the context precision: never round here
UNEXPLAINED_CLASSES: frozenset[str] = frozenset({"persistent", "never_in_cache", "phantom"})


_blake2b = hashlib.blake2b


def py_event_id(*parts: object) -> str:
    """128-bit deterministic id over the identifying parts of an episode (`event_id`'s Python twin)."""
    # a str part is its own text (no str() call); join makes a list of a generator anyway
    raw = "\x1f".join([p if p.__class__ is str else "" if p is None else str(p) for p in parts])
    return _blake2b(raw.encode(), digest_size=16).hexdigest()


def py_episode_id(env: str, kind: str, account_id: str, symbol: str, first_seen: int) -> str:
    """`event_id(env, kind, account_id, symbol, first_seen)`, the id of a per-symbol episode, with the
    text formatted in one step when every part is a plain str or int (always, from the codecs)."""
    if type(env) is str and type(kind) is str and type(account_id) is str and type(symbol) is str \
            and type(first_seen) is int:
        raw = f"{env}\x1f{kind}\x1f{account_id}\x1f{symbol}\x1f{first_seen}"
        return _blake2b(raw.encode(), digest_size=16).hexdigest()
    return py_event_id(env, kind, account_id, symbol, first_seen)


def decimal_text(d: Decimal) -> str:
    """Canonical text of a decimal: no exponent, no trailing fractional zeros ("13", "0.5", "-7605").

    Whatever form a value arrived in (a JSON tape's "0.500", Avro's fixed scale), it prints the same."""
    if not d:
        return "0"
    return format(d.normalize(_EXACT), "f")


def _jsonable(v: Any) -> Any:
    if isinstance(v, Decimal):
        return decimal_text(v)
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    return v


class _Event:
    """Shared behaviour: a type name and a JSON-ready mapping (decimals as strings)."""

    TYPE: ClassVar[str]
    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.TYPE}
        for f in fields(self):  # type: ignore[arg-type]
            name = "class" if f.name == "cls" else f.name
            out[name] = _jsonable(getattr(self, f.name))
        return out


@dataclass(frozen=True, slots=True)
class PositionMismatch(_Event):
    TYPE: ClassVar[str] = "position_mismatch"
    event_id: str
    version: int
    env: str
    positions_source: str
    account_id: str
    symbol: str
    state: State
    cls: MismatchClass | None
    ep3_qty: Decimal | None
    re_qty: Decimal | None
    delta: Decimal
    first_seen_ts_ms: int
    confirmed_ts_ms: int | None
    resolved_ts_ms: int | None
    fresher: Fresher
    mark: Decimal | None
    im_delta: Decimal | None
    equity: Decimal | None
    snapshot_age_ms: int | None
    re_im_total: Decimal | None
    re_avail: Decimal | None
    re_open_orders_margin: Decimal | None


@dataclass(frozen=True, slots=True)
class AvailGapFlip(_Event):
    TYPE: ClassVar[str] = "avail_gap_flip"
    event_id: str
    version: int
    env: str
    positions_source: str
    account_id: str
    threshold: Decimal
    state: State
    opened_ts_ms: int
    resolved_ts_ms: int | None
    computed_avail: Decimal
    published_avail: Decimal
    gap: Decimal
    og_open_orders_margin: Decimal
    re_open_orders_margin: Decimal
    og_im: Decimal | None
    re_im: Decimal | None
    equity: Decimal
    snapshot_age_ms: int
    position_mismatch: bool
    im_delta_symbols: tuple[str, ...]
    im_deltas: tuple[Decimal | None, ...]


@dataclass(frozen=True, slots=True)
class Unvaluable(_Event):
    TYPE: ClassVar[str] = "unvaluable"
    event_id: str
    version: int
    env: str
    positions_source: str
    account_id: str
    symbol: str
    source: Literal["EP3", "RE"]
    state: State
    qty: Decimal
    reason: Literal["missing_instrument", "missing_mark", "missing_im"]
    first_seen_ts_ms: int
    resolved_ts_ms: int | None


@dataclass(frozen=True, slots=True)
class WitnessCheck(_Event):
    TYPE: ClassVar[str] = "witness_check"
    event_id: str
    version: int
    env: str
    positions_source: str
    kind: Literal["anomaly", "sweep"]
    ts_ms: int
    account_id: str | None
    symbol: str | None
    ledger_qty: Decimal | None
    ep3_qty: Decimal | None
    status: Literal["never_in_cache", "phantom", "mismatch"] | None
    state: State | None
    baseline: str | None
    first_seen_ts_ms: int | None
    confirmed_ts_ms: int | None
    resolved_ts_ms: int | None
    scope: str
    accounts_checked: int | None
    accounts_differing: int | None
    anomalies: int | None
    dormant_positions: int | None
    oldest_dormant_age_ms: int | None


@dataclass(frozen=True, slots=True)
class SourceTransition(_Event):
    """The gateway's positions source changed (seen in `og.margin`); the gate's flip clock."""

    TYPE: ClassVar[str] = "source_transition"
    event_id: str
    version: int
    env: str
    positions_source: str
    ts_ms: int
    from_source: str
    to_source: str
    account_id: str
    scope: str


@dataclass(frozen=True, slots=True)
class FeedHealth(_Event):
    """Records per feed per event-time minute; the gate reads gaps from it (no data is not clean data)."""

    TYPE: ClassVar[str] = "feed_health"
    event_id: str
    version: int
    env: str
    positions_source: str
    minute_ts_ms: int
    feed: str
    records: int
    scope: str


Event = PositionMismatch | AvailGapFlip | Unvaluable | WitnessCheck | SourceTransition | FeedHealth

E = TypeVar("E", bound=_Event)


def fast_constructor(cls: type[E]) -> Callable[..., E]:
    """A constructor of `cls` taking every field positionally, as its `__init__` does, ~10x cheaper.

    A frozen dataclass's `__init__` sets each field through `object.__setattr__` (a call per field:
    ~3.5 µs for a 22-field event). This one fills an instance of a plain twin class with the same
    slots (attribute stores, no calls) and then assigns `__class__`, which Python allows between
    classes of identical slot layout. The result is an ordinary instance of `cls`: frozen, hashable,
    equal to one made by `cls(...)`, with `dataclasses.fields()` working. A class the trick does not
    fit (defaults, `__post_init__`, no slots) gets its own constructor back."""
    names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
    plain = (getattr(cls, "__slots__", None) == names and cls.__bases__ == (_Event,)
             and not {"o", "_new", "_twin", "_cls"} & set(names)
             and not hasattr(cls, "__post_init__")
             and all(f.default is MISSING and f.default_factory is MISSING and f.init
                     for f in fields(cls)))  # type: ignore[arg-type]
    if not plain:
        return cls
    twin = type(f"_{cls.__name__}Builder", (_Event,), {"__slots__": names})
    args = ", ".join(names)
    body = "".join(f"    o.{n} = {n}\n" for n in names)
    src = f"def new({args}):\n    o = _new(_twin)\n{body}    o.__class__ = _cls\n    return o\n"
    ns: dict[str, Any] = {"_new": object.__new__, "_twin": twin, "_cls": cls}
    exec(src, ns)  # the source is built from the dataclass's own field names, as dataclasses does
    new: Callable[..., E] = ns["new"]
    new.__qualname__ = new.__name__ = f"new_{cls.__name__}"
    new.__doc__ = f"Same as `{cls.__name__}(...)` with positional arguments (see `fast_constructor`)."
    return new


def constructor(cls: type[E]) -> Callable[..., E]:
    """`fast_constructor(cls)`, in C (`SlotBuilder` of streams/core/_cevents.c, ~7x cheaper again:
    it stores the values straight into the slots) when the native build runs and the class's layout
    is one it fills completely, else the Python one."""
    made = fast_constructor(cls)
    if made is cls or _C is None:
        return made
    try:
        built: Callable[..., E] = _C.SlotBuilder(cls, tuple(f.name for f in fields(cls)))  # type: ignore[arg-type]
    except TypeError:  # a layout it refuses: never expected of the events above, and harmless
        return made
    return built


# the C twins of this module's hot functions (streams/core/_cevents.c), while the native build runs
_C = _native.c_module("streams.core._cevents")

# what the engine builds ids and events with; mypy checks calls against the Python twins' and the
# dataclasses' own signatures
if TYPE_CHECKING:
    event_id = py_event_id
    episode_id = py_episode_id
    new_position_mismatch = PositionMismatch
    new_unvaluable = Unvaluable
    new_witness_check = WitnessCheck
    new_source_transition = SourceTransition
    new_feed_health = FeedHealth
else:
    # ids: BLAKE2b in C for str, int and None parts, the Python twin for anything else
    event_id = py_event_id if _C is None else _C.IdDigest(py_event_id)
    episode_id = py_episode_id if _C is None else _C.IdDigest(py_episode_id, 5)
    new_position_mismatch = constructor(PositionMismatch)
    new_unvaluable = constructor(Unvaluable)
    new_witness_check = constructor(WitnessCheck)
    new_source_transition = constructor(SourceTransition)
    new_feed_health = constructor(FeedHealth)

EVENT_TYPES: dict[str, type] = {
    c.TYPE: c for c in (PositionMismatch, AvailGapFlip, Unvaluable, WitnessCheck, SourceTransition, FeedHealth)
}
