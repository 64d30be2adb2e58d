"""One module per `divmon` sub-command, each exposing a click command named `command`.

They are imported lazily by `streams.cli` so that `divmon --help` and short runs don't pay for
Faust, ClickHouse or matplotlib imports.
"""
