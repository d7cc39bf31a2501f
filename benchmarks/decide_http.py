"""The decision path over HTTP, measured against its ceiling, in one run on one machine.

Run:

    .venv/bin/python benchmarks/decide_http.py [--seconds 10] [--quick] [--json PATH]
    .venv/bin/python benchmarks/decide_http.py --profile [--seconds 10]

What one run does:

1. **The ceiling.** `benchmarks/hello_app.py` is a Litestar app with one `POST /v1/decisions`
   that decodes the same body with msgspec into the service's own request struct and answers a
   small JSON document. It is served through the CLI's own server launcher, so the server, the
   worker count, the log level and the access log are exactly those of `bandit-platform serve`.
2. **The service.** `bandit-platform serve` on a fresh database (a SQLite file in a temporary
   folder, or a PostgreSQL database created for the run and dropped at its end) holding the demo
   experiment (`bandit-platform demo --setup-only --no-traffic`, which prints the API key). The
   learner runs in every worker as in production (`BANDIT_LEARNER=on`; one holds the lease);
   per-key rate limits are off (`BANDIT_RATE_LIMIT_PER_SECOND=0`) so that the load is not refused.
   Each server configuration gets its own fresh copy of the database.
3. **The load.** `wrk` (installed with apt when missing) with `benchmarks/wrk/decide.lua`: the
   example body, a customer drawn from a pool of a million (so frequency caps rarely apply), a
   fresh `request_id` per request and the `X-API-Key` header. Outcome ingestion: decisions made
   first (their ids collected from the answers), then `benchmarks/wrk/outcome.lua` posts a
   `click` for them round robin, each with an idempotency key of its own. Without wrk, the
   equivalent `benchmarks/http_load.py` runs in a separate process instead.
4. **The figures**, at 16 and 64 connections: requests/s, p50 / p99 latency, server CPU time per
   request (utime + stime of the server's process tree from /proc, before and after; for
   PostgreSQL also the CPU of the database's backends serving this run), how busy the host's
   CPUs were, and the ratios: service / hello, two workers / one, uvicorn / granian, SQLite /
   PostgreSQL; the targets with met / not met.

`--profile` instead runs one configuration (uvicorn, one worker, `--profile-database`) with the
server in-process under a sampling profiler that sees every thread (the event loop and the
worker threads that run the decision), weighting each sample by the thread's CPU time, and
prints where the CPU goes by component and function.

Every figure is measured in this run on this machine; the ratios against the hello-world
baseline are what the targets are stated in.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform as host
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
WRK_SCRIPTS = BENCHMARKS / "wrk"
EXAMPLES = REPO / "examples" / "requests"
PSEUDONYM_KEY = "benchmark-pseudonym-key-0123456789abcdef"  # pragma: allowlist secret
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
CUSTOMER_POOL = 1_000_000
#: Options of every server this run starts (set from the command line).
SERVER_OPTIONS: dict[str, bool] = {"access_log": False}

# Targets.
DECIDE_OVER_HELLO = 0.70  # one worker: service requests/s >= 70% of hello-world's
DECIDE_OVER_HELLO_AMBITION = 0.80
P99_OVER_P50 = 4.0  # p99 <= 4x p50
TWO_OVER_ONE = 1.7  # two workers >= 1.7x one
OUTCOMES_PER_SECOND = 5_000.0

PACKAGES = (
    "litestar",
    "msgspec",
    "uvicorn",
    "h11",
    "httptools",
    "uvloop",
    "granian",
    "anyio",
    "sqlalchemy",
    "psycopg",
    "vowpal-wabbit-next",
)


# --- configurations and results --------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """One server process: the hello-world app or the service, on one server and database."""

    app: str  # "hello" | "service"
    server: str  # "uvicorn" | "granian"
    workers: int
    database: str | None = None  # "sqlite" | "postgresql" for the service
    outcomes: bool = False  # also measure outcome ingestion on this server

    @property
    def label(self) -> str:
        where = f", {self.database}" if self.database else ""
        return f"{self.app} ({self.server}, {self.workers} worker{'s' * (self.workers > 1)}{where})"


@dataclass
class Measurement:
    """One load run against one server at one connection count."""

    path: str  # "hello" | "decide" | "outcome"
    server: str
    workers: int
    database: str | None
    connections: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    errors: int  # non-2xx answers, socket errors and timeouts
    server_cpu_ms_per_request: float
    database_cpu_ms_per_request: float | None
    host_busy: float  # share of all the host's CPU time that was busy during the run

    @property
    def key(self) -> tuple[str, str, int, str | None, int]:
        return (self.path, self.server, self.workers, self.database, self.connections)


@dataclass
class Check:
    """One target, for one configuration."""

    target: str
    configuration: str
    value: float
    goal: str
    met: bool
    ambition: str = ""
    ambition_met: bool | None = None


@dataclass
class Plan:
    seconds: float
    warmup: float
    connections: list[int]
    outcome_connections: list[int]
    groups: list[Group] = field(default_factory=list)

    def estimate_seconds(self, start_seconds: float = 6.0) -> float:
        total = 15.0  # templates
        for group in self.groups:
            total += start_seconds + self.warmup + 1.0
            total += len(self.connections) * (self.seconds + 0.5)
            if group.outcomes:
                total += 2.0 + self.warmup + len(self.outcome_connections) * (self.seconds + 0.5)
        return total


# --- the host ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime + stime in clock ticks) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """CPU time (user + system) of a process and all its descendants alive now."""
    stats = {pid: stat for pid in _all_pids() if (stat := _proc_stat(pid)) is not None}
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in stats.items():
        children[ppid].append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
        todo.extend(children.get(pid, ()))
    return total / TICKS


def postgres_backends_cpu_seconds(database: str) -> dict[int, float]:
    """CPU time of each PostgreSQL backend connected to one database (local server only)."""
    found: dict[int, float] = {}
    marker = f" {database} "
    for pid in _all_pids():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if command.startswith("postgres:") and marker in command:
            stat = _proc_stat(pid)
            if stat is not None:
                found[pid] = stat[1] / TICKS
    return found


def backends_cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the backends spent between two readings: those that lived through both,
    and all of those that started in between (a backend that ended in between is missed)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def host_cpu_times() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal
    return total - values[3] - values[4], total


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str] = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        commit = subprocess.run(  # noqa: S603 (fixed commands of this benchmark)
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603 (fixed commands of this benchmark)
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
    return {
        "cpu": model,
        "vcpus": os.cpu_count(),
        "vcpus_usable": len(os.sched_getaffinity(0)),
        "kernel": host.release(),
        "python": host.python_version(),
        "packages": versions,
        "commit": commit,
        "load_average_at_start": list(os.getloadavg()),
    }


# --- the load generator -----------------------------------------------------------------------


def ensure_wrk(install: bool) -> str | None:
    """The path of wrk, installing Debian's package when missing and allowed; None without."""
    found = shutil.which("wrk")
    if found or not install:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        print("wrk is missing and cannot be installed here (apt-get as root)", file=sys.stderr)
        return None
    print("installing wrk (apt-get install -y wrk) ...", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def install_wrk() -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 (fixed commands of this benchmark)
            [apt, "install", "-y", "--no-install-recommends", "wrk"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )

    result = install_wrk()
    if result.returncode != 0:  # the package lists may be missing or stale
        subprocess.run([apt, "update"], capture_output=True, env=env, check=False)  # noqa: S603
        result = install_wrk()
    if result.returncode != 0:
        print(f"apt-get install wrk failed: {result.stderr.strip()[-300:]}", file=sys.stderr)
    return shutil.which("wrk")


@dataclass
class LoadGenerator:
    """wrk, or the Python fallback `benchmarks/http_load.py` in a process of its own."""

    wrk: str | None
    threads: int = 1

    @property
    def name(self) -> str:
        if self.wrk is None:
            return "benchmarks/http_load.py (Python asyncio; wrk unavailable)"
        version = subprocess.run(  # noqa: S603 (fixed commands of this benchmark)
            [self.wrk, "--version"], capture_output=True, text=True, check=False
        ).stdout.splitlines()
        return (version[0].split(" Copyright")[0] if version else "wrk") + (
            f", {self.threads} thread{'s' * (self.threads > 1)}"
        )

    def run(
        self, script: str, url: str, script_args: Sequence[str], connections: int, seconds: float
    ) -> dict[str, Any]:
        """Drive `url` for `seconds` with `connections` keep-alive connections; the result.

        The third script argument (the run prefix of request ids and idempotency keys) gets a
        suffix of its own for every run: a request id sent again with another body is refused.
        """
        script_args = list(script_args)
        script_args[2] = f"{script_args[2]}-{time.time_ns()}"
        if self.wrk is not None:
            command = [
                self.wrk,
                f"-t{min(self.threads, connections)}",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "30s",
                "--latency",
                "-s",
                str(WRK_SCRIPTS / f"{script}.lua"),
                url,
                "--",
                *script_args,
            ]
        else:
            command = [
                sys.executable,
                str(BENCHMARKS / "http_load.py"),
                "--script",
                script,
                "--url",
                url,
                "--connections",
                str(connections),
                "--seconds",
                str(seconds),
                "--",
                *script_args,
            ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        for line in result.stdout.splitlines():
            if line.startswith("WRK_RESULT "):
                parsed: dict[str, Any] = json.loads(line[len("WRK_RESULT ") :])
                return parsed
        raise RuntimeError(
            f"load generator failed ({result.returncode}):\n{result.stdout[-2000:]}"
            f"\n{result.stderr[-2000:]}"
        )


# --- databases --------------------------------------------------------------------------------


def _cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(  # noqa: S603 (fixed commands of this benchmark)
        [sys.executable, "-m", "bandit_platform.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"bandit-platform {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        )
    return result.stdout


def set_up_demo(database_url: str) -> str:
    """Migrate a database, create and start the demo experiment; return an all-scopes key."""
    env = {**os.environ, "DATABASE_URL": database_url, "BANDIT_PSEUDONYM_KEY": PSEUDONYM_KEY}
    output = _cli(env, "demo", "--setup-only", "--no-traffic")
    match = re.search(r"\b(bpk_\S+)", output)
    if match is None:
        raise RuntimeError(f"no API key in the demo's output:\n{output}")
    return match.group(1)


class Databases:
    """Fresh databases holding the demo experiment: one template per kind, copied per server.

    SQLite: files in a temporary folder. PostgreSQL: `CREATE DATABASE ... TEMPLATE ...` on the
    given server; every database this run created is dropped at the end.
    """

    def __init__(self, folder: Path, run_id: str, postgres_url: str) -> None:
        self.folder = folder
        self.run_id = run_id
        self.postgres_url = postgres_url
        self.keys: dict[str, str] = {}
        self.created: list[str] = []
        self._sqlite_template = folder / "template.db"
        self._copies = 0

    def _admin(self) -> Any:
        import psycopg

        url = self.postgres_url.replace("postgresql+psycopg://", "postgresql://")
        return psycopg.connect(url, autocommit=True, connect_timeout=10)

    def _postgres_url(self, name: str) -> str:
        import sqlalchemy as sa

        url = sa.make_url(self.postgres_url).set(database=name)
        return url.render_as_string(hide_password=False)

    def prepare(self, kind: str) -> None:
        if kind in self.keys:
            return
        if kind == "sqlite":
            self.keys[kind] = set_up_demo(f"sqlite:///{self._sqlite_template}")
        else:
            name = f"bench_{self.run_id}_template"
            with self._admin() as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            self.created.append(name)
            self.keys[kind] = set_up_demo(self._postgres_url(name))

    def fresh(self, kind: str) -> tuple[str, str | None]:
        """(URL, PostgreSQL database name or None) of a new copy of the template."""
        self.prepare(kind)
        self._copies += 1
        if kind == "sqlite":
            path = self.folder / f"service-{self._copies}.db"
            for suffix in ("", "-wal", "-shm"):
                source = Path(f"{self._sqlite_template}{suffix}")
                if source.exists():
                    shutil.copy(source, f"{path}{suffix}")
            return f"sqlite:///{path}", None
        name = f"bench_{self.run_id}_{self._copies}"
        with self._admin() as admin:
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "bench_{self.run_id}_template"')
        self.created.append(name)
        return self._postgres_url(name), name

    def postgres_version(self) -> str | None:
        try:
            with self._admin() as admin:
                row = admin.execute("SHOW server_version").fetchone()
        except Exception:  # the table says "not measured" instead
            return None
        return None if row is None else str(row[0])

    def drop_all(self) -> None:
        if not self.created:
            return
        try:
            with self._admin() as admin:
                for name in reversed(self.created):
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception as exc:  # never hide the results behind a cleanup problem
            print(f"could not drop {self.created}: {exc}", file=sys.stderr)
        self.created.clear()


# --- servers ----------------------------------------------------------------------------------


@dataclass
class Running:
    """A server process (and its workers) started by this benchmark."""

    group: Group
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    database_name: str | None = None

    def cpu(self) -> tuple[float, dict[int, float]]:
        """(server tree CPU seconds, each database backend's CPU seconds) now."""
        database = postgres_backends_cpu_seconds(self.database_name) if self.database_name else {}
        return tree_cpu_seconds(self.process.pid), database

    def answers(self) -> Counter[str]:
        """`path status` counts from the server's access log (empty when it has none)."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return Counter()
        found = re.findall(r'"POST (/v1/\w+) HTTP/[\d.]+" (\d{3})', text)
        return Counter(f"{path} {status}" for path, status in found)


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 (local http)
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def start_server(
    group: Group,
    folder: Path,
    *,
    database_url: str | None = None,
    database_name: str | None = None,
    extra_env: dict[str, str] | None = None,
    profile_out: Path | None = None,
) -> Running:
    """Start a server process in a session of its own and wait until it is ready and quiet."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if group.app == "hello":
        command = [sys.executable, str(BENCHMARKS / "hello_app.py")]
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(BENCHMARKS), env.get("PYTHONPATH", "")) if p
        )
    else:
        assert database_url is not None
        env.update(
            {
                "DATABASE_URL": database_url,
                "BANDIT_PSEUDONYM_KEY": PSEUDONYM_KEY,
                "BANDIT_LEARNER": "on",
                "BANDIT_RATE_LIMIT_PER_SECOND": "0",
                **(extra_env or {}),
            }
        )
        if profile_out is not None:
            command = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--profile-server",
                str(profile_out),
            ]
        else:
            command = [sys.executable, "-m", "bandit_platform.cli", "serve"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    if profile_out is None:
        command += ["--workers", str(group.workers), "--server", group.server]
        if not SERVER_OPTIONS["access_log"]:
            command.append("--no-access-log")
    log = folder / f"server-{port}.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(  # noqa: S603 (fixed commands of this benchmark)
            command,
            env=env,
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Running(group, process, f"http://127.0.0.1:{port}", log, database_name)
    try:
        _wait_ready(running)
    except BaseException:
        stop_server(running)
        raise
    return running


def _wait_ready(running: Running, timeout: float = 180.0) -> None:
    """Ready: `/health/ready` answers 200, and then every worker has finished starting (the
    server tree used under a tenth of a CPU over half a second)."""
    deadline = time.monotonic() + timeout
    while True:
        if running.process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{running.log.read_text()[-3000:]}")
        log = running.log.read_text(errors="replace")
        if log.count("] died") >= 3:
            # uvicorn's supervisor kills a worker that does not answer its health check in
            # time (`cli.WORKER_HEALTHCHECK_SECONDS`); one that keeps dying never serves.
            raise RuntimeError(
                "workers killed while starting (no answer to uvicorn's worker health check)"
                f"\n{log[-1500:]}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not ready in {timeout:.0f} s\n{log[-1500:]}")
        try:
            if _get(f"{running.url}/health/ready") == 200:
                break
        except OSError:
            pass
        time.sleep(0.25)
    while time.monotonic() < deadline:
        before = tree_cpu_seconds(running.process.pid)
        time.sleep(0.5)
        if tree_cpu_seconds(running.process.pid) - before < 0.05:
            return
    raise RuntimeError("the server never became quiet after starting")


def settle(running: Running, timeout: float = 60.0) -> None:
    """Wait until the server has finished the requests a previous run left in flight (wrk
    stops without waiting for its last answers): its tree under a tenth of a CPU."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = tree_cpu_seconds(running.process.pid)
        time.sleep(0.3)
        if tree_cpu_seconds(running.process.pid) - before < 0.03:
            return


def stop_server(running: Running) -> None:
    """SIGTERM to the server (it stops its workers), then SIGKILL to its session if needed."""
    process = running.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    # Workers that outlived their parent (the session is this server's alone).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


# --- request bodies ---------------------------------------------------------------------------


def decision_template(folder: Path) -> Path:
    """The example decision with placeholders for the customer and the request id."""
    body = json.loads((EXAMPLES / "decision.json").read_text())
    body["customer_id"] = "__CUSTOMER__"
    body["request_id"] = "__REQUEST__"
    path = folder / "decision-template.json"
    path.write_text(json.dumps(body, separators=(",", ":")))
    return path


def outcome_template(folder: Path) -> Path:
    """The example outcome (a click, now) with placeholders for the decision and the key."""
    body = json.loads((EXAMPLES / "outcome.json").read_text())
    body["decision_id"] = "__DECISION__"
    body["idempotency_key"] = "__KEY__"
    body["occurred_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    path = folder / "outcome-template.json"
    path.write_text(json.dumps(body, separators=(",", ":")))
    return path


def smoke_request(url: str, template: Path, api_key: str) -> None:
    """One decision before the load, so that a refused request fails loudly, not as a rate."""
    body = template.read_text().replace("__CUSTOMER__", "bench-smoke")
    body = body.replace("__REQUEST__", f"smoke-{time.time_ns()}")
    request = urllib.request.Request(  # noqa: S310 (local http)
        f"{url}/v1/decisions",
        data=body.encode(),
        headers={"Content-Type": "application/json", "X-API-Key": api_key},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310
            json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"a decision failed: {exc.code} {exc.read()[:500]!r}") from None


# --- one run ----------------------------------------------------------------------------------


def measure(
    load: LoadGenerator,
    running: Running,
    path: str,
    script: str,
    script_args: Sequence[str],
    connections: int,
    seconds: float,
) -> Measurement:
    """One load run with the server's CPU time and the host's busy share around it."""
    cpu_before, database_before = running.cpu()
    busy_before, total_before = host_cpu_times()
    result = load.run(script, running.url, script_args, connections, seconds)
    busy_after, total_after = host_cpu_times()
    cpu_after, database_after = running.cpu()
    requests = int(result["requests"])
    duration = result["duration_us"] / 1e6
    errors = sum(
        int(result[k])
        for k in (
            "connect_errors",
            "read_errors",
            "write_errors",
            "status_errors",
            "timeouts",
        )
    )
    per_request = 1000.0 / max(requests, 1)
    group = running.group
    return Measurement(
        path=path,
        server=group.server,
        workers=group.workers,
        database=group.database,
        connections=connections,
        requests=requests,
        seconds=duration,
        rps=requests / duration if duration > 0 else 0.0,
        p50_ms=result["p50_us"] / 1000,
        p90_ms=result["p90_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        p999_ms=result["p999_us"] / 1000,
        mean_ms=result["latency_mean_us"] / 1000,
        max_ms=result["latency_max_us"] / 1000,
        errors=errors,
        server_cpu_ms_per_request=(cpu_after - cpu_before) * per_request,
        database_cpu_ms_per_request=(
            backends_cpu_delta(database_before, database_after) * per_request
            if running.database_name
            else None
        ),
        host_busy=(busy_after - busy_before) / max(total_after - total_before, 1),
    )


def _progress(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", file=sys.stderr, flush=True)


def collect_decision_ids(
    load: LoadGenerator,
    running: Running,
    folder: Path,
    template: Path,
    api_key: str,
    seconds: float,
) -> Path:
    """Make decisions for `seconds` and keep their ids (from the answers) in one file."""
    prefix = folder / f"ids-{running.process.pid}"
    load.run(
        "decide",
        running.url,
        [str(template), api_key, f"ids{time.time_ns()}", str(CUSTOMER_POOL), str(prefix)],
        16,
        seconds,
    )
    ids: list[str] = []
    for part in sorted(folder.glob(f"{prefix.name}.[0-9]*")):
        ids.extend(line for line in part.read_text().splitlines() if line)
    if not ids:
        raise RuntimeError("no decision ids were collected for the outcome run")
    path = folder / f"{prefix.name}.txt"
    path.write_text("\n".join(ids) + "\n")
    return path


def run_group(
    group: Group,
    plan: Plan,
    load: LoadGenerator,
    databases: Databases,
    folder: Path,
    extra_env: dict[str, str],
    notes: list[str],
) -> list[Measurement]:
    """Start one server, warm it up, measure each connection count, stop it."""
    template = decision_template(folder)
    database_url = database_name = None
    api_key = "unused"  # pragma: allowlist secret
    if group.app == "service":
        assert group.database is not None
        database_url, database_name = databases.fresh(group.database)
        api_key = databases.keys[group.database]
    _progress(f"starting {group.label}")
    running = start_server(
        group,
        folder,
        database_url=database_url,
        database_name=database_name,
        extra_env=extra_env,
    )
    results: list[Measurement] = []
    try:
        if group.app == "service":
            smoke_request(running.url, template, api_key)
        path = "decide" if group.app == "service" else "hello"
        run = f"r{time.time_ns()}"
        decide_args = [str(template), api_key, run, str(CUSTOMER_POOL)]
        load.run("decide", running.url, decide_args, max(plan.connections), plan.warmup)
        for connections in plan.connections:
            settle(running)
            measurement = measure(
                load, running, path, "decide", decide_args, connections, plan.seconds
            )
            _progress(
                f"  {path} c={connections}: {measurement.rps:,.0f} req/s, "
                f"p50 {measurement.p50_ms:.1f} ms, p99 {measurement.p99_ms:.1f} ms, "
                f"{measurement.server_cpu_ms_per_request:.2f} ms CPU/req, "
                f"errors {measurement.errors}"
            )
            results.append(measurement)
        if group.outcomes:
            settle(running)
            ids = collect_decision_ids(
                load, running, folder, template, api_key, max(1.0, plan.warmup)
            )
            outcome_args = [str(outcome_template(folder)), api_key, f"o{time.time_ns()}", str(ids)]
            load.run("outcome", running.url, outcome_args, max(plan.outcome_connections), 1.0)
            for connections in plan.outcome_connections:
                settle(running)
                measurement = measure(
                    load, running, "outcome", "outcome", outcome_args, connections, plan.seconds
                )
                _progress(
                    f"  outcome c={connections}: {measurement.rps:,.0f} req/s, "
                    f"p99 {measurement.p99_ms:.1f} ms, errors {measurement.errors}"
                )
                results.append(measurement)
        answers = running.answers()
        notes.append(f"{group.label}: access log {'on' if answers else 'off'}")
        refused = {k: v for k, v in answers.items() if not k.endswith((" 200", " 201"))}
        if refused:
            notes.append(f"{group.label}: answers other than 200/201: {dict(refused)}")
    finally:
        stop_server(running)
    return results


# --- ratios, targets and the table ------------------------------------------------------------


def _find(results: list[Measurement], *key: Any) -> Measurement | None:
    for measurement in results:
        if measurement.key == key:
            return measurement
    return None


def _config(m: Measurement) -> str:
    database = f", {m.database}" if m.database else ""
    return f"{m.server}, {m.workers}w{database}, c={m.connections}"


def checks(results: list[Measurement]) -> list[Check]:
    """Every target, for every configuration it applies to."""
    found: list[Check] = []
    for m in results:
        if m.path != "decide":
            continue
        hello = _find(results, "hello", m.server, m.workers, None, m.connections)
        if m.workers == 1 and hello is not None and hello.rps > 0:
            ratio = m.rps / hello.rps
            found.append(
                Check(
                    "decide / hello req/s, 1 worker",
                    _config(m),
                    ratio,
                    f">= {DECIDE_OVER_HELLO:.2f}",
                    ratio >= DECIDE_OVER_HELLO,
                    f">= {DECIDE_OVER_HELLO_AMBITION:.2f}",
                    ratio >= DECIDE_OVER_HELLO_AMBITION,
                )
            )
        if m.p50_ms > 0:
            tail = m.p99_ms / m.p50_ms
            found.append(
                Check("decide p99 / p50", _config(m), tail, f"<= {P99_OVER_P50:.0f}", tail <= 4)
            )
        if m.workers == 2:
            one = _find(results, "decide", m.server, 1, m.database, m.connections)
            if one is not None and one.rps > 0:
                ratio = m.rps / one.rps
                found.append(
                    Check(
                        "decide two workers / one",
                        _config(m).replace("2w", "2w/1w"),
                        ratio,
                        f">= {TWO_OVER_ONE:.1f}",
                        ratio >= TWO_OVER_ONE,
                    )
                )
    for m in results:
        if m.path == "outcome":
            found.append(
                Check(
                    "outcomes / s",
                    _config(m),
                    m.rps,
                    f">= {OUTCOMES_PER_SECOND:,.0f}",
                    m.rps >= OUTCOMES_PER_SECOND,
                )
            )
    return found


def comparisons(results: list[Measurement]) -> list[tuple[str, str, float]]:
    """Ratios with no target: uvicorn / granian, SQLite / PostgreSQL, hello two / one."""
    rows: list[tuple[str, str, float]] = []
    for m in results:
        if m.server == "uvicorn":
            other = _find(results, m.path, "granian", m.workers, m.database, m.connections)
            if other is not None and other.rps > 0:
                rows.append(("uvicorn / granian req/s", _config(m), m.rps / other.rps))
    for m in results:
        if m.database == "sqlite":
            other = _find(results, m.path, m.server, m.workers, "postgresql", m.connections)
            if other is not None and other.rps > 0:
                rows.append((f"{m.path}: SQLite / PostgreSQL req/s", _config(m), m.rps / other.rps))
    for m in results:
        if m.path in ("hello", "outcome") and m.workers == 2:
            one = _find(results, m.path, m.server, 1, m.database, m.connections)
            if one is not None and one.rps > 0:
                rows.append((f"{m.path} two workers / one", _config(m), m.rps / one.rps))
    return rows


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def table(results: list[Measurement]) -> str:
    lines = [
        "| path | server | workers | database | conns | req/s | x hello | p50 ms | p99 ms "
        "| p99/p50 | server CPU ms/req | db CPU ms/req | host CPU busy | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in results:
        hello = _find(results, "hello", m.server, m.workers, None, m.connections)
        versus = f"{m.rps / hello.rps:.2f}" if hello and hello.rps > 0 and m.path != "hello" else ""
        database_cpu = (
            "" if m.database_cpu_ms_per_request is None else f"{m.database_cpu_ms_per_request:.2f}"
        )
        lines.append(
            f"| {m.path} | {m.server} | {m.workers} | {m.database or ''} | {m.connections} "
            f"| {m.rps:,.0f} | {versus} | {_ms(m.p50_ms)} | {_ms(m.p99_ms)} "
            f"| {m.p99_ms / m.p50_ms if m.p50_ms else 0:.1f} "
            f"| {m.server_cpu_ms_per_request:.2f} | {database_cpu} | {m.host_busy:.0%} "
            f"| {m.errors} |"
        )
    return "\n".join(lines)


def checks_table(found: list[Check]) -> str:
    lines = [
        "| target | configuration | value | goal | | ambition | |",
        "|---|---|---|---|---|---|---|",
    ]
    for check in found:
        value = f"{check.value:,.0f}" if check.value >= 100 else f"{check.value:.2f}"
        ambition = ""
        if check.ambition_met is not None:
            ambition = "met" if check.ambition_met else "not met"
        lines.append(
            f"| {check.target} | {check.configuration} | {value} | {check.goal} "
            f"| **{'met' if check.met else 'not met'}** | {check.ambition} | {ambition} |"
        )
    return "\n".join(lines)


def header(info: dict[str, Any], plan: Plan, load: LoadGenerator, command: str) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    load_average = ", ".join(f"{x:.2f}" for x in info["load_average_at_start"])
    return "\n".join(
        [
            f"date: {info['date']}",
            f"machine: {info['cpu']}, {info['vcpus']} vCPUs ({info['vcpus_usable']} usable), "
            f"Linux {info['kernel']}, load average at start {load_average}",
            f"Python {info['python']}; {packages}",
            f"PostgreSQL: {info.get('postgresql') or 'not used'}; commit {info['commit']}",
            f"load generator: {load.name}; {plan.seconds:g} s per configuration after a "
            f"{plan.warmup:g} s warm-up per server",
            "service: bandit-platform serve, learner on (BANDIT_LEARNER=on), per-key rate "
            "limits off (BANDIT_RATE_LIMIT_PER_SECOND=0)"
            + (f", {info['extra_env']}" if info.get("extra_env") else ""),
            f"access log (both apps): {info.get('access_log', 'on')}",
            f"command: {command}",
        ]
    )


# --- the profile ------------------------------------------------------------------------------

#: Components, tried on the innermost frame first: the first frame from the leaf outwards whose
#: file matches decides. Frames of the learner thread all count as the learner.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("VW (predict, example text)", ("vowpal_wabbit_next", "bandit_platform/policies/vw_adapter")),
    ("database: SQLAlchemy + driver", ("/sqlalchemy/", "/sqlite3/", "/psycopg", "/sqlmodel/")),
    ("database: repositories, engine", ("bandit_platform/storage/",)),
    ("auth (API key)", ("bandit_platform/api/auth", "bandit_platform/service/apikeys")),
    (
        "decision service (caps, eligibility, split, draw)",
        (
            "bandit_platform/service/decisions",
            "bandit_platform/policies/",
            "bandit_platform/features/",
            "bandit_platform/domain/",
        ),
    ),
    ("outcome service", ("bandit_platform/service/outcomes",)),
    ("group commit (decision writer)", ("bandit_platform/service/decision_writer",)),
    ("API layer (controllers, schemas, errors)", ("bandit_platform/api/",)),
    ("service, other", ("bandit_platform/",)),
    ("Litestar (routing, DI, guards, JSON)", ("/litestar/", "/msgspec/")),
    ("HTTP server, asyncio, threads", ("/uvicorn/", "/h11/", "/granian/", "/asyncio/", "/anyio/")),
)
LEARNER = ("bandit_platform/service/learner", "bandit_platform/service/leader")


def _component(stack: Sequence[tuple[str, str, int]]) -> str:
    if any(any(p in frame[0] for p in LEARNER) for frame in stack):
        return "learner thread"
    for filename, _, _ in stack:
        for name, patterns in COMPONENTS:
            if any(p in filename for p in patterns):
                return name
    return "other (stdlib)"


#: Where a thread waits without using CPU: the event loop's select, locks, queues, sleeps.
IDLE_FILES = ("/selectors.py", "/threading.py", "/queue.py")


def _idle(stack: Sequence[tuple[str, str, int]]) -> bool:
    filename, name, _ = stack[0]
    return filename.endswith(IDLE_FILES) or name in ("sleep", "_worker")


class Sampler(threading.Thread):
    """Samples every thread's Python stack and charges it the CPU time the thread used since
    the previous sample (each thread's own CPU clock), so that blocked threads cost nothing.

    pyinstrument and cProfile see one thread; a decision crosses the event loop, a worker
    thread and the group-commit writer, so this one looks at all of them. A thread found
    waiting (select, a lock, a queue) spent the CPU of the interval before it went to wait:
    that CPU is charged to the last stack it was seen working in. Wall-clock samples of the
    decision handler are kept too, to show where a decision waits rather than computes."""

    def __init__(self, interval: float = 0.001) -> None:
        super().__init__(name="benchmark-sampler", daemon=True)
        self.interval = interval
        self.recording = threading.Event()
        self.stopped = threading.Event()
        self.cpu_self: dict[tuple[str, str, int], float] = defaultdict(float)
        self.cpu_inclusive: dict[tuple[str, str, int], float] = defaultdict(float)
        self.cpu_components: dict[str, float] = defaultdict(float)
        self.cpu_threads: dict[str, float] = defaultdict(float)
        self.decide_wall: Counter[str] = Counter()
        self.samples = 0
        self.started_at = 0.0
        self.stopped_at = 0.0
        self._busy: dict[int, list[tuple[str, str, int]]] = {}

    def run(self) -> None:
        me = threading.get_ident()
        last: dict[int, float] = {}
        while not self.stopped.is_set():
            time.sleep(self.interval)
            recording = self.recording.is_set()
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                try:
                    cpu = time.clock_gettime(time.pthread_getcpuclockid(ident))
                except OSError:
                    continue
                previous = last.get(ident)
                last[ident] = cpu
                if recording and previous is not None:
                    self._sample(ident, names.get(ident, "?"), frame, cpu - previous)

    def _sample(self, ident: int, thread: str, frame: FrameType | None, cpu: float) -> None:
        stack: list[tuple[str, str, int]] = []
        while frame is not None:
            code = frame.f_code
            stack.append((code.co_filename, code.co_name, code.co_firstlineno))
            frame = frame.f_back
        if not stack:
            return
        self.samples += 1
        in_decide = any(
            name == "decide" and filename.endswith("api/controllers.py")
            for filename, name, _ in stack
        )
        if in_decide:
            self.decide_wall[_component(stack)] += 1
        if _idle(stack):
            stack = self._busy.pop(ident, stack)
        else:
            self._busy[ident] = stack
        if cpu <= 0:
            return
        self.cpu_components[_component(stack)] += cpu
        self.cpu_threads[re.sub(r"[\s_-]*\d+$", "", thread) or thread] += cpu
        self.cpu_self[stack[0]] += cpu
        for key in set(stack):
            self.cpu_inclusive[key] += cpu

    def report(self) -> dict[str, Any]:
        def top(values: dict[Any, float], n: int | None = None) -> list[tuple[Any, float]]:
            return sorted(values.items(), key=lambda item: -item[1])[:n]

        def frames(values: dict[tuple[str, str, int], float], n: int) -> list[dict[str, Any]]:
            return [
                {"function": f"{_short(f)}:{line} {name}", "cpu_seconds": seconds}
                for (f, name, line), seconds in top(values, n)
            ]

        own = {k: v for k, v in self.cpu_inclusive.items() if "bandit_platform/" in k[0]}
        return {
            "seconds": self.stopped_at - self.started_at,
            "samples": self.samples,
            "cpu_seconds": sum(self.cpu_components.values()),
            "components": dict(top(self.cpu_components)),
            "threads": dict(top(self.cpu_threads)),
            "decide_wall_samples": dict(self.decide_wall.most_common()),
            "self": frames(self.cpu_self, 25),
            "inclusive_platform": frames(own, 30),
        }


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    with contextlib.suppress(ValueError):
        return str(Path(filename).relative_to(REPO))
    return filename


def profile_server(out: Path, host_address: str, port: int) -> int:
    """The service in this process, one uvicorn worker, under the sampler: SIGUSR1 starts the
    recording, SIGUSR2 stops it and writes the report to `out`."""
    from bandit_platform import cli

    sampler = Sampler()

    def start(*_: Any) -> None:
        sampler.started_at = time.monotonic()
        sampler.recording.set()

    def stop(*_: Any) -> None:
        sampler.recording.clear()
        sampler.stopped_at = time.monotonic()
        sampler.stopped.set()
        sampler.join()
        partial = out.with_suffix(".partial")
        partial.write_text(json.dumps(sampler.report()))
        partial.rename(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sampler.start()
    cli._serve(host_address, port, 1, "uvicorn", access_log=False)
    return 0


def run_profile(
    database: str,
    plan: Plan,
    load: LoadGenerator,
    databases: Databases,
    folder: Path,
    extra_env: dict[str, str],
    connections: int,
) -> dict[str, Any]:
    group = Group("service", "uvicorn", 1, database)
    database_url, database_name = databases.fresh(database)
    api_key = databases.keys[database]
    template = decision_template(folder)
    out = folder / "profile.json"
    _progress(f"starting {group.label} in-process under the sampling profiler")
    running = start_server(
        group,
        folder,
        database_url=database_url,
        database_name=database_name,
        extra_env=extra_env,
        profile_out=out,
    )
    try:
        smoke_request(running.url, template, api_key)
        decide_args = [str(template), api_key, f"p{time.time_ns()}", str(CUSTOMER_POOL)]
        load.run("decide", running.url, decide_args, connections, plan.warmup)
        settle(running)
        running.process.send_signal(signal.SIGUSR1)
        measurement = measure(
            load, running, "decide", "decide", decide_args, connections, plan.seconds
        )
        running.process.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not out.exists():
            raise RuntimeError(f"no profile written:\n{running.log.read_text()[-3000:]}")
        report: dict[str, Any] = json.loads(out.read_text())
    finally:
        stop_server(running)
    report["measurement"] = asdict(measurement)
    report["configuration"] = f"{group.label}, c={connections}"
    return report


def format_profile(report: dict[str, Any]) -> str:
    m = report["measurement"]
    total = report["cpu_seconds"] or 1.0
    lines = [
        f"profile: {report['configuration']}, {m['rps']:,.0f} req/s under the profiler "
        f"({m['requests']:,} decisions, {report['samples']:,} samples, "
        f"{total:.1f} CPU s in {report['seconds']:.1f} s)",
        "",
        "CPU by component (innermost recognised frame):",
        "",
        "| component | share of CPU | ms per decision |",
        "|---|---|---|",
    ]
    for name, seconds in report["components"].items():
        lines.append(
            f"| {name} | {seconds / total:.1%} | {1000 * seconds / max(m['requests'], 1):.3f} |"
        )
    lines += ["", "CPU by thread:", ""]
    lines += [f"- {name}: {seconds / total:.1%}" for name, seconds in report["threads"].items()]
    wall = report["decide_wall_samples"]
    wall_total = sum(wall.values()) or 1
    lines += ["", "Wall time inside the decision handler (worker threads, CPU or waiting):", ""]
    lines += [f"- {name}: {count / wall_total:.1%}" for name, count in wall.items()]
    lines += ["", "Top functions, self CPU:", ""]
    lines += [
        f"  {row['cpu_seconds'] / total:6.1%}  {row['function']}" for row in report["self"][:20]
    ]
    lines += ["", "Top platform functions, inclusive CPU:", ""]
    lines += [
        f"  {row['cpu_seconds'] / total:6.1%}  {row['function']}"
        for row in report["inclusive_platform"][:25]
    ]
    return "\n".join(lines)


# --- the plan and main ------------------------------------------------------------------------


def build_plan(args: argparse.Namespace) -> Plan:
    plan = Plan(
        seconds=args.seconds,
        warmup=args.warmup,
        connections=args.connections,
        outcome_connections=args.outcome_connections,
    )
    primary = args.servers[0]
    for server in args.servers:
        for workers in args.workers:
            plan.groups.append(Group("hello", server, workers))
            for database in args.databases:
                if database == "postgresql" and server != primary and not args.full:
                    continue
                outcomes = not args.no_outcomes and server == primary
                plan.groups.append(Group("service", server, workers, database, outcomes))
    return plan


def _connections(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive integers, e.g. 16,64")
    return values


def _names(allowed: set[str]) -> Any:
    def parse(text: str) -> list[str]:
        values = [part.strip() for part in text.split(",") if part.strip()]
        if not values or set(values) - allowed:
            raise argparse.ArgumentTypeError(f"expected some of {sorted(allowed)}")
        return values

    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="The decision path over HTTP against a hello-world Litestar app.",
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="load per configuration (default 10)"
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="unrecorded load per server first (default 2)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run of the whole matrix: 2 s per configuration, 1 s warm-up",
    )
    parser.add_argument("--connections", type=_connections, default=[16, 64])
    parser.add_argument("--outcome-connections", type=_connections, default=[64])
    parser.add_argument(
        "--servers", type=_names({"uvicorn", "granian"}), default=["uvicorn", "granian"]
    )
    parser.add_argument("--workers", type=_connections, default=[1, 2])
    parser.add_argument(
        "--databases",
        type=_names({"sqlite", "postgresql"}),
        default=["sqlite", "postgresql"],
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="PostgreSQL on every server, not only the first (default: uvicorn, as serve)",
    )
    parser.add_argument("--no-outcomes", action="store_true", help="skip outcome ingestion")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES),
        help="a PostgreSQL server to create the run's databases on (and drop them)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the service, e.g. BANDIT_GROUP_COMMIT=off (repeatable)",
    )
    parser.add_argument(
        "--wrk-threads", type=int, default=1, help="wrk threads (default 1: CPU for the server)"
    )
    parser.add_argument(
        "--load-generator",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="auto: wrk, installed with apt when missing, else the Python generator",
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="keep the server's per-request access log on (both apps; default off, as "
        "`serve --no-access-log`)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--keep", type=Path, help="keep the servers' logs and bodies in this folder"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile the decision path under load (uvicorn, one worker, in-process) instead",
    )
    parser.add_argument("--profile-database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--profile-connections", type=int, default=16)
    parser.add_argument("--profile-server", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup = 2.0, 1.0
    return args


@contextlib.contextmanager
def _workspace(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="decide-http-") as name:
        yield Path(name)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    SERVER_OPTIONS["access_log"] = args.access_log
    if args.profile_server is not None:
        return profile_server(args.profile_server, args.host, args.port)
    command = shlex.join([".venv/bin/python", "benchmarks/decide_http.py", *sys.argv[1:]])
    extra_env = dict(item.split("=", 1) for item in args.server_env)
    plan = build_plan(args)
    if args.dry_run:
        for group in plan.groups:
            print(group.label + (" + outcomes" if group.outcomes else ""))
        print(f"about {plan.estimate_seconds() / 60:.1f} min on an idle machine")
        return 0

    wrk = None if args.load_generator == "python" else ensure_wrk(install=True)
    if wrk is None and args.load_generator == "wrk":
        print("error: wrk is not available", file=sys.stderr)
        return 2
    load = LoadGenerator(wrk, threads=args.wrk_threads)
    info = machine()
    info["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    info["extra_env"] = " ".join(args.server_env)
    info["access_log"] = "on" if args.access_log else "off (serve --no-access-log)"
    run_id = f"{os.getpid()}_{int(time.time())}"
    notes: list[str] = []
    results: list[Measurement] = []
    started = time.monotonic()
    with _workspace(args.keep) as folder:
        databases = Databases(folder, run_id, args.postgres_url)
        try:
            wants_postgres = "postgresql" in args.databases or (
                args.profile and args.profile_database == "postgresql"
            )
            if wants_postgres:
                info["postgresql"] = databases.postgres_version()
                if info["postgresql"] is None:
                    notes.append(f"PostgreSQL at {args.postgres_url} unreachable: not measured")
                    plan.groups = [g for g in plan.groups if g.database != "postgresql"]
            if args.profile:
                report = run_profile(
                    args.profile_database,
                    plan,
                    load,
                    databases,
                    folder,
                    extra_env,
                    args.profile_connections,
                )
                print(header(info, plan, load, command))
                print()
                print(format_profile(report))
                if args.json:
                    args.json.write_text(json.dumps({"machine": info, "profile": report}, indent=2))
                return 0
            _progress(
                f"{len(plan.groups)} servers, about {plan.estimate_seconds() / 60:.1f} min "
                "on an idle machine"
            )
            for group in plan.groups:
                try:
                    results.extend(
                        run_group(group, plan, load, databases, folder, extra_env, notes)
                    )
                except RuntimeError as exc:
                    reason = str(exc).splitlines()[0]
                    _progress(f"  {group.label} not measured: {exc}")
                    notes.append(f"{group.label}: NOT MEASURED ({reason})")
        finally:
            databases.drop_all()
    info["load_average_at_end"] = list(os.getloadavg())
    info["run_seconds"] = time.monotonic() - started
    found = checks(results)
    print(header(info, plan, load, command))
    print()
    print(table(results))
    print()
    if found:
        print(checks_table(found))
    ratios = comparisons(results)
    if ratios:
        print()
        print("| comparison | configuration | ratio |\n|---|---|---|")
        for name, configuration, value in ratios:
            print(f"| {name} | {configuration} | {value:.2f} |")
    print()
    for note in sorted(set(notes)):
        print(f"- {note}")
    bad = [m for m in results if m.errors > 0.01 * max(m.requests, 1)]
    for m in bad:
        print(f"- WARNING: {m.path} {_config(m)}: {m.errors} errors of {m.requests} requests")
    print(
        f"- run took {info['run_seconds'] / 60:.1f} min; load average at end "
        + ", ".join(f"{x:.2f}" for x in info["load_average_at_end"])
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "command": command,
                    "plan": {
                        "seconds": plan.seconds,
                        "warmup": plan.warmup,
                        "connections": plan.connections,
                        "outcome_connections": plan.outcome_connections,
                    },
                    "measurements": [asdict(m) for m in results],
                    "checks": [asdict(c) for c in found],
                    "comparisons": [
                        {"comparison": n, "configuration": c, "ratio": v} for n, c, v in ratios
                    ],
                    "notes": sorted(set(notes)),
                },
                indent=2,
            )
        )
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
