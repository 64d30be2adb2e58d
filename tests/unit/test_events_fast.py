"""The engine's fast event constructors make exactly what the dataclass constructors make."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import pickle
from decimal import Decimal as D
from typing import Any, ClassVar

import pytest

from streams.core import events
from streams.core.events import EVENT_TYPES, PositionMismatch, _Event, fast_constructor
from streams.core.records import Feed


def _values(cls: type) -> list[Any]:
    """A distinct value per field, of a type the field can hold."""
    out: list[Any] = []
    for i, f in enumerate(dataclasses.fields(cls)):
        t = str(f.type)
        if "tuple" in t:
            out.append(("A", "B") if "str" in t else (D(i), None))
        elif "Decimal" in t:
            out.append(D(f"{i}.50"))
        elif t.startswith("int") or t == "bool":
            out.append(i)
        else:
            out.append(f"v{i}")
    return out


@pytest.mark.parametrize("cls", sorted(EVENT_TYPES.values(), key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_fast_constructor_equals_the_dataclass(cls: type) -> None:
    values = _values(cls)
    made, ref = fast_constructor(cls)(*values), cls(*values)
    assert type(made) is cls
    assert made == ref and hash(made) == hash(ref)
    assert made.to_dict() == ref.to_dict()
    assert [getattr(made, f.name) for f in dataclasses.fields(made)] == values
    assert dataclasses.astuple(made) == dataclasses.astuple(ref)
    assert pickle.loads(pickle.dumps(made)) == ref
    assert copy.copy(made) == ref and dataclasses.replace(made) == ref
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.version = 99
    with pytest.raises(TypeError):
        fast_constructor(cls)(*values[:-1])  # every field is required, as in __init__


def test_the_engine_uses_fast_constructors() -> None:
    for name in ("new_position_mismatch", "new_unvaluable", "new_witness_check", "new_source_transition",
                 "new_feed_health"):
        fn = getattr(events, name)
        assert fn.__name__.startswith("new_"), name
    values = _values(PositionMismatch)
    assert events.new_position_mismatch(*values) == PositionMismatch(*values)


@dataclasses.dataclass(frozen=True, slots=True)
class _WithDefault(_Event):
    TYPE: ClassVar[str] = "with_default"
    event_id: str
    version: int = 1


@dataclasses.dataclass(frozen=True, slots=True)
class _WithPostInit(_Event):
    TYPE: ClassVar[str] = "with_post_init"
    event_id: str

    def __post_init__(self) -> None:
        if not self.event_id:
            raise ValueError("empty id")


@dataclasses.dataclass(frozen=True)
class _NoSlots(_Event):
    TYPE: ClassVar[str] = "no_slots"
    event_id: str


@pytest.mark.parametrize("cls", [_WithDefault, _WithPostInit, _NoSlots], ids=lambda c: c.__name__)
def test_classes_the_trick_does_not_fit_keep_their_own_constructor(cls: type) -> None:
    assert fast_constructor(cls) is cls
    assert fast_constructor(cls)("x") == cls("x")


@pytest.mark.parametrize("parts", [
    ("demo", "position_mismatch", "A-1", "BTC-PERP", 1_780_000_000_000),
    ("demo", "unvaluable", "A", None, "EP3", D("0.50"), 0),
    (Feed.MARKS, "feed_health", "", -1),  # a str subclass prints as str() does
], ids=["mismatch", "with-none-and-decimal", "str-subclass"])
def test_event_id_is_the_blake2b_of_the_parts_text(parts: tuple[object, ...]) -> None:
    raw = "\x1f".join("" if p is None else str(p) for p in parts)
    assert events.event_id(*parts) == hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()


@pytest.mark.parametrize("parts", [
    ("demo", "position_mismatch", "A-1", "BTC-PERP", 1_780_000_000_000),
    ("prod", "witness_check", "", "X", -5),
    (Feed.MARKS, "position_mismatch", "A", "B", 1),  # a str subclass: the general path
    ("demo", "position_mismatch", "A", "B", True),  # a bool is no plain int: the general path
], ids=["mismatch", "empty-and-negative", "str-subclass", "bool"])
def test_episode_id_is_event_id(parts: tuple[Any, ...]) -> None:
    assert events.episode_id(*parts) == events.event_id(*parts)
