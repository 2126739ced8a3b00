"""What the benchmarks share: their own database, the server's settings, CPU accounting
and the way figures are printed.

A benchmark never touches the database it is pointed at: ``--database-url`` (or
``DATABASE_URL``, or with neither the embedded server under ``var/``) names the *server*,
and the benchmark works in its own database on it (``billing_bench`` unless told
otherwise), created when missing and brought up to date with ``manage.py migrate``.
Benchmarks truncate tables freely; that is why they never share a database with anyone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE = "billing_bench"


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL") or None,
        help="The PostgreSQL server to use (default: DATABASE_URL, else the embedded server). "
        "Only its server is used: the benchmark works in its own database (--database).",
    )
    parser.add_argument(
        "--database",
        default=DEFAULT_DATABASE,
        help=f"Name of the benchmark's own database on that server (default {DEFAULT_DATABASE}); "
        "created if missing. Its tables are truncated: never point it at real data.",
    )


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def bench_database_url(*, database_url: str | None, database: str) -> str:
    """A URL to the benchmark database ``database`` on the server of ``database_url`` (or
    the embedded server when None); creates the database when it does not exist."""
    sys.path.insert(0, str(ROOT))
    from config.embedded import DATABASE_NAME, embedded_postgres_url

    # The database the product itself uses there: never the benchmark's.
    product = urlsplit(database_url).path.lstrip("/") if database_url else DATABASE_NAME
    if database == product:
        raise SystemExit(
            f"Refusing to benchmark in {database!r}: the product uses it, and benchmarks "
            "truncate tables. Pick another --database."
        )
    if database_url is None:
        return embedded_postgres_url(database)
    import psycopg

    url = _with_database(database_url, database)
    for maintenance in ("postgres", urlsplit(database_url).path.lstrip("/") or "postgres"):
        try:
            conn = psycopg.connect(_with_database(database_url, maintenance), autocommit=True)
        except psycopg.OperationalError:
            continue
        with conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [database]
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{database}"')
        return url
    raise SystemExit(f"Cannot connect to the server of {database_url} to create {database!r}.")


def django_env(url: str) -> dict[str, str]:
    """The environment for a Django process (migrate, gunicorn) on the benchmark database."""
    return {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
    }


def migrate(url: str) -> float:
    """Bring the benchmark database's schema up to date; returns the seconds it took."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=django_env(url),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise SystemExit(f"manage.py migrate failed:\n{result.stdout}\n{result.stderr}")
    return time.perf_counter() - started


def server_summary(conn) -> str:
    """One line describing the server and the settings that move these figures."""
    version = conn.execute("SHOW server_version").fetchone()[0]
    names = ["shared_buffers", "work_mem", "max_wal_size", "synchronous_commit", "jit"]
    values = ", ".join(f"{n}={conn.execute(f'SHOW {n}').fetchone()[0]}" for n in names)
    return f"PostgreSQL {version} ({values}); {os.cpu_count()} CPU cores"


def checkpoint(conn) -> None:
    """Flush dirty buffers before a timed phase, so one phase does not pay for another's
    writes. Needs superuser (or pg_checkpoint); skipped without it. ``conn`` must be in
    autocommit mode."""
    import psycopg

    with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
        conn.execute("CHECKPOINT")


def safe_url(url: str) -> str:
    """The URL without its password, for printing."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# CPU accounting from /proc, to show where the time went (and that the load generator is
# not the bottleneck). Linux only; elsewhere the figures are simply left out.

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one live process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


@dataclass(frozen=True)
class MachineCpu:
    busy: float  # CPU seconds spent on anything but idle and iowait, all cores
    total: float

    @classmethod
    def read(cls) -> MachineCpu:
        try:
            values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except OSError:
            return cls(0.0, 0.0)
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        total = sum(values[:8])
        return cls((total - idle) / _CLOCK_TICKS, total / _CLOCK_TICKS)

    def __sub__(self, other: MachineCpu) -> MachineCpu:
        return MachineCpu(self.busy - other.busy, self.total - other.total)


def figure(label: str, text: str) -> None:
    """Print one figures line: ``label: text``, labels aligned, flushed at once."""
    print(f"{label + ':':<34} {text}", flush=True)


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "inf"


def backend_cpu_seconds(conn) -> dict[int, float]:
    """CPU seconds so far of each other client backend connected to this database, by pid
    (read from /proc, so only for a server on this machine; empty otherwise)."""
    pids = [
        row[0]
        for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
    ]
    return {pid: process_cpu_seconds(pid) for pid in pids if is_local_postgres(pid)}


def is_local_postgres(pid: int) -> bool:
    """Whether ``pid`` is a PostgreSQL process on this machine (a server elsewhere, or in
    another pid namespace, has pids that mean nothing here)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip().startswith("postgres")
    except OSError:
        return False


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between two ``backend_cpu_seconds`` readings (a backend that appeared in
    between counts from zero)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def bench_lock(conn, database: str) -> None:
    """Hold, for the life of ``conn``, the lock that keeps a second benchmark out of this
    database (each one truncates the event tables the other is measuring)."""
    got = conn.execute(
        "SELECT pg_try_advisory_lock(hashtextextended('bench ' || current_database(), 0))"
    ).fetchone()[0]
    if not got:
        raise SystemExit(
            f"Another benchmark is running in database {database!r}; wait for it, or give "
            "this one its own with --database."
        )


def horizon_wait(conn, xid: int | None = None, timeout: float = 300) -> float:
    """Wait until every transaction up to ``xid`` (default: every one started so far) has
    finished, server-wide: the rollup's and the rating's horizons only move past the
    oldest open transaction, on any database of the server. Returns the seconds waited;
    on timeout, fails naming the oldest transaction still open."""
    if xid is None:
        xid = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]
    started = time.perf_counter()
    while (
        conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint").fetchone()[0]
        <= xid
    ):
        if time.perf_counter() - started > timeout:
            oldest = conn.execute(
                "SELECT pid, datname, state, xact_start, left(query, 80) FROM pg_stat_activity "
                "WHERE backend_xid IS NOT NULL ORDER BY age(backend_xid) DESC LIMIT 1"
            ).fetchone()
            raise SystemExit(
                f"an open transaction on the server held the horizon for {timeout:.0f} s: {oldest}"
            )
        time.sleep(0.05)
    return time.perf_counter() - started


# -- gunicorn -----------------------------------------------------------------------

CHILDREN_KNOWN = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    """gunicorn serving config.wsgi on 127.0.0.1 for the database at ``url``, in its own
    process group, so that ``stop`` ends the master and its workers and nothing else.
    ``options``: gunicorn's own (worker class, threads, …); ``env``: added to Django's."""

    def __init__(
        self,
        *,
        url: str,
        workers: int,
        log: Path,
        options: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.url, self.workers, self.log = url, workers, log
        self.options, self.env = options, env or {}
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        command = [
            sys.executable, "-m", "gunicorn", "config.wsgi:application",
            "--bind", f"127.0.0.1:{self.port}",
            "--workers", str(self.workers),
            *self.options,
            "--timeout", "120", "--graceful-timeout", "10",
            "--log-level", "warning",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**django_env(self.url), **self.env},
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited at start:\n{self.log.read_text()[-3000:]}")
            forked = children_of(self.process.pid)
            # (without /proc/<pid>/task/<pid>/children, listening is enough: the clients'
            # warm-up requests wait for the workers anyway)
            if len(forked) >= self.workers or not CHILDREN_KNOWN:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not listen within {timeout} s")

    def worker_cpu_seconds(self) -> float:
        if self.process is None:
            return 0.0
        return sum(process_cpu_seconds(pid) for pid in children_of(self.process.pid))

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
