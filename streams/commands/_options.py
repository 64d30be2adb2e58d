"""Shared click plumbing: options bound to `Settings` fields, with `[env: DIVMON_…]` in their help.

An option left unset on the command line is passed to `Settings.load` as None, so the environment
variable (read by `Settings.load`, which validates it) and then the documented default apply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any, TypeVar

import click

from streams.config import ConfigError, Settings, env_var

F = TypeVar("F", bound=Callable[..., Any])
_DEFAULTS = Settings()


def setting(name: str, help: str, type: Any = None, flag: str | None = None) -> Callable[[F], F]:
    """A `--flag` for Settings field `name`; help shows the default and the environment variable."""
    if name not in {f.name for f in fields(Settings)}:
        raise AssertionError(f"no such setting {name!r}")
    default = getattr(_DEFAULTS, name)
    shown = ",".join(str(x) for x in default) if isinstance(default, tuple) else default
    return click.option(
        flag or "--" + name.replace("_", "-"), name, type=type, default=None,
        help=f"{help} [default: {shown}] [env: {env_var(name)}]",
    )


def load_settings(**overrides: Any) -> Settings:
    """Settings from environment and flags; a bad value exits 2 with the variable's name."""
    try:
        return Settings.load({k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


def engine_options(f: F) -> F:
    """The options that change verdicts, shared by replay, tapes diff and worker."""
    for opt in reversed([
        setting("env", "Environment label carried by every event (demo, prod, ...)."),
        setting("grace_ms", "Grace window in ms before a disagreement is confirmed.", click.IntRange(0)),
        setting("thresholds", "Avail thresholds for decision flips, comma-separated."),
        setting("sweep_interval_ms", "Witness sweep interval in ms (event time).", click.IntRange(1)),
        setting("dormant_after_ms", "A position with no EP3 update for this long is dormant.",
                click.IntRange(0)),
        setting("witness_baseline", "What seeds the witness ledger.", click.Choice(["first", "risk", "ep3"])),
        setting("risk_silence_ms", "Stand the EP3-vs-RE comparison down after RE is silent this long "
                "(RE retired); 0 = never.", click.IntRange(0)),
    ]):
        f = opt(f)
    return f


def engine_config(settings: Settings, scope: str = "all") -> Any:
    from streams.core.params import EngineConfig

    return EngineConfig(env=settings.env, grace_ms=settings.grace_ms, thresholds=settings.thresholds,
                        sweep_interval_ms=settings.sweep_interval_ms, dormant_after_ms=settings.dormant_after_ms,
                        witness_baseline=settings.witness_baseline, scope=scope,
                        risk_silence_ms=settings.risk_silence_ms)
