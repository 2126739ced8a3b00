#!/usr/bin/env python
"""Benchmark of event ingestion: ``POST /api/v1/events`` end to end, against raw COPY.

    .venv/bin/python bench/ingest.py [--events 200000] [--batch 1000] [--clients 8] [--workers 4]

1. Works in its own database (``billing_bench`` on the server of ``--database-url`` /
   ``DATABASE_URL`` / the embedded server), migrated with ``manage.py migrate``.
2. Starts gunicorn (``config.wsgi``, ``--workers`` sync workers) on 127.0.0.1 and a free
   port, and creates an ingest API key with a rate limit far above the load.
3. Generates ``--events`` realistic CloudEvents (LLM token events and API request events,
   distinct ids, times over the 30 days before now) and pre-encodes them as JSON batch
   bodies of ``--batch`` events, before anything is timed.
4. Endpoint: ``--clients`` client *processes*, each with one keep-alive HTTP connection,
   post their share of the bodies one after the other; the figure is events / (last 204
   - first send). Every request must answer 204, and every event must be stored.
5. Baseline, same run, after TRUNCATE: the same rows, pre-encoded as COPY text, sent by
   as many processes over as many connections, each batch in its own transaction:
   ``COPY metering_eventkey (source, event_id, time)`` then ``COPY metering_event
   (source, event_id, type, subject, time, data)``. That is the least work that stores
   the same rows in the same tables with the same indexes and the same commit per batch,
   without parsing, validating, deduplicating or HTTP.
6. Repeats 4 and 5 ``--rounds`` times and prints the medians: both rates, ``ratio
   endpoint/COPY`` (the target is >= 0.5), request latency p50/p99, and where the CPU
   went, with the ratio of server CPU per event, which other load on a shared machine
   does not disturb. Stops gunicorn at the end, also on error or SIGTERM.

See docs/performance.md for what the figures mean and the figures on record.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import queue
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
import psycopg  # noqa: E402

from bench.common import (  # noqa: E402
    Gunicorn,
    MachineCpu,
    add_database_arguments,
    backend_cpu_seconds,
    bench_database_url,
    bench_lock,
    checkpoint,
    cpu_delta,
    django_env,
    figure,
    is_local_postgres,
    migrate,
    process_cpu_seconds,
    rate,
    safe_url,
    server_summary,
)

TARGET_RATIO = 0.5
KEY_NAME = "bench-ingest"
# Sync workers: each request goes to whichever worker accepts the next connection.
# gthread workers keep a keep-alive connection on the worker that accepted it, so a few
# long-lived client connections pile up on one worker while another idles.
WORKER_CLASS = "sync"

# Filled by the parent before it forks the client processes, which inherit them.
_BODIES: list[bytes] = []
_WARMUP: list[bytes] = []
_COPY_BATCHES: list[tuple[bytes, bytes]] = []


# -- realistic events ---------------------------------------------------------------

MODELS = [
    ("gpt-4o", 30),
    ("gpt-4o-mini", 35),
    ("claude-sonnet-4", 20),
    ("claude-haiku-4", 10),
    ("llama-3.1-70b", 5),
]
ROUTES = [
    ("/v1/flights", "GET", 40),
    ("/v1/flights/{id}", "GET", 20),
    ("/v1/bookings", "POST", 10),
    ("/v1/hotels", "GET", 15),
    ("/v1/search", "GET", 10),
    ("/v1/bookings/{id}", "DELETE", 5),
]
STATUSES = [(200, 88), (201, 4), (400, 3), (401, 1), (404, 2), (429, 1), (500, 1)]
COMPANIES = [
    "acme", "globex", "initech", "umbrella", "hooli", "vandelay", "stark", "wayne", "wonka",
    "tyrell", "cyberdyne", "soylent", "aperture", "massive", "nakatomi", "oscorp",
]  # fmt: skip
SOURCES = ["kong-eu-west-1", "kong-us-east-1", "llm-proxy-eu", "llm-proxy-us"]


def _pick(rng: random.Random, weighted: list) -> tuple:
    return rng.choices(weighted, weights=[w[-1] for w in weighted])[0]


def events_generate(count: int, *, end: datetime, seed: int = 42) -> list[dict]:
    """``count`` CloudEvents, 60% LLM token events and 40% API request events, from a few
    hundred gateway consumers, with distinct ids and times in order over the 30 days
    before ``end`` (a gateway replays traffic roughly in the order it happened)."""
    rng = random.Random(seed)
    subjects = [
        f"{c}-{env}-{n:02d}" for c in COMPANIES for env in ("prod", "dev") for n in range(8)
    ]
    start = end - timedelta(days=30)
    span = (end - start).total_seconds()
    offsets = sorted(rng.random() * span for _ in range(count))
    events = []
    for offset in offsets:
        subject = rng.choice(subjects)
        user = f"usr_{subject[:4]}{rng.randrange(400):04d}"
        time_ = (start + timedelta(seconds=offset)).isoformat().replace("+00:00", "Z")
        if rng.random() < 0.6:
            model = _pick(rng, MODELS)[0]
            direction = "input" if rng.random() < 0.5 else "output"
            tokens = int(rng.lognormvariate(6.5 if direction == "input" else 5.3, 1.0)) + 1
            source = rng.choice(SOURCES[2:])
            data = {
                "model": model,
                "direction": direction,
                "tokens": tokens,
                "user": user,
                "provider": "openai"
                if model.startswith("gpt")
                else "anthropic"
                if model.startswith("claude")
                else "meta",
                "request_id": f"req_{rng.getrandbits(64):016x}",
                "latency_ms": int(rng.lognormvariate(6.8, 0.6)),
                "stream": rng.random() < 0.7,
            }
            kind = "llm"
        else:
            route, method, _ = _pick(rng, ROUTES)
            status = _pick(rng, STATUSES)[0]
            source = rng.choice(SOURCES[:2])
            data = {
                "route": route,
                "method": method,
                "status": status,
                "duration_ms": round(rng.lognormvariate(3.5, 0.8), 3),
                "user": user,
                "bytes_out": int(rng.lognormvariate(8, 1.2)),
                "region": source.removeprefix("kong-"),
            }
            kind = "request"
        events.append(
            {
                "specversion": "1.0",
                "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "source": source,
                "type": kind,
                "subject": subject,
                "time": time_,
                "data": data,
            }
        )
    return events


def _copy_text(value: str) -> str:
    # COPY's text format: backslash, tab, newline and carriage return are escaped.
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def copy_payloads(events: list[dict]) -> tuple[bytes, bytes]:
    """The batch as COPY text for the key table and for the event table."""
    keys, rows = [], []
    encode = msgspec.json.encode
    for e in events:
        source, id_, time_ = _copy_text(e["source"]), _copy_text(e["id"]), e["time"]
        keys.append(f"{source}\t{id_}\t{time_}\n")
        data = _copy_text(encode(e["data"]).decode())
        rows.append(
            f"{source}\t{id_}\t{_copy_text(e['type'])}\t{_copy_text(e['subject'])}\t{time_}\t{data}\n"
        )
    return "".join(keys).encode(), "".join(rows).encode()


# -- the two loads ------------------------------------------------------------------


def _post(conn: http.client.HTTPConnection, body: bytes, headers: dict) -> None:
    conn.request("POST", "/api/v1/events", body=body, headers=headers)
    response = conn.getresponse()
    answer = response.read()
    if response.status != 204:
        raise RuntimeError(f"HTTP {response.status}: {answer[:500]!r}")


def _http_client(index, clients, port, token, timeout, go, results) -> None:
    """One load generator process: its share of the pre-encoded bodies, one after the
    other on one keep-alive connection."""
    try:
        headers = {
            "Content-Type": "application/cloudevents-batch+json",
            "Authorization": f"Bearer {token}",
        }
        bodies = _BODIES[index::clients]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        _post(conn, _WARMUP[index], headers)  # opens the connection, warms a worker
        results.put(("ready", index))
        go.wait()
        cpu = time.process_time()
        latencies = []
        first = time.perf_counter()
        for body in bodies:
            sent = time.perf_counter()
            _post(conn, body, headers)
            latencies.append(time.perf_counter() - sent)
        last = time.perf_counter()
        conn.close()
        results.put(("done", index, first, last, latencies, time.process_time() - cpu))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails
        results.put(("error", index, f"{type(exc).__name__}: {exc}"))


def _copy_client(index, clients, url, timeout, go, results) -> None:
    """One COPY process: its share of the batches, each in its own transaction."""
    try:
        batches = _COPY_BATCHES[index::clients]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT set_config('statement_timeout', %s, false)", [f"{int(timeout)}s"])
            backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            if not is_local_postgres(backend):
                backend = None
            results.put(("ready", index))
            go.wait()
            cpu = time.process_time()
            backend_cpu = process_cpu_seconds(backend) if backend else 0.0
            latencies = []
            first = time.perf_counter()
            for keys, rows in batches:
                sent = time.perf_counter()
                with conn.transaction(), conn.cursor() as cursor:
                    with cursor.copy(
                        "COPY metering_eventkey (source, event_id, time) FROM STDIN"
                    ) as copy:
                        copy.write(keys)
                    with cursor.copy(
                        "COPY metering_event (source, event_id, type, subject, time, data) FROM STDIN"
                    ) as copy:
                        copy.write(rows)
                latencies.append(time.perf_counter() - sent)
            last = time.perf_counter()
            backend_cpu = (process_cpu_seconds(backend) - backend_cpu) if backend else 0.0
        results.put(("done", index, first, last, latencies, time.process_time() - cpu, backend_cpu))
    except BaseException as exc:  # noqa: BLE001
        results.put(("error", index, f"{type(exc).__name__}: {exc}"))


class Phase:
    """Figures of one timed load."""

    def __init__(self, done: list[tuple]) -> None:
        self.seconds = max(d[3] for d in done) - min(d[2] for d in done)
        self.latencies = sorted(lat for d in done for lat in d[4])
        self.client_cpu = sum(d[5] for d in done)
        self.backend_cpu = sum(d[6] for d in done if len(d) > 6)

    @classmethod
    def pooled(cls, phases: list[Phase]) -> Phase:
        """The latencies of several phases together (for percentiles)."""
        pooled = cls.__new__(cls)
        pooled.latencies = sorted(lat for p in phases for lat in p.latencies)
        return pooled

    def percentile(self, p: float) -> float:
        index = min(len(self.latencies) - 1, max(0, round(p / 100 * len(self.latencies)) - 1))
        return self.latencies[index]


def run_load(target, args: tuple, *, clients: int, timeout: float, before_go) -> Phase:
    """Fork ``clients`` processes running ``target``, wait until all are connected, call
    ``before_go`` (which truncates and checkpoints), release them, and collect figures."""
    ctx = multiprocessing.get_context("fork")
    go, results = ctx.Event(), ctx.Queue()
    processes = [
        ctx.Process(target=target, args=(i, clients, *args, timeout, go, results), daemon=True)
        for i in range(clients)
    ]
    for process in processes:
        process.start()
    try:
        deadline = time.monotonic() + timeout
        ready, done = 0, []
        while len(done) < clients:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"the load did not finish within {timeout:.0f} s")
            try:
                message = results.get(timeout=remaining)
            except queue.Empty as exc:
                raise RuntimeError(f"the load did not finish within {timeout:.0f} s") from exc
            if message[0] == "error":
                raise RuntimeError(f"client {message[1]} failed: {message[2]}")
            if message[0] == "ready":
                ready += 1
                if ready == clients:
                    before_go()
                    go.set()
            else:
                done.append(message)
        return Phase(done)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(5)


# -- main ---------------------------------------------------------------------------


def api_key_for_bench(url: str, conn) -> str:
    """A fresh ingest key (the previous benchmark keys are deleted) whose per-key rate
    limit is far above anything this benchmark can send."""
    conn.execute("DELETE FROM core_apikey WHERE name = %s", [KEY_NAME])
    result = subprocess.run(
        [sys.executable, "manage.py", "create_api_key", KEY_NAME, "--scopes", "ingest"],
        cwd=ROOT,
        env=django_env(url),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    secret = result.stdout.strip()
    conn.execute(
        "UPDATE core_apikey SET rate_limit = 1000000000 WHERE prefix = %s", [secret.split("_")[1]]
    )
    return secret


def stored_counts(conn) -> tuple[int, int]:
    events = conn.execute("SELECT count(*) FROM metering_event").fetchone()[0]
    keys = conn.execute("SELECT count(*) FROM metering_eventkey").fetchone()[0]
    return events, keys


class Round:
    """One endpoint load and one COPY load of the same rows, back to back."""

    endpoint: Phase
    copy: Phase
    endpoint_cpu: dict[str, float]
    copy_cpu: dict[str, float]

    @property
    def ratio(self) -> float:
        return self.copy.seconds / self.endpoint.seconds

    @property
    def endpoint_server_cpu(self) -> float:
        return self.endpoint_cpu["gunicorn workers"] + self.endpoint_cpu["PostgreSQL backends"]

    @property
    def copy_server_cpu(self) -> float:
        return self.copy_cpu["PostgreSQL backends"]

    @property
    def cpu_ratio(self) -> float | None:
        """COPY's server CPU over the endpoint's: what the throughput ratio would be on a
        machine where CPU is the limit and nothing else runs; unaffected by other load."""
        if not self.endpoint_server_cpu or not self.copy_server_cpu:
            return None  # a server elsewhere: its backends cannot be measured from here
        return self.copy_server_cpu / self.endpoint_server_cpu


def _truncate(control) -> None:
    control.execute("TRUNCATE metering_event, metering_eventkey")
    checkpoint(control)


def endpoint_round(*, server: Gunicorn, token: str, control, clients: int, timeout: float):
    marks: dict = {}

    def go() -> None:
        _truncate(control)
        marks.update(
            machine=MachineCpu.read(),
            workers=server.worker_cpu_seconds(),
            backends=backend_cpu_seconds(control),
        )

    phase = run_load(
        _http_client, (server.port, token), clients=clients, timeout=timeout, before_go=go
    )
    machine = MachineCpu.read() - marks["machine"]
    cpu = {
        "gunicorn workers": server.worker_cpu_seconds() - marks["workers"],
        "PostgreSQL backends": cpu_delta(marks["backends"], backend_cpu_seconds(control)),
        "load generator": phase.client_cpu,
    }
    return phase, _with_rest(cpu, machine)


def copy_round(*, url: str, control, clients: int, timeout: float):
    marks: dict = {}

    def go() -> None:
        _truncate(control)
        marks["machine"] = MachineCpu.read()

    phase = run_load(_copy_client, (url,), clients=clients, timeout=timeout, before_go=go)
    machine = MachineCpu.read() - marks["machine"]
    cpu = {"PostgreSQL backends": phase.backend_cpu, "COPY clients": phase.client_cpu}
    return phase, _with_rest(cpu, machine)


def _with_rest(cpu: dict[str, float], machine: MachineCpu) -> dict[str, float]:
    # "other": every other process on the machine (PostgreSQL's WAL writer and background
    # writer, the kernel, and anything else running at the time); "idle": unused CPU.
    cpu["other"] = max(0.0, machine.busy - sum(cpu.values()))
    cpu["idle"] = max(0.0, machine.total - machine.busy)
    return cpu


def _cpu_text(cpu: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.1f}" for name, seconds in cpu.items())


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000, help="events per request")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client processes")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="endpoint + COPY rounds; the figures are the medians (a shared machine is noisy)",
    )
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds each timed load may take at most"
    )
    add_database_arguments(parser)
    args = parser.parse_args(argv)
    if min(args.events, args.batch, args.clients, args.workers, args.rounds) < 1:
        parser.error("--events, --batch, --clients, --workers and --rounds must be positive")

    # Stop cleanly (gunicorn included) on a TERM, e.g. from a CI timeout.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    url = bench_database_url(database_url=args.database_url, database=args.database)
    migrated = migrate(url)
    control = psycopg.connect(url, autocommit=True)
    bench_lock(control, args.database)
    print(
        f"== bench/ingest: {args.events:,} events in batches of {args.batch:,}, "
        f"{args.clients} client processes, {args.workers} gunicorn {WORKER_CLASS} workers, "
        f"{args.rounds} round(s) ==",
        flush=True,
    )
    figure("database", f"{safe_url(url)} (migrated in {migrated:.1f} s)")
    figure("server", server_summary(control))

    started = time.perf_counter()
    events = events_generate(args.events, end=datetime.now(UTC).replace(microsecond=0))
    batches = [events[i : i + args.batch] for i in range(0, len(events), args.batch)]
    _BODIES[:] = [msgspec.json.encode(b) for b in batches]
    _COPY_BATCHES[:] = [copy_payloads(b) for b in batches]
    warmup = events_generate(args.clients * min(args.batch, 100), end=datetime.now(UTC), seed=7)
    for e in warmup:
        e["id"] = f"warmup-{e['id']}"
    _WARMUP[:] = [msgspec.json.encode(warmup[i :: args.clients]) for i in range(args.clients)]
    body_bytes = sum(len(b) for b in _BODIES)
    figure(
        "generated (untimed)",
        f"{len(events):,} events, {len(batches):,} bodies, {body_bytes / len(events):.0f} bytes "
        f"of JSON per event, in {time.perf_counter() - started:.1f} s",
    )

    expected = (len(events), len(events))
    rounds: list[Round] = []
    log = Path(tempfile.mkstemp(prefix="bench-gunicorn-", suffix=".log")[1])
    server = Gunicorn(
        url=url, workers=args.workers, log=log, options=("--worker-class", WORKER_CLASS)
    )
    try:
        server.start()
        token = api_key_for_bench(url, control)
        for number in range(1, args.rounds + 1):
            one = Round()
            one.endpoint, one.endpoint_cpu = endpoint_round(
                server=server,
                token=token,
                control=control,
                clients=args.clients,
                timeout=args.timeout,
            )
            if (stored := stored_counts(control)) != expected:
                raise RuntimeError(f"the endpoint stored {stored} (events, keys), not {expected}")
            one.copy, one.copy_cpu = copy_round(
                url=url, control=control, clients=args.clients, timeout=args.timeout
            )
            if (stored := stored_counts(control)) != expected:
                raise RuntimeError(f"COPY stored {stored} (events, keys), not {expected}")
            rounds.append(one)
            figure(
                f"round {number}",
                f"endpoint {rate(len(events), one.endpoint.seconds)}/s, "
                f"COPY {rate(len(events), one.copy.seconds)}/s, ratio {one.ratio:.2f}",
            )
            figure("  endpoint CPU s", _cpu_text(one.endpoint_cpu))
            figure("  COPY CPU s", _cpu_text(one.copy_cpu))
        control.execute("TRUNCATE metering_event, metering_eventkey")
    except BaseException:
        if log.exists() and log.stat().st_size:
            print(f"gunicorn's log:\n{log.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        server.stop()
        control.close()
    log.unlink(missing_ok=True)

    endpoint_seconds = _median([r.endpoint.seconds for r in rounds])
    copy_seconds = _median([r.copy.seconds for r in rounds])
    ratio = _median([r.ratio for r in rounds])
    latencies = Phase.pooled([r.endpoint for r in rounds])
    copy_latencies = Phase.pooled([r.copy for r in rounds])
    verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
    cpu_ratios = [r.cpu_ratio for r in rounds if r.cpu_ratio is not None]
    figure(
        "endpoint events/s",
        f"{rate(len(events), endpoint_seconds)} (median of {len(rounds)}; {len(events):,} "
        f"events in {endpoint_seconds:.2f} s, {len(batches):,} requests, all answered 204)",
    )
    figure(
        "request latency",
        f"p50 {latencies.percentile(50) * 1000:.1f} ms, p99 {latencies.percentile(99) * 1000:.1f} ms, "
        f"max {latencies.latencies[-1] * 1000:.1f} ms ({len(latencies.latencies):,} requests)",
    )
    figure(
        "raw COPY events/s",
        f"{rate(len(events), copy_seconds)} (median of {len(rounds)}; {len(events):,} events in "
        f"{copy_seconds:.2f} s; key table + event table, one transaction per batch)",
    )
    figure(
        "COPY batch latency",
        f"p50 {copy_latencies.percentile(50) * 1000:.1f} ms, "
        f"p99 {copy_latencies.percentile(99) * 1000:.1f} ms",
    )
    figure(
        "ratio endpoint/COPY",
        f"{ratio:.2f} (median of {len(rounds)}; target >= {TARGET_RATIO:.2f}: {verdict})",
    )
    if cpu_ratios and len(cpu_ratios) == len(rounds):
        endpoint_cpu = _median([r.endpoint_server_cpu for r in rounds])
        copy_cpu = _median([r.copy_server_cpu for r in rounds])
        figure(
            "server CPU per event",
            f"endpoint {endpoint_cpu / len(events) * 1e6:.1f} us (gunicorn + PostgreSQL "
            f"backends), COPY {copy_cpu / len(events) * 1e6:.1f} us (PostgreSQL backends)",
        )
        figure(
            "ratio endpoint/COPY by CPU",
            f"{_median(cpu_ratios):.2f} (median of {len(rounds)}; COPY's server CPU over the "
            "endpoint's, not disturbed by other load on the machine)",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
