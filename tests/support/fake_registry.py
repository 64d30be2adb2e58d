"""TEST FIXTURE: a tiny in-process stand-in for a Confluent Schema Registry.

Implements only what `confluent_kafka.schema_registry.SchemaRegistryClient` calls for Avro
produce/consume: register (POST /subjects/{s}/versions), look up (POST /subjects/{s}) and fetch by
id (GET /schemas/ids/{id}). Schemas are identified by their exact text (the real registry
canonicalises; that doesn't matter for the codec tests). Every request is recorded in `requests`
so tests can assert the codec caches ids instead of asking per record. Not for production use.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit


class FakeRegistry:
    """State of the fake registry: ids by schema text, versions by subject, and a request log."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.schemas: dict[int, dict[str, Any]] = {}
        self.ids: dict[str, int] = {}
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str]] = []
        self.url = ""

    def add(self, schema_str: str, schema_type: str = "AVRO", subject: str | None = None) -> int:
        """Register directly (as another producer would) and return the id."""
        with self.lock:
            sid = self.ids.get(schema_str)
            if sid is None:
                sid = self.ids[schema_str] = len(self.schemas) + 1
                self.schemas[sid] = {"schema": schema_str, "schemaType": schema_type}
            if subject is not None and sid not in self.subjects.setdefault(subject, []):
                self.subjects[subject].append(sid)
            return sid

    def version_of(self, subject: str, sid: int) -> int:
        return self.subjects[subject].index(sid) + 1


def _handler(reg: FakeRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            return

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _not_found(self, code: int, what: str) -> None:
            self._reply(404, {"error_code": code, "message": f"{what} not found"})

        def do_GET(self) -> None:
            path = urlsplit(self.path).path.strip("/").split("/")
            reg.requests.append(("GET", self.path))
            if len(path) == 3 and path[:2] == ["schemas", "ids"] and path[2].isdigit():
                found = reg.schemas.get(int(path[2]))
                if found is None:
                    self._not_found(40403, "Schema")
                else:
                    self._reply(200, found)
                return
            self._not_found(404, self.path)

        def do_POST(self) -> None:
            path = [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]
            reg.requests.append(("POST", self.path))
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            schema_str, schema_type = body.get("schema", ""), body.get("schemaType", "AVRO")
            if len(path) == 3 and path[0] == "subjects" and path[2] == "versions":
                self._reply(200, {"id": reg.add(schema_str, schema_type, path[1])})
            elif len(path) == 2 and path[0] == "subjects":
                sid = reg.ids.get(schema_str)
                if sid is None or sid not in reg.subjects.get(path[1], []):
                    self._not_found(40403, "Schema")
                    return
                self._reply(200, {"subject": path[1], "id": sid, "version": reg.version_of(path[1], sid),
                                  "schema": schema_str, "schemaType": schema_type})
            else:
                self._not_found(404, self.path)

    return Handler


@contextmanager
def serve_fake_registry() -> Iterator[FakeRegistry]:
    """Run a FakeRegistry on 127.0.0.1 (free port) in a daemon thread for the duration of the block."""
    reg = FakeRegistry()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(reg))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-schema-registry", daemon=True
    )
    thread.start()
    reg.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield reg
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def evolved_mark(registry: FakeRegistry, symbol: str, price: Decimal, ts_ms: int) -> bytes:
    """Confluent bytes of a Mark written by a newer writer schema (one extra field, `venue`),
    registered under a new id: what a producer upgraded before divmon sends."""
    import fastavro

    from streams.codec import default_schemas

    evolved = {**default_schemas()["Mark"].definition}
    evolved["fields"] = [*evolved["fields"], {"name": "venue", "type": "string", "default": "x"}]
    sid = registry.add(json.dumps(evolved), subject="marks-value")
    body = io.BytesIO()
    value = {"symbol": symbol, "price": price, "ts_ms": ts_ms, "venue": "ep3"}
    fastavro.schemaless_writer(body, fastavro.parse_schema(evolved), value)
    return b"\x00" + sid.to_bytes(4, "big") + body.getvalue()
