"""Encode and decode divmon records and events as Avro (fastavro) on the wire.

- `Codec(feed)`: one input feed. `decode(bytes) -> Record` validates through
  `streams.core.records.parse_value`, so contract violations are the same `RecordError`s a JSON tape
  gives, wrapped in `DecodeError("contract")`. `decode_many` decodes a batch and never raises for a
  poison record: its slot holds the `DecodeError` instead. Bytes of our own schema are first tried
  on the direct path (`direct.py`: body to record in one pass, then `TYPED_RULES`), which gives
  way to the generic one (fastavro, decimal fix, `parse_value`) for anything unusual.
- `EventCodec()`: every output event type. `encode_event(event) -> bytes`,
  `decode_event(bytes) -> dict` shaped like `Event.to_dict()`.

Framing is Avro single-object encoding unless a `SchemaIds` (Schema Registry) is given, then the
Confluent wire format. Decoding accepts both whenever it can resolve the schema. Decoded decimals
are canonical (see `decimals.py`). Registry failures raise `RegistryError` (retry, don't dead-letter).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from io import BytesIO
from typing import Any

import fastavro

from streams.codec.convert import dataclass_wire, jsonable, to_mapping
from streams.codec.direct import Direct, compile_reader
from streams.codec.encoder import Encoder, compile_encoder
from streams.codec.errors import DecodeError, EncodeError
from streams.codec.framing import Plan, Resolver, confluent_header, read_body, single_object_header
from streams.codec.registry import SchemaIds
from streams.codec.schemas import AvroSchema, default_schemas
from streams.core import inputs
from streams.core.events import EVENT_TYPES
from streams.core.records import FEED_OF, TYPED_RULES, Feed, Record, RecordError, parse_value

RECORD_TYPES: dict[Feed, type] = {feed: cls for cls, feed in FEED_OF.items()}
EVENT_SCHEMA_NAMES: dict[str, str] = {t: cls.__name__ for t, cls in EVENT_TYPES.items()}
# Record classes by Avro record name, for the direct readers (nested records such as PositionQty too)
INPUT_CLASSES: dict[str, type] = {
    name: cls for name, cls in vars(inputs).items() if isinstance(cls, type) and issubclass(cls, tuple)
}


def write_body(schema: AvroSchema, value: Mapping[str, Any]) -> bytes:
    """The Avro body of `value` (decimals as Decimal, int or decimal string). Raises EncodeError."""
    return write_wire(schema, schema.to_wire(value, "") if schema.to_wire is not None else value)


def write_wire(schema: AvroSchema, wire: Mapping[str, Any]) -> bytes:
    """The Avro body of a value already shaped for the raw schema (decimals as bytes). Raises EncodeError.

    Always `strict`: a missing or extra field is an error, never a silent default.
    """
    bio = BytesIO()
    try:
        fastavro.schemaless_writer(bio, schema.raw, wire, strict=True)
    except Exception as exc:
        raise EncodeError(f"not valid for {schema.name}: {type(exc).__name__}: {exc}") from exc
    return bio.getvalue()


@functools.cache
def _compiled_encoder(cls: type, schema: AvroSchema) -> Encoder | None:
    """One compiled encoder per (event class, loaded schema) for the process: compiling takes ms."""
    return compile_encoder(cls, schema.definition)


class _Framer:
    """The header for a schema: single-object, or Confluent with a cached registry id per subject."""

    def __init__(self, registry: SchemaIds | None) -> None:
        self._registry = registry
        self._headers: dict[tuple[str, str], bytes] = {}

    def header(self, schema: AvroSchema, subject: str) -> bytes:
        key = (schema.name, subject)
        found = self._headers.get(key)
        if found is None:
            if self._registry is None:
                found = single_object_header(schema)
            else:
                found = confluent_header(self._registry.id_for(subject, schema))
            self._headers[key] = found
        return found


class Codec:
    """Encoder/decoder of one input feed. Holds only caches; one per feed per worker is enough.

    `subject` (Confluent only) defaults to the TopicNameStrategy subject of the feed's default topic.
    """

    def __init__(
        self,
        feed: Feed,
        *,
        registry: SchemaIds | None = None,
        subject: str | None = None,
        schemas: Mapping[str, AvroSchema] | None = None,
    ) -> None:
        self.feed = feed
        self.record_type = RECORD_TYPES[feed]
        self.schema = (schemas or default_schemas())[self.record_type.__name__]
        self.subject = subject or f"{feed.value}-value"
        self._framer = _Framer(registry)
        self._resolver = Resolver([self.schema], registry)
        self._direct = compile_reader(self.schema.definition, INPUT_CLASSES)
        self._rule = TYPED_RULES[feed]
        self._entries = getattr(self._direct, "entries", None)  # the C reader's batch loop
        self._prefix: bytes | None = None  # the header of bytes that `_direct` reads as they are

    def encode(self, record: Record) -> bytes:
        """Framed Avro bytes of `record`; EncodeError if a decimal doesn't fit the schema exactly."""
        if type(record) is not self.record_type:
            expected, got = self.record_type.__name__, type(record).__name__
            raise EncodeError(f"{self.feed.value} carries {expected}, not {got}")
        return self.encode_value(to_mapping(record))

    def encode_value(self, value: Mapping[str, Any]) -> bytes:
        """Framed Avro bytes of a plain mapping, *without* contract validation (tests, poison injection)."""
        return self._framer.header(self.schema, self.subject) + write_body(self.schema, value)

    def decode_value(self, data: bytes) -> dict[str, Any]:
        """The Avro value in `data` before contract validation, decimals canonical. Raises DecodeError."""
        plan, offset = self._resolver.plan(data)
        return read_body(plan, data, offset)

    def decode(self, data: bytes) -> Record:
        """The record in `data`. Raises DecodeError (reason `contract` wraps the RecordError)."""
        plan, offset = self._resolver.plan(data)
        return self._decode_body(self._direct_for(plan), plan, data, offset)

    def _direct_for(self, plan: Plan) -> Direct | None:
        """The direct reader when `plan` reads our own schema's bytes as they are (no resolution)."""
        return self._direct if plan.reader is None and plan.target is self.schema else None

    def _decode_body(self, direct: Direct | None, plan: Plan, data: bytes, offset: int) -> Record:
        """Directly if the bytes and the record are the simple case, else by the generic path."""
        if direct is not None:
            try:
                record = direct(data, offset)
            except Exception:  # anything unusual: the generic path below gives the verdict
                pass
            else:
                if self._rule(record):
                    return record  # type: ignore[no-any-return]
        return self._validate(read_body(plan, data, offset))

    def _validate(self, value: dict[str, Any]) -> Record:
        try:
            return parse_value(self.feed, value)
        except RecordError as exc:
            raise DecodeError("contract", str(exc), field=exc.field) from exc

    def entries(self, raws: list[Any], start: int, feed: Any) -> tuple[list[Any], list[int], int, int] | None:
        """A stream worker's batch of one partition in one C loop, or None where there is none (pure
        build, a schema the direct reader doesn't read, no header of ours seen yet): see
        `Reader.entries` in `_cavro.c`. `raws` are (offset, ts_ms, key, value) tuples; returned:
        the entries (ts_ms, feed, record, offset) of the kept raws in order, with the raws that
        need the general path (`decode_many`) left in place and their indices in `slow`; how many
        raws were kept (offsets extending the sequence from `start`), and the end offset.
        RegistryError (transient) propagates, as from `decode_many`."""
        if self._entries is None:
            return None
        prefix = self._prefix
        if prefix is None:
            for raw in raws:
                data = raw[3]
                if isinstance(data, bytes):
                    try:
                        plan, offset = self._resolver.plan(data)
                    except DecodeError:
                        continue
                    if self._direct_for(plan) is not None:
                        prefix = self._prefix = bytes(data[:offset])
                        break
            else:
                return None
        return self._entries(raws, start, prefix, self._rule, feed)  # type: ignore[no-any-return]

    def decode_many(self, batch: Sequence[bytes]) -> list[Record | DecodeError]:
        """Decode a batch in order; a poison record yields its DecodeError in its slot, never a raise.

        The header is resolved once per run of records sharing it (normally the whole batch): each
        record then costs one prefix comparison and, for our own schema's bytes, one direct read
        (see `direct.py`) and the contract's rules beyond types; anything unusual goes the generic
        way (fastavro read, decimal fix, parser), which gives the same records and the same errors.
        RegistryError (transient) still propagates: retry the batch, don't dead-letter it.
        """
        out: list[Record | DecodeError] = []
        append = out.append
        decode_body = self._decode_body
        prefix, plan, offset, direct = b"\xff", None, 0, None
        for data in batch:
            try:
                if plan is None or not data.startswith(prefix):
                    plan, offset = self._resolver.plan(data)
                    prefix = bytes(data[:offset])
                    direct = self._direct_for(plan)
                append(decode_body(direct, plan, data, offset))
            except DecodeError as exc:
                append(exc)
        return out


class EventCodec:
    """Encoder/decoder of every output event type (the schema is chosen by the event's class).

    `topics` maps event TYPE to its output topic (default: the TYPE itself, as DESIGN section 3 names
    the topics); the Confluent subject is `<topic>-value`.
    """

    def __init__(
        self,
        *,
        registry: SchemaIds | None = None,
        topics: Mapping[str, str] | None = None,
        schemas: Mapping[str, AvroSchema] | None = None,
    ) -> None:
        loaded = schemas or default_schemas()
        self._schemas = {t: loaded[name] for t, name in EVENT_SCHEMA_NAMES.items()}
        self._types = {s.name: t for t, s in self._schemas.items()}
        self._to_wire = {EVENT_TYPES[t]: dataclass_wire(EVENT_TYPES[t], s.definition) for t, s in self._schemas.items()}
        self._subjects = {t: f"{(topics or {}).get(t, t)}-value" for t in self._schemas}
        self._framer = _Framer(registry)
        self._resolver = Resolver(list(self._schemas.values()), registry)
        self._compiled: dict[type, tuple[str, Encoder]] = {}
        for t, s in self._schemas.items():
            encoder = _compiled_encoder(EVENT_TYPES[t], s)
            if encoder is not None:
                self._compiled[EVENT_TYPES[t]] = (t, encoder)
        self._heads: dict[type, bytes] = {}

    def encode_event(self, event: Any) -> bytes:
        """Framed Avro bytes of an event from `streams.core.events`. Raises EncodeError.

        Our own event classes take their compiled encoder (see `encoder.py`); whatever it does not
        encode itself (a value of an unexpected shape, one that doesn't fit) goes the reference way,
        which gives the same bytes or raises the error.
        """
        fast = self.fast_encoder(type(event))
        if fast is not None:
            try:
                data = fast[0](event, fast[1])
            except Exception:  # the reference path below raises the right error
                data = None
            if data is not None:
                return data
        return self._encode_reference(event)

    def fast_encoder(self, cls: type) -> tuple[Encoder, bytes] | None:
        """For a caller's own loop over many events (a worker's output): the compiled encoder of
        events of exactly `cls` and the header to pass it, as `encode_event` calls it (`encoder(event,
        head)` gives the framed bytes, or None or an exception where `encode_event` must be asked
        instead); None if `cls` has none."""
        compiled = self._compiled.get(cls)
        if compiled is None:
            return None
        head = self._heads.get(cls)
        if head is None:
            event_type = compiled[0]
            head = self._heads[cls] = self._framer.header(self._schemas[event_type], self._subjects[event_type])
        return compiled[1], head

    def _encode_reference(self, event: Any) -> bytes:
        """`encode_event` through fastavro: the behaviour the compiled encoders reproduce."""
        event_type = getattr(event, "TYPE", None)
        schema = self._schemas.get(event_type) if isinstance(event_type, str) else None
        if schema is None or not isinstance(event_type, str):
            raise EncodeError(f"not an output event: {type(event).__name__}")
        header = self._framer.header(schema, self._subjects[event_type])
        to_wire = self._to_wire.get(type(event))
        if to_wire is None:  # not exactly one of our event classes (e.g. a subclass): the generic path
            return header + write_body(schema, to_mapping(event))
        return header + write_wire(schema, to_wire(event))

    def decode_event(self, data: bytes, *, as_json: bool = True) -> dict[str, Any]:
        """`{"type": ..., fields}` like `Event.to_dict()` (field `class`, decimals as canonical strings).

        With `as_json=False` decimals stay `Decimal`. Raises DecodeError.
        """
        plan, offset = self._resolver.plan(data)
        value = read_body(plan, data, offset)
        fields = {k: jsonable(v) for k, v in value.items()} if as_json else value
        return {"type": self._types[plan.target.name], **fields}


def input_codecs(
    registry: SchemaIds | None = None, topics: Mapping[Feed, str] | None = None
) -> dict[Feed, Codec]:
    """One `Codec` per input feed; `topics` overrides the default topic names (Confluent subjects)."""
    names = topics or {}
    return {f: Codec(f, registry=registry, subject=f"{names.get(f, f.value)}-value") for f in Feed}
