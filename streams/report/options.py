"""Click options shared by `divmon report` and `divmon gate`; each help names its DIVMON_ variable.

Options backed by `Settings` are resolved through `Settings.load` (environment, then flag); the
others are read by click from the variable shown. Guarantee: a bad value exits with code 2 (usage).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from streams.config import ConfigError, Settings, env_var
from streams.report.timeutil import parse_instant

F = TypeVar("F", bound=Callable[..., Any])


def setting_option(name: str, help_text: str, **kw: Any) -> Callable[[F], F]:
    """A flag overriding the setting `name`; the environment is applied by Settings.load, not click."""
    flag = "--" + name.replace("_", "-")
    return click.option(flag, name, default=None, help=f"{help_text} [env: {env_var(name)}]", **kw)


def env_option(flag: str, var: str, help_text: str, *decls: str, **kw: Any) -> Callable[[F], F]:
    """A flag that click also reads from the variable `var`."""
    return click.option(flag, *decls, envvar=var, help=f"{help_text} [env: {var}]", **kw)


def _instant(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc


def instant_option(flag: str, var: str, help_text: str) -> Callable[[F], F]:
    return env_option(flag, var, f"{help_text} Epoch ms or ISO 8601 (UTC if no offset).",
                      callback=_instant, metavar="MS|ISO")


def common(fn: F) -> F:
    """--env, --now, --json, --plot and where ClickHouse is."""
    for deco in reversed([
        setting_option("env", "Environment whose events are read (e.g. prod)."),
        instant_option("--now", "DIVMON_NOW", "The instant to judge at (default: wall clock)."),
        env_option("--json", "DIVMON_JSON", "Print one JSON document instead of text.", "as_json",
                   is_flag=True, default=False),
        env_option("--plot", "DIVMON_PLOT", "Also draw a PNG to this file.", metavar="FILE.png",
                   type=click.Path(dir_okay=False, writable=True), default=None),
        setting_option("clickhouse_url", "ClickHouse server URL; empty means embedded chdb."),
        setting_option("clickhouse_path", "Data directory of the embedded chdb engine."),
        setting_option("clickhouse_database", "ClickHouse database holding the event tables."),
    ]):
        fn = deco(fn)
    return fn


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and the given flags; a bad value is a usage error (exit 2)."""
    try:
        return Settings.load(overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
