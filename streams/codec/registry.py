"""Schema ids from a Confluent Schema Registry, cached so the registry is never asked per record.

The registry is asked at most once per (subject, schema) to register or look up an id (encode side)
and once per unknown id to fetch its writer schema (decode side); both answers are kept for the life
of the process (ids are immutable in a registry). Calls are blocking HTTP: they happen on the first
record of a kind, not on the hot path. Failures raise `RegistryError` (transient, not a poison record).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from streams.codec.errors import RegistryError

if TYPE_CHECKING:
    from streams.codec.schemas import AvroSchema


class SchemaIds:
    """A cache of schema ids in front of a `confluent_kafka` `SchemaRegistryClient`.

    `auto_register=True` registers our schema under the subject (what Confluent serializers do by
    default); with False the schema must already be registered and is looked up instead.
    """

    def __init__(self, client: Any, *, auto_register: bool = True) -> None:
        self._client = client
        self._auto_register = auto_register
        self._ids: dict[tuple[str, str], int] = {}
        self._writers: dict[int, Mapping[str, Any] | None] = {}

    @classmethod
    def from_url(
        cls, url: str, conf: Mapping[str, Any] | None = None, *, auto_register: bool = True
    ) -> SchemaIds:
        """Build a client for `url`; `conf` passes through (e.g. `basic.auth.user.info`, ssl paths)."""
        from confluent_kafka.schema_registry import SchemaRegistryClient

        return cls(SchemaRegistryClient({**(conf or {}), "url": url}), auto_register=auto_register)

    def id_for(self, subject: str, schema: AvroSchema) -> int:
        """The registry id of `schema` under `subject` (registered or looked up once, then cached)."""
        key = (subject, schema.text)
        cached = self._ids.get(key)
        if cached is None:
            cached = self._ids[key] = self._ask_id(subject, schema)
        return cached

    def _ask_id(self, subject: str, schema: AvroSchema) -> int:
        from confluent_kafka.schema_registry import Schema

        sr_schema = Schema(schema.text, "AVRO")
        try:
            if self._auto_register:
                return int(self._client.register_schema(subject, sr_schema))
            return int(self._client.lookup_schema(subject, sr_schema).schema_id)
        except Exception as exc:
            raise RegistryError(f"schema id for subject {subject!r}: {exc}") from exc

    def writer_schema(self, schema_id: int) -> Mapping[str, Any] | None:
        """The writer schema (JSON) registered under `schema_id`, or None if it is unknown or not Avro.

        Unknown ids are remembered too, so a stream of poison records does not hammer the registry.
        """
        if schema_id not in self._writers:
            self._writers[schema_id] = self._fetch(schema_id)
        return self._writers[schema_id]

    def _fetch(self, schema_id: int) -> Mapping[str, Any] | None:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            found = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return None
            raise RegistryError(f"schema id {schema_id}: {exc}") from exc
        except Exception as exc:
            raise RegistryError(f"schema id {schema_id}: {exc}") from exc
        if (found.schema_type or "AVRO") != "AVRO" or not found.schema_str:
            return None
        try:
            definition = json.loads(found.schema_str)
        except ValueError:
            return None
        return definition if isinstance(definition, Mapping) else None
