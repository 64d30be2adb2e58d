"""The `divmon` command: a click group whose sub-commands are loaded only when invoked."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import click

from streams import __version__
from streams._native import engine_build

# name -> (module, one-line help). The help is repeated here so `divmon --help` imports nothing heavy.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("streams.commands.demo", "Run the whole product locally: broker, workers, ClickHouse, report, gate."),
    "worker": ("streams.commands.worker", "Run the stream workers against Kafka and ClickHouse."),
    "replay": ("streams.commands.replay", "Run the engine over tapes offline and print the events."),
    "tapes": ("streams.commands.tapes", "Record feeds to tapes, diff tapes, prune old tapes."),
    "report": ("streams.commands.report", "Attribution report from ClickHouse."),
    "gate": ("streams.commands.gate", "May the witness-drop land? CLEARED or NOT_CLEARED, from data."),
    "db": ("streams.commands.db", "ClickHouse schema: migrate, status."),
    "simulate": ("streams.commands.simulate", "Produce a simulated trading day to Kafka or a tape."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n, (mod, _) in COMMANDS.items() if importlib.util.find_spec(mod) is not None)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, _ = COMMANDS[cmd_name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None
            raise
        command: click.Command = module.command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, COMMANDS[n][1]) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="divmon",
                      message=f"%(prog)s, version %(version)s (engine: {engine_build()})")
def main() -> None:
    """divmon — the independent second witness for an order gateway's positions.

    Configuration comes from DIVMON_* environment variables; every option's help names its
    variable, and flags override the environment.
    """


def run(argv: list[str] | None = None) -> Any:
    return main.main(args=argv, prog_name="divmon")


if __name__ == "__main__":
    sys.exit(run())
