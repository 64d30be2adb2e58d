"""Child processes of the demo (the broker and the worker), and the guarantee that none outlives it.

- Every child runs in its own session (so a Ctrl-C on the terminal reaches the demo only, which then
  stops the children in order: worker first, broker last) with stdout and stderr in a log file.
- `Children.stop_all()` sends SIGTERM, waits, then SIGKILLs whatever is left, and reaps every child;
  the demo calls it on success, on failure and on Ctrl-C / SIGTERM.
- On Linux each child also gets `PR_SET_PDEATHSIG(SIGTERM)`: should the demo itself be killed with
  SIGKILL, the kernel still stops its children.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1


class DemoError(RuntimeError):
    """The demo could not proceed; the message says which step failed and why."""


def free_port() -> int:
    """A TCP port on the loopback interface that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prctl() -> Any:
    """libc's prctl, resolved in the parent so the forked child does no dynamic loading."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
    except (OSError, AttributeError):
        return None


def _preexec() -> Callable[[], None] | None:
    prctl = _prctl()
    if prctl is None:
        return None

    def die_with_parent() -> None:  # pragma: no cover - runs in the forked child, before exec
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return die_with_parent


class Child:
    """One started process; `stop()` returns only once it has exited and been reaped."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name, self.log = name, log
        with log.open("ab") as out:
            # preexec_fn and threads (PLW1509): the hook only calls a pre-resolved foreign function,
            # no imports, no locks taken in Python; it is the only way to get PDEATHSIG set.
            self.proc = subprocess.Popen(
                list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
                preexec_fn=_preexec())  # noqa: PLW1509

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        """The last lines of the child's log, for error messages."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait up to `timeout` s, then SIGKILL; returns the exit status."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.wait()


class Children:
    """The demo's children, stopped in reverse start order by `stop_all()` (idempotent)."""

    def __init__(self) -> None:
        self._children: list[Child] = []

    def start(self, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> Child:
        child = Child(name, argv, log, env, cwd)
        self._children.append(child)
        return child

    @property
    def pids(self) -> list[int]:
        return [c.pid for c in self._children]

    def stop_all(self, timeout: float = 20.0) -> list[str]:
        """Stop every child; returns one line per child that had to be killed or failed to stop."""
        problems: list[str] = []
        while self._children:
            child = self._children.pop()
            try:
                code = child.stop(timeout)
            except BaseException as exc:  # a second Ctrl-C must not leave the rest running
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.proc.wait()
                problems.append(f"{child.name} (pid {child.pid}) killed: {type(exc).__name__}")
                continue
            if code == -signal.SIGKILL:
                problems.append(f"{child.name} (pid {child.pid}) did not stop within {timeout:g}s: killed")
        return problems
