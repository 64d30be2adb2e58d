"""Fixtures for tests on a real Kafka broker: one broker per test session, topics made on demand.

The broker comes from ``tests.support.kafka_broker``; it needs the jars fetched by
``scripts/fetch-kafka.sh`` and fails (never skips) without them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tests.support.kafka_broker import KafkaBroker

TOPIC_READY_TIMEOUT = 30.0

TopicFactory = Callable[..., list[str]]


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """One KRaft broker for the whole session, stopped (process and files gone) at the end."""
    with KafkaBroker() as broker:
        yield broker


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """``host:port`` of the session broker, for ``bootstrap.servers`` and Faust's ``kafka://`` URL."""
    return kafka_broker.bootstrap


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    """An admin client on the session broker."""
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def kafka_topics(kafka_admin: AdminClient) -> TopicFactory:
    """Factory ``kafka_topics(names, partitions=1, config=None) -> names``.

    Creates the topics (replication factor 1) and returns once every partition of each has a leader,
    so producers and consumers can use them at once. Names are used as given and the broker lives
    for the whole session: pass names unique to the test. An existing name raises.
    """

    def create(names: str | Sequence[str], partitions: int = 1, config: Mapping[str, str] | None = None) -> list[str]:
        wanted = [names] if isinstance(names, str) else list(names)
        new = [NewTopic(name, partitions, 1, config=dict(config or {})) for name in wanted]
        for future in kafka_admin.create_topics(new, operation_timeout=TOPIC_READY_TIMEOUT).values():
            future.result(timeout=TOPIC_READY_TIMEOUT)
        for name in wanted:
            wait_for_leaders(kafka_admin, name, partitions)
        return wanted

    return create


def wait_for_leaders(admin: AdminClient, topic: str, partitions: int) -> None:
    """Block until the metadata shows ``partitions`` partitions of ``topic``, each with a leader."""
    deadline = time.monotonic() + TOPIC_READY_TIMEOUT
    while time.monotonic() < deadline:
        meta = admin.list_topics(topic=topic, timeout=5).topics.get(topic)
        if meta is not None and meta.error is None and _all_led(meta.partitions, partitions):
            return
        time.sleep(0.1)
    raise TimeoutError(f"topic {topic!r} has no leader for all {partitions} partitions")


def _all_led(parts: Mapping[int, object], expected: int) -> bool:
    """Return whether there are ``expected`` partitions and every one has a leader and no error."""
    return len(parts) == expected and all(
        getattr(p, "leader", -1) >= 0 and getattr(p, "error", None) is None for p in parts.values()
    )


@pytest.fixture(scope="module")
def http_server(chdb_dir: Path) -> Iterator[Any]:
    """The HTTP test fixture over the process's chdb directory, one per module (like `ch_http`)."""
    from tests.support.ch_http import ChHttpServer

    server = ChHttpServer(str(chdb_dir)).start()
    try:
        yield server
    finally:
        server.close()
