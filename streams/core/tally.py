"""`Tally`: the engine's counters, a dict whose missing keys read as 0.

Not `collections.Counter`: Counter defines `__delitem__`, so CPython routes every store into it
through the generic slot that looks `__setitem__` up and calls it as a method (~1,000 instructions a
store, measured with callgrind; a plain dict store is ~100). The engine stores a counter for most
records. A subclass that defines neither keeps dict's own store; reads of a missing key give 0 as
Counter's do.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")


class Tally(dict[K, int]):
    __slots__ = ()

    def __missing__(self, key: K) -> int:
        return 0
