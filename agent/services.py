"""Local helper services: a Mosquitto broker and an InfluxDB server in a temporary directory.

The demo uses them to give a first run that just works, and the tests use the very same
code to run against real servers on free loopback ports. Each service is a context
manager that starts the process, waits until it answers, and stops it (and removes its
files) on exit.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from rules.errors import ServiceError

INFLUX_DATABASE = "factory"
INFLUX_RETENTION = "autogen"


PORT_RANGE_ENV = "EDGE_AGENT_PORT_RANGE"
"""``LOW-HIGH``: take free ports from this range instead of asking the OS.

A port is chosen before the process that binds it starts, so two test processes asking
the OS at the same moment can be handed the same port. Parallel test workers each set a
range of their own, below the kernel's ephemeral range, so that neither they nor
outgoing connections can take each other's ports.
"""

_next_in_range: dict[tuple[int, int], int] = {}


def _port_range() -> tuple[int, int] | None:
    text = os.environ.get(PORT_RANGE_ENV, "")
    low, sep, high = text.partition("-")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        return None
    first, last = int(low), int(high)
    return (first, last) if 0 < first <= last < 65536 else None


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now.

    The OS picks it, unless ``$EDGE_AGENT_PORT_RANGE`` names a range: then ports are
    handed out in turn from it (from a random start, so that two processes sharing a
    range rarely meet), skipping those in use, and a port is not handed out again
    until the range wraps around, even if its first user has not bound it yet.
    """
    span = _port_range()
    if span is not None:
        first, last = span
        size = last - first + 1
        start = _next_in_range.get(span, first + random.randrange(size))
        for step in range(size):
            port = first + (start - first + step) % size
            if _bindable(host, port):
                _next_in_range[span] = first + (port - first + 1) % size
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    """Wait until ``host:port`` accepts connections, failing fast if ``proc`` died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"process {proc.args!r} exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise ServiceError(f"{host}:{port} did not accept connections within {timeout_s:.0f} s")


def find_mosquitto() -> str | None:
    """Path of the ``mosquitto`` broker binary (Debian puts it in /usr/sbin)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def find_influxd() -> str | None:
    """Path of an ``influxd`` serving the v2 write API: ``$INFLUXD``, PATH, or the build cache."""
    env = os.environ.get("INFLUXD")
    if env and os.access(env, os.X_OK):
        return env
    cache = Path(
        os.environ.get("EDGE_AGENT_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edge-agent"
    )
    cached = cache / "influxd-v1.8.10" / "influxd"
    if cached.exists() and os.access(cached, os.X_OK):
        return str(cached)
    return shutil.which("influxd")


class _Managed:
    """Common lifetime of a child process in its own temporary directory."""

    name = "service"

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"edge-agent-{self.name}-"))
        self.log_path = self.workdir / f"{self.name}.log"

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir,
                start_new_session=True,
            )
        except OSError as err:
            raise ServiceError(f"cannot start {argv[0]}: {err}") from err
        finally:
            log.close()

    def log_tail(self, lines: int = 20) -> str:
        """The end of the service's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate the process (SIGTERM, then SIGKILL) and leave the directory in place."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout_s)

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash or power cut would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> None:
        """Stop the process and remove its files."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


@dataclass
class MosquittoOptions:
    """Broker settings the tests and the demo vary; the rest is a safe local default."""

    max_queued_messages: int = 100_000
    persistence: bool = True
    extra_lines: list[str] = field(default_factory=list)


class ManagedMosquitto(_Managed):
    """A real Mosquitto broker on a loopback port, with its own config and persistence file."""

    name = "mosquitto"

    def __init__(
        self, port: int | None = None, options: MosquittoOptions | None = None,
        binary: str | None = None,
    ) -> None:
        super().__init__()
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.options = options or MosquittoOptions()
        self.binary = binary or find_mosquitto()

    def config_text(self) -> str:
        """The generated mosquitto.conf."""
        opts = self.options
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            # Run as root, Mosquitto drops to user "mosquitto", which cannot write the
            # persistence file into our private temporary directory; keep our own user.
            f"user {getpass.getuser()}",
            f"persistence {'true' if opts.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            f"max_queued_messages {opts.max_queued_messages}",
            "max_inflight_messages 100",
            "log_type error",
            "log_type warning",
            "log_type notice",
            *opts.extra_lines,
        ]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        """Write the config and start the broker; raises ServiceError if it does not listen."""
        if self.binary is None:
            raise ServiceError("mosquitto is not installed (Debian: apt-get install mosquitto)")
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        self._spawn([self.binary, "-c", str(conf)])
        assert self.proc is not None
        try:
            wait_for_port(self.host, self.port, 15, self.proc)
        except ServiceError as err:
            raise ServiceError(f"mosquitto did not start: {err}\n{self.log_tail()}") from err

    def restart(self) -> None:
        """Stop and start again on the same port with the same persistence file."""
        self.stop()
        self.start()


class ManagedInfluxd(_Managed):
    """A real InfluxDB (1.8+, v2 write API) on loopback ports, with database ``factory``."""

    name = "influxd"

    def __init__(self, port: int | None = None, binary: str | None = None) -> None:
        super().__init__()
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.rpc_port = free_port()
        self.binary = binary or find_influxd()
        self.database = INFLUX_DATABASE
        self.bucket = f"{INFLUX_DATABASE}/{INFLUX_RETENTION}"
        self.token = "edge:edge"
        self.org = "-"

    @property
    def url(self) -> str:
        """Base URL for influxdb-client and the HTTP API."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Start influxd, wait for /ping and create the database."""
        if self.binary is None:
            raise ServiceError(
                "no influxd found: run scripts/provide-influxd (builds InfluxDB 1.8.10 once)"
            )
        env = dict(os.environ)
        env.update({
            "INFLUXDB_HTTP_BIND_ADDRESS": f"{self.host}:{self.port}",
            "INFLUXDB_BIND_ADDRESS": f"{self.host}:{self.rpc_port}",
            "INFLUXDB_META_DIR": str(self.workdir / "meta"),
            "INFLUXDB_DATA_DIR": str(self.workdir / "data"),
            "INFLUXDB_DATA_WAL_DIR": str(self.workdir / "wal"),
            "INFLUXDB_REPORTING_DISABLED": "true",
            "INFLUXDB_HTTP_FLUX_ENABLED": "true",
            "INFLUXDB_HTTP_LOG_ENABLED": "false",
            "INFLUXDB_DATA_QUERY_LOG_ENABLED": "false",
            "INFLUXDB_LOGGING_LEVEL": "warn",
        })
        self._spawn([self.binary], env=env)
        assert self.proc is not None
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise ServiceError(f"influxd exited with code {self.proc.returncode}\n"
                                   f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=1):
                    break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    raise ServiceError(f"influxd did not answer /ping\n{self.log_tail()}") from None
                time.sleep(0.1)
        self.query(f"CREATE DATABASE {self.database}", method="POST")

    def restart(self) -> None:
        """Stop and start again on the same ports with the same data."""
        self.stop()
        self.start()

    def reset(self) -> None:
        """Drop every database but ``_internal`` and create ``factory`` empty again.

        Starting influxd with Flux enabled costs seconds of CPU (Flux's standard library
        is compiled at start), so the tests reuse one server and reset it between tests.
        """
        body = self.query("SHOW DATABASES")
        names: list[str] = []
        for result in body.get("results") or []:  # type: ignore[attr-defined]
            for series in result.get("series") or []:
                names += [row[0] for row in series.get("values") or []]
        for name in names:
            if name != "_internal":
                self.query(f'DROP DATABASE "{name}"', method="POST")
        self.query(f"CREATE DATABASE {self.database}", method="POST")

    def query(self, q: str, method: str = "GET") -> dict[str, object]:
        """Run an InfluxQL statement against /query and return the decoded JSON."""
        import json

        params = urllib.parse.urlencode({"q": q, "db": self.database, "epoch": "ms"})
        if method == "POST":
            req = urllib.request.Request(f"{self.url}/query", data=params.encode(), method="POST")
        else:
            req = urllib.request.Request(f"{self.url}/query?{params}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                body: dict[str, object] = json.loads(resp.read())
        except (OSError, urllib.error.URLError) as err:
            raise ServiceError(f"InfluxDB query failed: {q!r}: {err}") from err
        return body

    def rows(self, q: str) -> list[dict[str, object]]:
        """Rows of an InfluxQL SELECT as dicts (column -> value); empty when no series."""
        body = self.query(q)
        out: list[dict[str, object]] = []
        results = body.get("results")
        if not isinstance(results, list):
            return out
        for result in results:
            if "error" in result:
                raise ServiceError(f"InfluxDB error for {q!r}: {result['error']}")
            for series in result.get("series", []):
                tags = series.get("tags", {})
                cols = series["columns"]
                for values in series["values"]:
                    row = dict(zip(cols, values, strict=True))
                    row.update(tags)
                    out.append(row)
        return out
