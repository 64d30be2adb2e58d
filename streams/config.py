"""One typed, frozen settings object, loaded from `DIVMON_*` environment variables.

Every field maps to the environment variable `DIVMON_<FIELD NAME IN UPPER CASE>`; command-line
flags override it (`Settings.load(overrides)`). Secrets are `Secret` values: their `repr`/`str` is
masked, so a settings object can be logged whole without leaking a password.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from typing import Any, Literal, get_args, get_origin, get_type_hints

PREFIX = "DIVMON_"


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


class Secret:
    """A string that never prints itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__


@dataclass(frozen=True)
class Settings:
    # --- engine ----------------------------------------------------------------------------------
    env: str = "demo"
    grace_ms: int = 2_000
    thresholds: tuple[Decimal, ...] = (Decimal(0),)
    sweep_interval_ms: int = 60_000
    dormant_after_ms: int = 600_000
    witness_baseline: Literal["first", "risk", "ep3"] = "first"
    risk_silence_ms: int = 0

    # --- topics ----------------------------------------------------------------------------------
    topic_ep3: str = "ep3.positions"
    topic_risk: str = "risk.snapshots"
    topic_og_margin: str = "og.margin"
    topic_fills: str = "fills"
    topic_marks: str = "marks"
    topic_instruments: str = "instruments"
    topic_prefix_out: str = ""
    topic_dead_letter: str = "divmon.dead_letter"

    # --- kafka -----------------------------------------------------------------------------------
    brokers: str = "localhost:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password: Secret = field(default_factory=lambda: Secret(""))
    ssl_cafile: str = ""
    schema_registry_url: str = ""
    group_id: str = "divmon"
    partitions: int = 8
    store: str = "memory://"
    data_dir: str = "./var/divmon"
    web_port: int = 6066
    metrics_port: int = 9108
    idle_ms: int = 5_000  # an input silent this long (wall time) stops holding the watermark back
    clock_idle_ms: int = 30_000  # nothing at all for this long: event time follows the wall clock
    skew_ms: int = 1_000  # inputs' records of one instant reach the broker within this of each other
    checkpoint_ms: int = 500  # state checkpoint + sink batch + commit cadence of the worker
    checkpoint_max_ms: int = 10_000  # how far checkpoint_ms may stretch when checkpoints are costly
    held_records: int = 400_000  # decoded records waiting for the watermark, all lanes together (~0.4 KB each)
    session_timeout_ms: int = 30_000  # consumer-group session timeout (failure detection)
    heartbeat_ms: int = 3_000
    commit_interval_ms: int = 2_000
    recovery_delay_ms: int = 1_000  # wait after a rebalance before table recovery starts
    metadata_max_age_ms: int = 30_000  # the consumer refreshes topic metadata at least this often

    # --- clickhouse ------------------------------------------------------------------------------
    clickhouse_url: str = ""
    clickhouse_user: str = "default"
    clickhouse_password: Secret = field(default_factory=lambda: Secret(""))
    clickhouse_database: str = "divmon"
    clickhouse_path: str = "./var/chdb"
    clickhouse_ca_cert: str = ""  # CA bundle for an https:// clickhouse_url; empty = system trust store
    clickhouse_ttl_days: int = 90
    sink_batch_rows: int = 5_000
    sink_batch_ms: int = 1_000

    # --- tapes -----------------------------------------------------------------------------------
    tapes_dir: str = "./var/tapes"
    tapes_keep_days: int = 30

    # --- gate ------------------------------------------------------------------------------------
    soak_target_h: float = 120.0
    feed_gap_s: int = 300

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
             ) -> Settings:
        """Defaults, then `DIVMON_*` variables, then explicit overrides (None means 'not given')."""
        environ = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            var = PREFIX + f.name.upper()
            if var in environ:
                values[f.name] = _coerce(hints[f.name], environ[var], var)
        for name, v in (overrides or {}).items():
            if v is not None:
                if name not in hints:
                    raise ConfigError(f"unknown setting {name!r}")
                values[name] = _coerce(hints[name], v, f"--{name.replace('_', '-')}")
        return replace(cls(), **values)

    def topic_for(self, feed_value: str) -> str:
        """Configured topic name for a logical feed (its default topic name)."""
        return {
            "ep3.positions": self.topic_ep3,
            "risk.snapshots": self.topic_risk,
            "og.margin": self.topic_og_margin,
            "fills": self.topic_fills,
            "marks": self.topic_marks,
            "instruments": self.topic_instruments,
        }[feed_value]

    def describe(self) -> dict[str, str]:
        """Every setting with its environment variable, secrets masked: for logs and `--help`."""
        return {PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}


def env_var(name: str) -> str:
    return PREFIX + name.upper()


def _coerce(tp: Any, raw: Any, where: str) -> Any:
    try:
        return _coerce_inner(tp, raw)
    except (ValueError, ArithmeticError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _coerce_inner(tp: Any, raw: Any) -> Any:
    if tp is Secret:
        return raw if isinstance(raw, Secret) else Secret(str(raw))
    if get_origin(tp) is Literal:
        options = get_args(tp)
        if raw not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {raw!r}")
        return raw
    if tp == tuple[Decimal, ...]:
        items = raw.split(",") if isinstance(raw, str) else list(raw)
        out = tuple(Decimal(str(x).strip()) for x in items if str(x).strip())
        if not out:
            raise ValueError("expected at least one value")
        return out
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        return str(raw).lower() in ("1", "true", "yes", "on")
    if tp is int:
        v = int(raw)
        if v < 0:
            raise ValueError(f"must not be negative, got {v}")
        return v
    if tp is float:
        return float(raw)
    return str(raw)
