"""Typed errors of the codec.

Exception tree::

    CodecError                  base of everything raised here
    ├── SchemaLoadError         schemas/ missing, unreadable or not valid Avro (start-up, fatal)
    ├── EncodeError             a value cannot be written without loss (e.g. more fractional digits than
    │                           the schema scale, more digits than its precision, a missing field)
    ├── DecodeError             these bytes can never become a record: a poison message. `reason` is a
    │                           short stable token, used as the dead-letter header:
    │                             empty           zero-length value
    │                             bad_magic       neither single-object (C3 01) nor Confluent (00) framing
    │                             truncated       header or body ends early
    │                             unknown_schema  fingerprint / schema id not known (or not this feed's)
    │                             malformed       body is not valid Avro for the schema
    │                             trailing_bytes  body decoded but bytes are left over
    │                             contract        valid Avro that violates the input contract (RecordError)
    └── RegistryError           the Schema Registry could not be reached or refused a request. Transient:
                                *not* a poison record, so callers retry instead of dead-lettering.

Every error raised while handling an underlying exception is raised `from` it.
"""

from __future__ import annotations

from typing import Final, Literal

DecodeReason = Literal[
    "empty", "bad_magic", "truncated", "unknown_schema", "malformed", "trailing_bytes", "contract"
]
DECODE_REASONS: Final[tuple[str, ...]] = (
    "empty", "bad_magic", "truncated", "unknown_schema", "malformed", "trailing_bytes", "contract",
)


class CodecError(Exception):
    """Base of every codec error."""


class SchemaLoadError(CodecError):
    """The schema directory or one of its files is unusable."""


class EncodeError(CodecError, ValueError):
    """A value cannot be encoded exactly; `field` names where (dotted path, may be empty)."""

    def __init__(self, message: str, field: str = "") -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class DecodeError(CodecError):
    """Bytes that cannot become a record. `reason` is stable and machine-friendly (dead-letter header)."""

    def __init__(self, reason: DecodeReason, detail: str = "", field: str = "") -> None:
        self.reason: DecodeReason = reason
        self.detail = detail
        self.field = field
        super().__init__(f"{reason}: {detail}" if detail else reason)


class RegistryError(CodecError):
    """The Schema Registry failed (unreachable, auth, incompatible schema). Transient for the caller."""
