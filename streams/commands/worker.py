"""`divmon worker`: the stream workers (Faust) against Kafka, writing events to Kafka and the sink."""

from __future__ import annotations

import logging
from typing import Any

import click

from streams.commands._options import engine_options, load_settings, setting

KAFKA_OPTIONS = [
    setting("brokers", "Kafka bootstrap servers, comma-separated."),
    setting("security_protocol", "Kafka security protocol.",
            click.Choice(["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])),
    setting("sasl_mechanism", "SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)."),
    setting("sasl_username", "SASL user name."),
    setting("ssl_cafile", "CA bundle for SSL connections to Kafka."),
    setting("schema_registry_url", "Schema Registry URL: Confluent wire format instead of single-object Avro."),
    setting("group_id", "Consumer group / Faust app id (also names the changelog topics)."),
    setting("partitions", "Partitions of the account topics (and of the state changelog).", click.IntRange(1)),
    setting("store", "Table store: memory:// (tests) or rocksdb:// (production)."),
    setting("data_dir", "Directory for RocksDB tables."),
    setting("web_port", "Faust web port (0 disables the web server).", click.IntRange(0)),
    setting("metrics_port", "Prometheus metrics port (0 disables).", click.IntRange(0)),
    setting("idle_ms", "An input silent this long (wall ms) stops holding event time back.", click.IntRange(1)),
    setting("skew_ms", "Records of the same instant written to different inputs reach the broker within this "
            "many ms of each other: an idle input holds event time at what had arrived this long before the "
            "broker last said it had nothing more for it.", click.IntRange(0)),
    setting("clock_idle_ms", "With no input at all for this long (wall ms), event time follows the wall clock "
            "so grace windows and sweeps still close.", click.IntRange(1)),
    setting("checkpoint_ms", "Checkpoint / sink batch / commit cadence in ms.", click.IntRange(10)),
    setting("checkpoint_max_ms", "Longest checkpoint interval in ms: with many accounts the interval stretches "
            "from --checkpoint-ms so that cutting checkpoints takes at most a twentieth of the worker's time "
            "(equal to --checkpoint-ms: never).", click.IntRange(10)),
    setting("held_records", "Most decoded records the worker holds while event time waits for its slowest "
            "input (~0.4 KB each), all partitions together; beyond it, inputs that are ahead are not fetched "
            "until the engines catch up.", click.IntRange(1000)),
    setting("session_timeout_ms", "Consumer group session timeout in ms.", click.IntRange(1000)),
    setting("heartbeat_ms", "Consumer group heartbeat interval in ms.", click.IntRange(100)),
    setting("commit_interval_ms", "Offset commit interval in ms.", click.IntRange(10)),
    setting("recovery_delay_ms", "Delay before table recovery after a rebalance, in ms.", click.IntRange(0)),
    setting("metadata_max_age_ms", "The consumer refreshes topic metadata at least this often (ms): an input "
            "topic made again after it was deleted is read again once it does.", click.IntRange(100)),
    setting("topic_ep3", "EP3 positions topic."),
    setting("topic_risk", "Risk-engine snapshots topic."),
    setting("topic_og_margin", "OG margin topic."),
    setting("topic_fills", "Fills topic."),
    setting("topic_marks", "Marks topic."),
    setting("topic_instruments", "Instruments topic."),
    setting("topic_prefix_out", "Prefix of the output topics (one per event type)."),
    setting("topic_dead_letter", "Dead-letter topic."),
]


def kafka_options(f: Any) -> Any:
    for opt in reversed(KAFKA_OPTIONS):
        f = opt(f)
    return f


@click.command("worker")
@engine_options
@kafka_options
@click.option("--sink", "sink_kind", type=click.Choice(["clickhouse", "memory", "none"]), default="clickhouse",
              show_default=True, help="Where events are stored besides the output topics.")
@click.option("--memory-sink", is_flag=True, help="Shorthand for --sink memory (tests).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def command(sink_kind: str, memory_sink: bool, log_level: str, **opts: Any) -> None:
    """Run the stream workers: consume the input topics, run the engine per partition, emit events.

    SASL password: DIVMON_SASL_PASSWORD (never a flag, never logged). Stops on SIGTERM/SIGINT.
    """
    settings = load_settings(**opts)
    logging.basicConfig(level=log_level.upper(), format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    from streams.agents.runtime import Worker

    Worker(settings, _sink("memory" if memory_sink else sink_kind, settings)).run()


def _sink(kind: str, settings: Any) -> Any:
    from streams.sinks import ClickHouseSink, MemorySink

    if kind == "clickhouse":
        return ClickHouseSink(settings)
    if kind == "memory":
        return MemorySink()
    return _NullSink()


class _NullSink:
    """Accepts and forgets (events still go to the output topics)."""

    def setup(self) -> None:
        pass

    def write(self, batch: Any) -> None:
        pass

    def close(self) -> None:
        pass
