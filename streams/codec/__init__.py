"""Avro on the wire for divmon: schemas from `schemas/`, fastavro encode/decode, typed errors.

Public API::

    Codec(feed, *, registry=None, subject=None)        one input feed
        .encode(record) -> bytes    .decode(bytes) -> Record
        .decode_many([bytes]) -> [Record | DecodeError]
        .encode_value(mapping) -> bytes                 .decode_value(bytes) -> dict (no contract check)
    EventCodec(*, registry=None, topics=None)           every output event
        .encode_event(event) -> bytes                   .decode_event(bytes, *, as_json=True) -> dict
    input_codecs(registry=None, topics=None) -> {Feed: Codec}
    SchemaIds.from_url(url, conf=None)                  Schema Registry (Confluent framing) with id caches
    canonical(Decimal) -> Decimal                       the canonical decimal form decoded values have
    CodecError > SchemaLoadError | EncodeError | DecodeError(reason) | RegistryError
"""

from streams.codec.codec import Codec, EventCodec, input_codecs
from streams.codec.decimals import canonical
from streams.codec.errors import (
    DECODE_REASONS,
    CodecError,
    DecodeError,
    DecodeReason,
    EncodeError,
    RegistryError,
    SchemaLoadError,
)
from streams.codec.registry import SchemaIds
from streams.codec.schemas import SCHEMA_DIR, AvroSchema, default_schemas, load_schemas, rabin_fingerprint

__all__ = [
    "DECODE_REASONS",
    "SCHEMA_DIR",
    "AvroSchema",
    "Codec",
    "CodecError",
    "DecodeError",
    "DecodeReason",
    "EncodeError",
    "EventCodec",
    "RegistryError",
    "SchemaIds",
    "SchemaLoadError",
    "canonical",
    "default_schemas",
    "input_codecs",
    "load_schemas",
    "rabin_fingerprint",
]
