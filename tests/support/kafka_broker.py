"""A real single-node Apache Kafka broker (KRaft, combined broker + controller) for tests.

The broker runs from the jars that ``scripts/fetch-kafka.sh`` puts in ``.cache/kafka/libs/``: no
Docker, only Java 17+. Everything it writes lives in one temporary folder that ``stop()`` removes.
It listens on loopback only, on ports chosen free at start-up.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from streams.demo.procs import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LIBS = REPO_ROOT / ".cache" / "kafka" / "libs"
HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
# The format tool runs for about a second: skip the optimising JIT and G1 set-up (saves ~0.4 s).
_SHORT_LIVED_JVM = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")


def cut_log(log_dir: Path, topic: str, partition: int) -> int:
    """Drop the last record batch (at least) of `topic[partition]`, as a disk that lost its tail
    would: cut its segment at the start of its last batch, and delete the indexes (rebuilt when the
    broker, killed before, recovers the log on start). For a broker that is down; returns the new
    end offset, which the broker then reports. A batch header starts with its base offset (8
    bytes) and the length of the rest (4)."""
    segments = sorted((log_dir / f"{topic}-{partition}").glob("*.log"))
    if not segments:
        raise KafkaBrokerError(f"no segment of {topic}[{partition}] in {log_dir}")
    segment = segments[-1]
    data = segment.read_bytes()
    batches: list[tuple[int, int]] = []  # (base offset, position)
    position = 0
    while position + 12 <= len(data):
        base, length = struct.unpack(">qi", data[position:position + 12])
        batches.append((base, position))
        position += 12 + length
    if not batches:
        raise KafkaBrokerError(f"{segment} holds no record batch")
    end, cut = batches[-1]
    with segment.open("r+b") as f:
        f.truncate(cut)
    for index in segment.parent.glob("*index"):
        index.unlink()
    return end


class KafkaBrokerError(RuntimeError):
    """The broker could not be set up, formatted, started or reached."""


def _cluster_id() -> str:
    """Return a random Kafka cluster id (URL-safe base64 UUID not starting with '-', as Kafka requires)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGKILL the broker if the test process dies first."""
    # Not glibc Linux: nothing to do, the caller's teardown (stop()) is then the only guard.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _on_main_thread() -> bool:
    """Return whether the caller runs on the interpreter's main thread."""
    return threading.current_thread() is threading.main_thread()


def _java() -> str:
    """Return the java executable: $JAVA_HOME/bin/java if set, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    candidate = Path(home, "bin", "java") if home else None
    if candidate and candidate.is_file():
        return str(candidate)
    found = shutil.which("java")
    if not found:
        raise KafkaBrokerError("java not found: install Java 17+ or set JAVA_HOME")
    return found


def _tail(path: Path, lines: int = 40) -> str:
    """Return the last lines of a log file, or a note that it does not exist."""
    if not path.exists():
        return f"({path.name} not written)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class KafkaBroker:
    """One single-node KRaft Kafka broker on loopback, started and stopped by the caller.

    Guarantees: after ``start()`` returns, the broker answers metadata requests at ``bootstrap``;
    ``stop()`` always leaves no broker process and no temporary files behind, and is idempotent.
    Topics auto-create with ``num_partitions`` partitions; every internal topic (offsets, transactions,
    share groups) has replication factor 1 so that groups and transactions work on one node.
    ``overrides`` are server.properties entries applied last. Start-up takes ~6 s on an idle
    2-core machine (JVM + storage format + KRaft election), longer under load.
    """

    def __init__(
        self,
        libs: Path | None = None,
        num_partitions: int = 1,
        heap: str = "512m",
        start_timeout: float = 120.0,
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        self.libs = libs or Path(os.environ.get("DIVMON_KAFKA_LIBS", DEFAULT_LIBS))
        self.num_partitions = num_partitions
        self.heap = heap
        self.start_timeout = start_timeout
        self.overrides = dict(overrides or {})
        self.port = 0
        self.controller_port = 0
        self.workdir: Path | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The ``host:port`` to give clients as bootstrap servers; only valid while started."""
        if self._proc is None:
            raise KafkaBrokerError("broker is not started")
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        """The broker's JVM process id (benchmarks read its CPU time); only valid while started."""
        if self._proc is None:
            raise KafkaBrokerError("broker is not started")
        return self._proc.pid

    @property
    def log_path(self) -> Path:
        """The broker's server.log (inside the temporary folder, gone after ``stop()``)."""
        if self.workdir is None:
            raise KafkaBrokerError("broker is not started")
        return self.workdir / "server.log"

    def start(self) -> KafkaBroker:
        """Format storage and start the broker; return once it serves metadata, or raise and clean up."""
        if self._proc is not None:
            return self
        self._check_libs()
        began = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="divmon-kafka-"))
        try:
            self.port, self.controller_port = free_port(), free_port()
            config = self._write_config()
            self._format(config)
            self._launch(config)
            self._wait_ready(began + self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after 15 s) and remove its temporary folder."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def restart(self, down_s: float = 0.0, crash: bool = True,
                while_down: Callable[[Path], None] | None = None) -> None:
        """Take the broker down (SIGKILL if `crash`, else a clean shutdown) and start it again after
        `down_s` on the same ports and data; return once it serves metadata again. `while_down`,
        if given, is called with the log directory while the broker is down (see `cut_log`)."""
        proc, workdir = self._proc, self.workdir
        if proc is None or workdir is None:
            raise KafkaBrokerError("broker is not started")
        if crash:
            proc.kill()
        else:
            proc.terminate()
        proc.wait(timeout=30)
        if while_down is not None:
            while_down(workdir / "data")
        time.sleep(down_s)
        self._launch(workdir / "server.properties")
        self._wait_ready(time.monotonic() + self.start_timeout)

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _check_libs(self) -> None:
        """Fail loudly, never skip, when the broker jars have not been fetched."""
        if not any(self.libs.glob("kafka_2.13-*.jar")):
            raise KafkaBrokerError(
                f"Kafka broker jars not found in {self.libs}: run scripts/fetch-kafka.sh "
                "(needs Java 17+ and Maven with access to Maven Central)"
            )

    def _write_config(self) -> Path:
        """Write server.properties and the log4j2 config into the work dir; return the former."""
        assert self.workdir is not None
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": str(self.num_partitions),
            "auto.create.topics.enable": "true",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # the tests' records carry historical event timestamps (tapes from months ago): with the
            # default 7-day retention, the broker's retention pass (30 s after start, then every 5
            # minutes) deleted every such record not yet read, and consumers skipped to the end
            "log.retention.ms": "-1",
        } | self.overrides
        config = self.workdir / "server.properties"
        config.write_text("".join(f"{key}={value}\n" for key, value in props.items()))
        (self.workdir / "log4j2.properties").write_text(self._log4j2_config())
        return config

    def _log4j2_config(self) -> str:
        """Log4j 2 config: INFO and above to server.log in the work dir, nothing on the console."""
        assert self.workdir is not None
        return (
            "status = warn\n"
            "appender.file.type = File\n"
            "appender.file.name = FILE\n"
            f"appender.file.fileName = {self.workdir / 'server.log'}\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRef.file.ref = FILE\n"
        )

    def _java_cmd(self, *args: str, jvm: tuple[str, ...] = ()) -> list[str]:
        """Return a java command line with the broker classpath, heap and logging config."""
        assert self.workdir is not None
        return [
            _java(),
            *jvm,
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            f"{self.libs}/*",
            *args,
        ]

    def _format(self, config: Path) -> None:
        """Format the KRaft log dir with a fresh cluster id (``kafka-storage.sh format``)."""
        args = ("kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(config))
        cmd = self._java_cmd(*args, jvm=_SHORT_LIVED_JVM)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise KafkaBrokerError(f"storage format failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def _launch(self, config: Path) -> None:
        """Start ``kafka.Kafka``; its console output goes to console.log in the work dir."""
        assert self.workdir is not None
        with (self.workdir / "console.log").open("wb") as console:
            self._proc = subprocess.Popen(
                self._java_cmd("kafka.Kafka", str(config)),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C and `timeout` signal the tests only; teardown calls stop()
                # Linux ties the death signal to the starting *thread*: only safe from the main one.
                preexec_fn=_die_with_parent if _on_main_thread() else None,  # noqa: PLW1509 - prctl only
            )

    def _wait_ready(self, deadline: float) -> None:
        """Poll until a metadata request lists this broker; raise with the log tail on death or timeout."""
        while time.monotonic() < deadline:
            self._check_alive()
            if self._port_open() and self._metadata_ok():
                return
            time.sleep(0.2)
        raise KafkaBrokerError(f"broker not ready after {self.start_timeout:.0f} s:\n{_tail(self.log_path)}")

    def _check_alive(self) -> None:
        """Raise with the broker's own words if its process has exited."""
        assert self._proc is not None and self.workdir is not None
        code = self._proc.poll()
        if code is not None:
            console = _tail(self.workdir / "console.log")
            raise KafkaBrokerError(f"broker exited with {code}:\n{console}\n{_tail(self.log_path)}")

    def _port_open(self) -> bool:
        """Return whether the client listener accepts TCP connections yet."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((HOST, self.port)) == 0

    def _metadata_ok(self) -> bool:
        """Return whether the broker answers a metadata request naming itself."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": f"{HOST}:{self.port}", "log_level": 0})
        try:
            return bool(admin.list_topics(timeout=2).brokers)
        except KafkaException:
            return False
