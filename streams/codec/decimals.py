"""Exact conversions between `Decimal` and Avro decimal bytes, and the canonical decimal form.

Canonical form (what every decoded decimal looks like): the value with trailing fractional zeros
removed and a non-positive exponent, so it never prints with a positive exponent:
``13.000000000000 -> 13``, ``0.500 -> 0.5``, ``10 -> 10`` (not ``1E+1``), ``-0 -> 0``. The same value
therefore prints the same whether it came from Avro (fixed scale) or from a JSON tape.
(Python's `str` still uses exponent notation below 1e-6, e.g. ``1E-7``: that is a printing choice of
the caller; the value itself is canonical.)

Nothing here rounds: encoding a value that needs more fractional digits than the schema scale, or
more digits than its precision, raises `EncodeError`; decoding bytes wider than the precision raises
`ValueError` (the codec reports it as `malformed`).

Both directions are cached per decimal type (`decimal_reader`, `decimal_writer`): streams repeat
their decimals, and a cached result is the exact conversion's, never an approximation of it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import Any

from streams.codec.errors import EncodeError

# Wider than any schema precision, and trapping: an operation here that would lose a digit raises.
_CTX = Context(prec=100, traps=[Inexact, InvalidOperation])
_ONE = Decimal(1)
_ZERO = Decimal(0)

DecimalReader = Callable[[bytes], Decimal]
DecimalWriter = Callable[[Any, str], bytes]


def canonical(d: Decimal) -> Decimal:
    """`d` in canonical form (see module docstring). Non-finite values are returned unchanged."""
    if not d.is_finite():
        return d
    if not d:
        return _ZERO
    if d == d.to_integral_value():
        return d.quantize(_ONE, context=_CTX)
    return d.normalize(_CTX)


def exact_reader(scale: int, precision: int) -> DecimalReader:
    """A function turning Avro decimal bytes of this scale into a canonical `Decimal`.

    Integral values (most quantities) take one `divmod`; the others are scaled and normalized in the
    trapping context, which never rounds (and measured 1.2-2.2x faster than stripping trailing zeros
    with integer arithmetic, more so the more zeros there are). Values wider than the precision
    raise ValueError (checked only when the byte length allows it, i.e. rarely).
    """
    unit = 10**scale
    limit = 10**precision
    safe_len = (limit - 1).bit_length() // 8  # any signed value this short is below the limit
    from_bytes = int.from_bytes

    def read(raw: bytes) -> Decimal:
        u = from_bytes(raw, "big", signed=True)
        if len(raw) > safe_len and not -limit < u < limit:
            raise ValueError(f"decimal wider than precision {precision}")
        q, r = divmod(u, unit)
        if not r:
            return Decimal(q)
        return Decimal(u).scaleb(-scale, _CTX).normalize(_CTX)  # not integral: the exponent stays negative

    return read


READ_CACHE_MAX = 1 << 14


class ReadCache(dict[bytes, Decimal]):
    """Avro decimal bytes -> canonical `Decimal`, for one (scale, precision): `cache[raw]`.

    Input records repeat their decimals (about 7 in 10 on a simulated day), and as a dict subscript
    a hit costs no Python call. A miss lands in `__missing__`, which converts exactly (a ValueError
    for a value wider than the precision propagates and is not cached). The same bytes always mean
    the same value, and Decimals are immutable, so sharing one object between records is safe.
    A full cache starts over.
    """

    def __init__(self, read: DecimalReader) -> None:
        super().__init__()
        self._read = read

    def __missing__(self, raw: bytes) -> Decimal:
        d = self._read(raw)
        if len(self) >= READ_CACHE_MAX:
            self.clear()
        self[raw] = d
        return d


# One read cache per (scale, precision), shared by every field of that type.
READ_CACHES: dict[tuple[int, int], ReadCache] = {}


def read_cache(scale: int, precision: int) -> ReadCache:
    """The shared `ReadCache` of this decimal type (subscript it: `cache[raw]`)."""
    found = READ_CACHES.get((scale, precision))
    if found is None:
        found = READ_CACHES[(scale, precision)] = ReadCache(exact_reader(scale, precision))
    return found


@functools.cache
def decimal_reader(scale: int, precision: int) -> DecimalReader:
    """`exact_reader` behind a bounded cache of recent byte strings (see `ReadCache`)."""
    return read_cache(scale, precision).__getitem__


def to_exact_decimal(v: Any, field: str) -> Decimal:
    """`Decimal` from a Decimal, int or decimal string; floats and booleans are refused."""
    if isinstance(v, Decimal):
        d = v
    elif isinstance(v, int) and not isinstance(v, bool):
        d = Decimal(v)
    elif isinstance(v, str):
        try:
            d = Decimal(v)
        except InvalidOperation:
            raise EncodeError(f"not a decimal: {v!r}", field) from None
    else:
        raise EncodeError(f"expected a Decimal, int or decimal string, got {type(v).__name__}", field)
    if not d.is_finite():
        raise EncodeError(f"not a finite decimal: {v!r}", field)
    return d


def exact_writer(scale: int, precision: int) -> DecimalWriter:
    """A function turning a decimal value into Avro decimal bytes of this scale, exactly or not at all.

    A finite `Decimal` first tries one scaling in the trapping context and an integer check (about
    0.3 µs less than rounding to integral in it); if that doesn't give a fitting integer, or for other
    types, the general path below decides, and raises. Both compute the same integer when both do.
    """
    limit = 10**precision
    scaleb = _CTX.scaleb

    def write(v: Any, field: str) -> bytes:
        if type(v) is Decimal and v.is_finite():
            try:
                x = scaleb(v, scale)
            except Inexact:
                pass
            else:
                u = int(x)
                if u == x and -limit < u < limit:
                    return u.to_bytes((u + (u < 0)).bit_length() // 8 + 1, "big", signed=True)
        d = to_exact_decimal(v, field)
        try:
            u = int(d.scaleb(scale, _CTX).to_integral_exact(context=_CTX))
        except Inexact as exc:
            raise EncodeError(
                f"{d} has more fractional digits than the schema scale {scale}; refusing to round", field
            ) from exc
        if not -limit < u < limit:
            raise EncodeError(f"{d} does not fit decimal({precision},{scale})", field)
        return u.to_bytes((u + (u < 0)).bit_length() // 8 + 1, "big", signed=True)

    return write


WRITE_CACHE_MAX = 1 << 14
# Recent Decimal -> bytes, one cache per (scale, precision) shared by every field of that type.
WRITE_CACHES: dict[tuple[int, int], dict[Decimal, bytes]] = {}


@functools.cache
def decimal_writer(scale: int, precision: int) -> DecimalWriter:
    """`exact_writer` behind a bounded cache of the bytes of recent `Decimal` values.

    Output events repeat their decimals (quantities, marks, margins: about 3 in 4 are hits on a
    simulated day), and the exact conversion was most of an event's encoding cost. Equal Decimals
    have the same bytes at a given scale (``-0``, ``0.0`` and ``0`` all write ``00``), so the cache
    is keyed by value. Only finite values of type exactly `Decimal` are looked up: ``True == 1``
    and ``0.5 == Decimal("0.5")`` must still reach the checks that refuse them, and a signalling
    NaN cannot even be hashed. Failures are never cached. A full cache starts over (a plain dict
    lookup is cheaper than LRU bookkeeping, and a drifting stream leaves old values behind anyway).
    """
    exact = exact_writer(scale, precision)
    cache = WRITE_CACHES.setdefault((scale, precision), {})

    def write(v: Any, field: str) -> bytes:
        if type(v) is not Decimal or not v.is_finite():
            return exact(v, field)
        found = cache.get(v)
        if found is None:
            found = exact(v, field)
            if len(cache) >= WRITE_CACHE_MAX:
                cache.clear()
            cache[v] = found
        return found

    return write
