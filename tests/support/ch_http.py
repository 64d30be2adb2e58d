"""TEST FIXTURE, not a ClickHouse server: ClickHouse's HTTP interface served from in-process chdb,
implementing just what clickhouse-connect (1.12) sends, so the server code path of the sink can be
tested end to end on a machine with no ClickHouse server. Never use it outside tests.

What it implements (each item measured against clickhouse-connect's HTTP transport):
- `GET /ping`; queries in the body and/or the `query` URL parameter (parameter first, then a
  newline, then the body, as ClickHouse concatenates them); multipart form queries.
- URL parameters: `database` (USE), `param_<name>` bound parameters (passed to chdb's `params`),
  transport-only keys ignored (session_id, query_id, wait_end_of_query, compress, ...), every other
  key is a setting applied with `SET` on a fresh chdb handle per request (so settings such as
  `insert_deduplication_token` never leak into the next request).
- Inserts: one (chunked) body `INSERT INTO t (cols) FORMAT Native\\n` + data, where with compression
  on *every* 65,536-row block is its own lz4 frame: all frames are decoded (decoding only the first
  silently loses rows). aiohttp's own request decompression is switched off (it does not know lz4).
  The data is streamed into chdb with `send_insert`.
- Responses: uncompressed body in the query's FORMAT (default TabSeparated), X-ClickHouse-Format,
  -Timezone, -Query-Id and -Summary headers; errors as HTTP 500 + X-ClickHouse-Exception-Code.

`stop()` closes the listening socket and open connections (an outage); `start()` brings the endpoint
back on the same port, data intact (the chdb engine stays open in this process meanwhile).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import threading
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import chdb
from aiohttp import web

TRANSPORT_KEYS = frozenset({
    "query", "database", "session_id", "session_timeout", "session_check", "query_id", "quota_key",
    "compress", "decompress", "wait_end_of_query", "client_protocol_version", "role", "buffer_size",
    "user", "password", "default_format", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "enable_http_compression",
})
_INSERT = re.compile(rb"^\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+(\w+)[ \t]*\r?\n?", re.I | re.S)
_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.I)
_CODE = re.compile(r"Code: (\d+)")


def decompress(body: bytes, encoding: str) -> bytes:
    """Decode a request body; lz4 and zstd bodies are sequences of frames, all of them decoded."""
    if encoding in ("", "identity"):
        return body
    if encoding == "lz4":
        import lz4.frame

        out = bytearray()
        while body:
            d = lz4.frame.LZ4FrameDecompressor()
            out += d.decompress(body)
            body = d.unused_data
        return bytes(out)
    if encoding == "zstd":
        from backports import zstd

        return bytes(zstd.decompress(body))
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


class ChHttpServer:
    """A clickhouse-connect-compatible HTTP endpoint over the chdb directory `path` (test fixture)."""

    def __init__(self, path: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.path, self.host, self.port = path, host, port
        self.requests = 0
        self.inserted_rows = 0
        self._anchor = chdb.connect(path)  # keeps the engine up across stop()/start()
        self._tz = self._anchor.query("SELECT timezone()", "TabSeparated").bytes().decode().strip()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ch-http-chdb")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ch-http", daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def start(self) -> ChHttpServer:
        if self._runner is None:
            self._runner = self._call(self._start())
        return self

    def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            self._call(runner.cleanup())

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._pool.shutdown(wait=True)
        self._anchor.close()

    def __enter__(self) -> ChHttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _start(self) -> web.AppRunner:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/ping", self._ping)
        app.router.add_route("*", "/", self._handle)
        runner = web.AppRunner(app, auto_decompress=False, shutdown_timeout=0.5, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = runner.addresses[0][1]
        return runner

    async def _ping(self, request: web.Request) -> web.Response:
        return web.Response(text="Ok.\n")

    async def _handle(self, request: web.Request) -> web.Response:
        params = dict(request.query.items())
        if request.content_type == "multipart/form-data":
            form = await request.post()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
            body = b""
        else:
            body = decompress(await request.read(), request.headers.get("Content-Encoding", ""))
        self.requests += 1
        loop = asyncio.get_running_loop()
        status, headers, out = await loop.run_in_executor(self._pool, self._execute, params, body)
        return web.Response(status=status, headers=headers, body=out)

    def _execute(self, params: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        query = params.get("query", "").encode()
        sql = query + b"\n" + body if query and body else query or body
        headers = {"X-ClickHouse-Query-Id": params.get("query_id") or str(uuid.uuid4()),
                   "X-ClickHouse-Timezone": self._tz, "X-ClickHouse-Server-Display-Name": "ch-http-fixture"}
        handle = chdb.connect(self.path)
        try:
            if params.get("database"):
                handle.query(f"USE `{params['database']}`", "TabSeparated")
            for k, v in params.items():
                if k not in TRANSPORT_KEYS and not k.startswith("param_"):
                    esc = v.replace("\\", "\\\\").replace("'", "\\'")
                    handle.query(f"SET {k} = '{esc}'", "TabSeparated")
            m = _INSERT.match(sql)
            if m:
                return 200, headers, self._insert(handle, m, sql[m.end():], headers)
            text = sql.decode()
            fmt_m = _FORMAT.search(text)
            fmt = fmt_m.group(1) if fmt_m else params.get("default_format", "TabSeparated")
            bound = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
            res = handle.query(text, fmt, params=bound)
            headers["X-ClickHouse-Format"] = fmt
            headers["X-ClickHouse-Summary"] = json.dumps(
                {"read_rows": str(res.rows_read()), "read_bytes": str(res.bytes_read())})
            return 200, headers, res.bytes() or b""
        except Exception as exc:  # the error travels to the client like ClickHouse's would
            msg = str(exc)
            code = _CODE.search(msg)
            headers["X-ClickHouse-Exception-Code"] = code.group(1) if code else "1000"
            return 500, headers, (msg[msg.find("Code: "):] if code else msg).encode() + b"\n"
        finally:
            handle.close()

    def _insert(self, handle: Any, m: re.Match[bytes], data: bytes, headers: dict[str, str]) -> bytes:
        with handle.send_insert(m.group(1).decode(), m.group(2).decode()) as ins:
            for i in range(0, len(data), 1 << 20):
                ins.append(data[i:i + (1 << 20)])
            res = ins.finish()
        self.inserted_rows += res.rows_written
        headers["X-ClickHouse-Summary"] = json.dumps({"written_rows": str(res.rows_written),
                                                      "written_bytes": str(res.bytes_written)})
        return b""
