"""Open a clickhouse-connect client for the configured store, with typed errors.

Two places, one client API:
- `clickhouse_url` set: a ClickHouse server over HTTP(S). User, password, database and TLS come from
  settings; credentials written into the URL are taken out of it, and the password is never logged
  or put into an error message (clickhouse-connect sends it as a header, messages show only the URL).
- otherwise: the embedded engine, `get_client(interface="chdb", path=clickhouse_path)`.

chdb (measured with chdb 26.9): one *process* per data directory. A second process is refused by an
flock on `<path>/status` (stderr: "Cannot lock file ... Another server instance in same directory is
already running", then an opaque "Error initializing EmbeddedServer" error). We probe that lock
first and raise `StoreLocked` naming the holder's pid. Within one process any number of clients may
share the directory, but only one directory per process while any client is open (`SinkConfigError`).
"""

from __future__ import annotations

import fcntl
import os
from typing import Any
from urllib.parse import unquote, urlsplit

from streams.config import Settings
from streams.sinks.errors import SinkConfigError, SinkError, SinkRejected, SinkUnavailable, StoreLocked

# Server error codes that mean "try again later", not "your data is wrong".
TRANSIENT_CODES = frozenset({159, 164, 202, 203, 209, 210, 236, 241, 242, 252, 285, 394, 425, 1000})


def translate(exc: BaseException, what: str, retry_after: float = 1.0) -> SinkError:
    """Map a clickhouse-connect / transport exception onto the sink error tree."""
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    if isinstance(exc, SinkError):
        return exc
    if isinstance(exc, OperationalError | ConnectionError | TimeoutError):
        return SinkUnavailable(f"{what}: ClickHouse unreachable: {exc}", retry_after)
    code = getattr(exc, "code", None)
    if code in TRANSIENT_CODES:
        return SinkUnavailable(f"{what}: ClickHouse overloaded (code {code}): {exc}", retry_after)
    if isinstance(exc, DatabaseError):
        return SinkRejected(f"{what}: ClickHouse refused it: {exc}")
    return SinkRejected(f"{what}: {type(exc).__name__}: {exc}")


def describe(settings: Settings) -> str:
    """Where the sink writes, safe to log (no credentials)."""
    if settings.clickhouse_url:
        u = urlsplit(settings.clickhouse_url)
        return f"{u.scheme}://{u.hostname}:{u.port or _default_port(u.scheme)} db={settings.clickhouse_database}"
    return f"chdb:{os.path.realpath(settings.clickhouse_path)} db={settings.clickhouse_database}"


def connect(settings: Settings, *, connect_timeout: float = 5, send_receive_timeout: float = 60) -> Any:
    """A connected clickhouse-connect client (no default database: SQL names `db.table`)."""
    if settings.clickhouse_url:
        return _connect_http(settings, connect_timeout, send_receive_timeout)
    return _connect_chdb(settings.clickhouse_path)


def _default_port(scheme: str) -> int:
    return 8443 if scheme == "https" else 8123


def _connect_http(settings: Settings, connect_timeout: float, send_receive_timeout: float) -> Any:
    import clickhouse_connect

    u = urlsplit(settings.clickhouse_url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise SinkConfigError("DIVMON_CLICKHOUSE_URL: expected http(s)://host[:port], got "
                              f"{u.scheme or '?'}://{u.hostname or '?'}")
    user = unquote(u.username) if u.username else settings.clickhouse_user
    password = unquote(u.password) if u.password else settings.clickhouse_password.get()
    kwargs: dict[str, Any] = {
        "interface": u.scheme, "host": u.hostname, "port": u.port or _default_port(u.scheme),
        "username": user, "password": password, "secure": u.scheme == "https",
        "connect_timeout": connect_timeout, "send_receive_timeout": send_receive_timeout,
        "autogenerate_session_id": False,
    }
    if settings.clickhouse_ca_cert:
        kwargs["ca_cert"] = settings.clickhouse_ca_cert
    try:
        return clickhouse_connect.get_client(**kwargs)
    except Exception as exc:
        raise translate(exc, f"connect to {describe(settings)}") from exc


def lock_holder(path: str) -> int | None:
    """Pid of *another* process holding the chdb directory `path`, or None if it is free or ours."""
    status = os.path.join(path, "status")
    try:
        fd = os.open(status, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _status_pid(status)
            return None if pid == os.getpid() else (pid or -1)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _status_pid(status: str) -> int | None:
    try:
        with open(status, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("PID:"):
                    return int(line.split(":", 1)[1])
    except (OSError, ValueError):
        return None
    return None


def _locked_error(path: str, pid: int) -> StoreLocked:
    who = f"process {pid}" if pid > 0 else "another process"
    return StoreLocked(
        f"the embedded ClickHouse directory {path} is in use by {who}: chdb lets only one process at a "
        "time open a data directory. Stop that process (a running `divmon worker` or `divmon demo`?), "
        "set DIVMON_CLICKHOUSE_PATH to another directory, or set DIVMON_CLICKHOUSE_URL to use a server."
    )


def _connect_chdb(path: str) -> Any:
    import clickhouse_connect

    real = os.path.realpath(path)
    holder = lock_holder(real)
    if holder is not None:
        raise _locked_error(real, holder)
    try:
        os.makedirs(real, exist_ok=True)
        return clickhouse_connect.get_client(interface="chdb", path=real)
    except Exception as exc:
        holder = lock_holder(real)
        if holder is not None:
            raise _locked_error(real, holder) from exc
        if "already initialized with path" in str(exc):
            raise SinkConfigError(
                f"DIVMON_CLICKHOUSE_PATH: this process already has another chdb directory open; chdb "
                f"allows one directory per process (wanted {real}): {exc}") from exc
        raise translate(exc, f"open chdb at {real}") from exc
