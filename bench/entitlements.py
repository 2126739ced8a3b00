#!/usr/bin/env python
"""Benchmark of the entitlement value check under open-loop load, beside a trivial endpoint.

    .venv/bin/python bench/entitlements.py [--rps 500] [--seconds 20] [--accounts 200]

1. Works in its own database (``billing_bench_entitlements`` on the server of
   ``--database-url`` / ``DATABASE_URL`` / the embedded server), migrated with
   ``manage.py migrate``, and under a cache key prefix of its own in Redis (``REDIS_URL``,
   else the embedded Redis), as production would run.
2. Sets up, untimed, what a gateway's checks find in production:
   - two meters (``api_requests`` COUNT by route and status, ``llm_tokens`` SUM by model)
     and four features: ``api_calls`` (requests answered 200), ``llm_tokens``, ``sso``
     (boolean) and ``rate_config`` (static);
   - three monthly plans through the services, each with entitlement templates (hard and
     soft limits, no limit, boolean, static) and prices;
   - ``--accounts`` billing accounts in four time zones (UTC, New York, Berlin, Kolkata,
     so some usage periods start inside an hour), with 0 to 3 subsidiaries billed to
     them and some second-level subsidiaries; one gateway consumer per customer; a
     subscription per account (one in fifty has none) anchored on different days, so
     the current period is at a different point for each; overrides on one account in
     ten, a grant on one in five and a rollover grant from the previous periods on one in
     twenty-five;
   - ``--events-per-customer`` events per customer over the last 31 days, rolled up with
     the real ``usage_rollup`` into hourly buckets, then 10 more per customer in the last
     two minutes that are *not* rolled up (the value check must count them).
3. Starts gunicorn on 127.0.0.1 (``--workers`` gthread workers with ``--threads``
   threads each, keep-alive) with ``bench.entitlements_settings``: the product's settings
   plus ``GET /bench/trivial``, a plain Django view that touches neither the database
   nor the cache.
4. Open-loop load: ``--clients`` generator processes, each with its own pool of
   keep-alive connections, send requests at fixed instants (``--rps`` in all), whether or
   not earlier answers have come back, so a slow server cannot slow the load down and
   hide its own latency (no coordinated omission). Latency is measured from the instant
   a request was *due*; the generators' lag behind their schedule and their CPU are
   printed, to show they are not the bottleneck.
5. For ``/bench/trivial`` and then for the value check
   (``GET /api/v1/customers/{key}/entitlements/{feature}/value``, no ``time``: now, a mix
   of accounts, subsidiaries and features), ``--warmup`` seconds of load, then
   ``--seconds`` measured: p50, p99 and max latency, throughput achieved, errors, and
   where the CPU went (gunicorn workers, PostgreSQL backends, Redis, the generators).
   Before the value check's load, every distinct check of the mix is asked once, four at
   a time ("first check of each pair": its context and past days are computed then), so
   that the load measures the steady state. Prints the ratio of the value check to the
   trivial endpoint, and the target: p99 at most 10 ms at 500 requests/s.
6. Checks the answers: for sample pairs, the server's answer at a fixed ``time`` equals
   the value computed in this process from the database alone (no cache, usage read by
   ``metering.usage.feature_usage``, the reference).

Stops gunicorn at the end, also on error or SIGTERM. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import queue
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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
    figure,
    horizon_wait,
    migrate,
    process_cpu_seconds,
    safe_url,
    server_summary,
)

TARGET_RPS = 500
TARGET_P99_MS = 10.0
DEFAULT_DATABASE = "billing_bench_entitlements"
SETTINGS = "bench.entitlements_settings"
CACHE_PREFIX = "bench-entitlements"  # KEY_PREFIX in bench/entitlements_settings.py
KEY_NAME = "bench-entitlements"
TRIVIAL_PATH = "/bench/trivial"
VERIFY_SAMPLES = 40


# -- the database -------------------------------------------------------------------


def redis_url_for_bench() -> str:
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    from config.embedded import embedded_redis_url

    return embedded_redis_url()


def django_setup(url: str) -> None:
    """Django in this process, on the benchmark database, with an empty in-process cache
    of its own: what it computes is the uncached answer the server's is checked against."""
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["REDIS_URL"] = ""  # locmem: nothing this process reads comes from Redis
    os.environ["CELERY_TASK_ALWAYS_EAGER"] = "true"
    os.environ["DEBUG"] = "false"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def reset(conn) -> None:
    conn.execute(
        "TRUNCATE customers_customer, billing_plan, billing_documentsequence, metering_meter, "
        "metering_event, metering_eventkey, metering_usagetouch, metering_usagebucket, "
        "customers_consumermappingchange CASCADE"
    )
    conn.execute("DELETE FROM core_apikey WHERE name = %s", [KEY_NAME])


_CUSTOMER_COLUMNS = (
    "key, name, email, address_line1, address_line2, city, region, postal_code, country, "
    "tax_id, currency, timezone, bill_to_parent, rail, rail_settings, created_at, updated_at"
)
# Accounts in four time zones; substr(key, 5, 5) is the account's number.
_ACCOUNTS = f"""
INSERT INTO customers_customer ({_CUSTOMER_COLUMNS})
SELECT 'ent-' || lpad(g::text, 5, '0'), 'Account ' || g, 'ap@ent-' || g || '.example',
       g || ' Market Street', '', 'San Francisco', 'CA', '94105', 'US', '', 'USD',
       (ARRAY['UTC', 'America/New_York', 'Europe/Berlin', 'Asia/Kolkata'])[1 + g %% 4],
       false, 'manual', '{{}}', now(), now()
FROM generate_series(0, %(n)s - 1) AS g
"""
# 0 to 3 subsidiaries per account, billed to it.
_SUBSIDIARIES = f"""
INSERT INTO customers_customer ({_CUSTOMER_COLUMNS}, parent_id)
SELECT c.key || '-s' || s, c.name || ' subsidiary ' || s, '', '', '', '', '', '', 'DE', '',
       'USD', c.timezone, true, 'manual', '{{}}', now(), now(), c.id
FROM customers_customer c CROSS JOIN generate_series(1, 3) AS s
WHERE c.parent_id IS NULL AND s <= substr(c.key, 5, 5)::int %% 4
"""
# A subsidiary of a subsidiary, for one account in eight that has one.
_SECOND_LEVEL = f"""
INSERT INTO customers_customer ({_CUSTOMER_COLUMNS}, parent_id)
SELECT c.key || '-x', c.name || ' team', '', '', '', '', '', '', 'DE', '',
       'USD', c.timezone, true, 'manual', '{{}}', now(), now(), c.id
FROM customers_customer c
WHERE c.key LIKE '%%-s1' AND substr(c.key, 5, 5)::int %% 8 = 3
"""
_MAPPINGS = """
INSERT INTO customers_consumermapping (consumer_key, customer_id, valid_from, valid_to, created_at)
SELECT key || '-gw', id, %(since)s, NULL, now() FROM customers_customer
"""
# Anchored on different days over four weeks, so each account's period is elsewhere.
_SUBSCRIPTIONS = """
INSERT INTO billing_subscription (customer_id, plan_version_id, start, "end", anchor, created_at)
SELECT c.id, (%(versions)s::bigint[])[1 + substr(c.key, 5, 5)::int %% 3],
       %(first)s::timestamptz + (substr(c.key, 5, 5)::int %% 28) * interval '1 day' + interval '7 hours',
       NULL,
       %(first)s::timestamptz + (substr(c.key, 5, 5)::int %% 28) * interval '1 day' + interval '7 hours',
       now()
FROM customers_customer c
WHERE c.parent_id IS NULL AND substr(c.key, 5, 5)::int %% 50 <> 49
"""
_EVENT_DATA = """
CASE WHEN g %% 5 < 3 THEN jsonb_build_object(
    'route', (ARRAY['/v1/flights', '/v1/flights', '/v1/flights/{id}', '/v1/hotels', '/v1/bookings', '/v1/search'])[1 + floor(random() * 6)::int],
    'status', CASE WHEN random() < 0.93 THEN 200 ELSE (ARRAY[400, 404, 429, 500])[1 + floor(random() * 4)::int] END)
ELSE jsonb_build_object(
    'model', (ARRAY['gpt-4o', 'gpt-4o-mini', 'claude-sonnet-4', 'llama-3.1-70b'])[1 + floor(random() * 4)::int],
    'tokens', 1 + floor(exp(4 + 4 * random()))::int)
END
"""
# Three request events for two LLM events; random() is seeded first: repeatable.
_EVENTS = f"""
INSERT INTO metering_event (source, event_id, type, subject, time, data)
SELECT 'bench', %(tag)s || c.id || '-' || g, CASE WHEN g %% 5 < 3 THEN 'request' ELSE 'llm' END,
       c.key || '-gw', %(now)s::timestamptz - random() * %(span)s::interval,
       {_EVENT_DATA}
FROM customers_customer c CROSS JOIN generate_series(1, %(per)s) AS g
"""


def catalog_create():
    """The meters, features and plans, through the services; the plan version ids and
    the metered features."""
    from billing.catalog.services import PlanVersionSpec, RateCardSpec, plan_save
    from metering.services import feature_create, meter_create

    requests = meter_create(
        key="api_requests",
        event_type="request",
        aggregation="COUNT",
        group_by={"route": "$.route", "status": "$.status"},
    )
    tokens = meter_create(
        key="llm_tokens",
        event_type="llm",
        aggregation="SUM",
        value_property="$.tokens",
        group_by={"model": "$.model"},
    )
    calls = feature_create(
        key="api_calls", name="API calls", meter=requests, filters={"status": ["200"]}
    )
    llm = feature_create(key="llm_tokens", name="LLM tokens", meter=tokens)
    feature_create(key="sso", name="Single sign-on", meter=requests)
    feature_create(key="rate_config", name="Rate limits", meter=requests)

    def plan(key, cards, entitlements):
        spec = PlanVersionSpec(
            currency="USD",
            cadence="monthly",
            minimum_commitment=Decimal(0),
            rate_cards=cards,
            entitlements=entitlements,
        )
        return plan_save(key=key, name=key.title(), spec=spec)[1].pk

    flat = {"model": "flat", "timing": "in_arrears"}
    unit = {"model": "unit", "unit_price": "0.002", "included": 1000}
    tokens_price = {"model": "package", "package_size": 100000, "package_price": "1.00"}
    cards = (
        RateCardSpec(key="platform", name="Platform", price={**flat, "amount": "49.00"}),
        RateCardSpec(key="calls", feature=calls, price=unit),
        RateCardSpec(key="tokens", feature=llm, price=tokens_price),
    )
    metered = {"type": "metered", "period": "monthly"}
    versions = [
        plan(
            "starter",
            cards,
            (
                {
                    **metered,
                    "feature": "api_calls",
                    "limit": 1500,
                    "hard": True,
                    "thresholds": [80, 100],
                },
                {**metered, "feature": "llm_tokens", "limit": 2_000_000, "hard": False},
                {"feature": "sso", "type": "boolean", "enabled": False},
            ),
        ),
        plan(
            "growth",
            cards,
            (
                {**metered, "feature": "api_calls", "limit": 100_000, "hard": False},
                {**metered, "feature": "llm_tokens", "limit": 5_000_000, "hard": True},
                {"feature": "sso", "type": "boolean", "enabled": True},
                {"feature": "rate_config", "type": "static", "config": {"rps": 50, "burst": 100}},
            ),
        ),
        plan(
            "scale",
            cards,
            (
                {**metered, "feature": "api_calls"},  # no limit: usage only
                {**metered, "feature": "llm_tokens", "limit": 50_000_000, "hard": True},
                {"feature": "sso", "type": "boolean", "enabled": True},
                {"feature": "rate_config", "type": "static", "config": {"rps": 500, "burst": 1000}},
            ),
        ),
    ]
    return versions, calls, llm


def overrides_and_grants(*, calls, llm, now: datetime) -> tuple[int, int]:
    from billing.models import EntitlementOverride, Grant
    from customers.models import Customer

    accounts = list(Customer.objects.filter(parent__isnull=True).order_by("key"))
    overrides, grants = [], []
    for number, account in enumerate(accounts):
        if number % 10 == 4:
            overrides.append(
                EntitlementOverride(
                    customer=account, feature=calls, limit=Decimal(20_000), hard=True,
                    thresholds=[50, 90], reason="negotiated",
                )
            )  # fmt: skip
        if number % 5 == 2:
            grants.append(
                Grant(
                    customer=account, feature=calls, amount=Decimal(500), priority=1,
                    effective_at=now - timedelta(days=3), reason="goodwill",
                )
            )  # fmt: skip
        if number % 25 == 11:
            grants.append(
                Grant(
                    customer=account, feature=llm, amount=Decimal(3_000_000), priority=2,
                    effective_at=now - timedelta(days=50), rollover=True, reason="prepaid pack",
                )
            )  # fmt: skip
    EntitlementOverride.objects.bulk_create(overrides)
    Grant.objects.bulk_create(grants)
    return len(overrides), len(grants)


def _fingerprint(accounts: int, per_customer: int) -> str:
    return f"bench-entitlements accounts={accounts} per_customer={per_customer}"


def setup_reuse(conn, *, accounts: int, per_customer: int, now: datetime) -> dict | None:
    """With ``--reuse``: keep the data of an earlier run of the same size, only replacing
    the events not rolled up (with ones from the last two minutes). None when there is
    no such data."""
    row = conn.execute(
        "SELECT description, updated_at FROM metering_meter WHERE key = 'api_requests'"
    ).fetchone()
    if row is None or row[0] != _fingerprint(accounts, per_customer):
        return None
    started = time.perf_counter()
    watermark = conn.execute("SELECT min(watermark) FROM metering_rollupstate").fetchone()[0]
    conn.execute("DELETE FROM metering_event WHERE xid >= %s", [watermark])
    conn.execute(
        _EVENTS, {"tag": f"f{int(now.timestamp())}-", "now": now, "span": "2 minutes", "per": 10}
    )
    conn.execute("VACUUM ANALYZE metering_event")
    count = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
    return {
        "accounts": accounts,
        "customers": count("SELECT count(*) FROM customers_customer"),
        "events": count(f"SELECT count(*) FROM metering_event WHERE xid < {int(watermark)}"),
        "fresh": count(f"SELECT count(*) FROM metering_event WHERE xid >= {int(watermark)}"),
        "buckets": count("SELECT count(*) FROM metering_usagebucket"),
        "overrides": count("SELECT count(*) FROM billing_entitlementoverride"),
        "grants": count("SELECT count(*) FROM billing_grant"),
        "loaded": time.perf_counter() - started,
        "rolled": 0.0,
        "waited": 0.0,
        "reused_from": row[1],
    }


def setup(conn, *, accounts: int, per_customer: int, now: datetime) -> dict:
    """Everything the checks will find, in emptied tables; returns what was made."""
    from metering.partitions import month_start, next_month, partitions_ensure
    from metering.services import usage_rollup

    started = time.perf_counter()
    reset(conn)
    versions, calls, llm = catalog_create()
    conn.execute(_ACCOUNTS, {"n": accounts})
    conn.execute(_SUBSIDIARIES, {})
    conn.execute(_SECOND_LEVEL, {})
    conn.execute(_MAPPINGS, {"since": now - timedelta(days=400)})
    first = (now - timedelta(days=90)).replace(hour=0, minute=0, second=0, microsecond=0)
    conn.execute(_SUBSCRIPTIONS, {"versions": versions, "first": first})
    overrides, grants = overrides_and_grants(calls=calls, llm=llm, now=now)
    month = month_start(now - timedelta(days=32))
    months = [month]
    while month <= month_start(now + timedelta(days=31)):
        month = next_month(month)
        months.append(month)
    partitions_ensure(months)
    conn.execute("SELECT setseed(0.42)")
    conn.execute(_EVENTS, {"tag": "m", "now": now, "span": "31 days", "per": per_customer})
    customers = conn.execute("SELECT count(*) FROM customers_customer").fetchone()[0]
    rolled_events = conn.execute("SELECT count(*) FROM metering_event").fetchone()[0]
    loaded = time.perf_counter() - started

    waited = horizon_wait(conn)
    started = time.perf_counter()
    rolled = usage_rollup(now=now).events
    rolled_in = time.perf_counter() - started
    if rolled != rolled_events:
        raise SystemExit(f"the rollup took {rolled:,} of {rolled_events:,} events")
    # Accepted in the last two minutes and not rolled up yet: the check must count them.
    conn.execute(_EVENTS, {"tag": "f", "now": now, "span": "2 minutes", "per": 10})
    fresh = conn.execute("SELECT count(*) FROM metering_event").fetchone()[0] - rolled_events
    for table in (
        "metering_event",
        "metering_usagebucket",
        "metering_usagetouch",
        "metering_rollupstate",
        "customers_customer",
        "customers_consumermapping",
        "billing_subscription",
        "billing_entitlementoverride",
        "billing_grant",
    ):
        conn.execute(f"VACUUM ANALYZE {table}")
    buckets = conn.execute("SELECT count(*) FROM metering_usagebucket").fetchone()[0]
    conn.execute(
        "UPDATE metering_meter SET description = %s WHERE key = 'api_requests'",
        [_fingerprint(accounts, per_customer)],
    )
    return {
        "accounts": accounts,
        "customers": customers,
        "events": rolled_events,
        "fresh": fresh,
        "buckets": buckets,
        "overrides": overrides,
        "grants": grants,
        "loaded": loaded,
        "rolled": rolled_in,
        "waited": waited,
    }


def value_paths(conn, *, count: int, seed: int = 7) -> tuple[list[str], int]:
    """A shuffled mix of checks: customers (accounts and subsidiaries alike) by features,
    weighted as a gateway asks (mostly the metered ones); every distinct check comes
    once first, so the warm-up sees them all. Returns the paths and how many are
    distinct."""
    keys = [row[0] for row in conn.execute("SELECT key FROM customers_customer ORDER BY key")]
    rng = random.Random(seed)
    features = ["api_calls"] * 5 + ["llm_tokens"] * 3 + ["sso", "rate_config"]
    mix = [
        f"/api/v1/customers/{rng.choice(keys)}/entitlements/{rng.choice(features)}/value"
        for _ in range(count)
    ]
    distinct = sorted(set(mix))
    rng.shuffle(distinct)
    return distinct + mix, len(distinct)


def api_key_for_bench(conn) -> str:
    """A read key whose per-key rate limit is far above anything this benchmark sends."""
    from core.services import api_key_create

    issued = api_key_create(name=KEY_NAME, scopes=["read"])
    conn.execute(
        "UPDATE core_apikey SET rate_limit = 1000000000 WHERE id = %s", [issued.api_key.pk]
    )
    return issued.secret


def cache_forget(redis_url: str) -> int:
    """Delete every cache entry under the benchmark's key prefix: the tables were just
    truncated, which no cache invalidation sees. Nothing else in that Redis is touched."""
    import redis

    client = redis.Redis.from_url(redis_url)
    deleted = 0
    for key in client.scan_iter(match=f"{CACHE_PREFIX}:*", count=1000):
        deleted += client.delete(key)
    client.close()
    return deleted


def redis_cpu_seconds(redis_url: str) -> float:
    """CPU the Redis server has used so far (its own INFO, so also for a remote one)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        info = client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    finally:
        client.close()


# -- the open-loop load generator ---------------------------------------------------


async def _exchange(reader, writer, request: bytes) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, chunked, close = None, False, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            close = True
    if chunked:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            body += await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        body = await reader.readexactly(length or 0)
    if close:
        writer.close()
        raise _Answered(status, body)
    return status, body


class _Answered(Exception):
    """An answer on a connection the server then closed."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.body = status, body


async def _load(
    *, port, token, paths, rate, start, warmup, seconds, offset, max_connections, marker
) -> dict:
    """Send ``paths`` (cycled) at ``rate`` per second from ``start`` (perf_counter) for
    ``warmup + seconds``; return the measured samples (after the warm-up)."""
    idle: asyncio.Queue = asyncio.Queue()  # open connections nobody is using
    opened = peak = 0
    samples: list[tuple[float, float, float]] = []  # (due, sent, done) for measured ones
    finished: list[float] = []  # when each answer came, measured or not
    errors: list[str] = []
    late = 0
    headers = (
        f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: application/json\r\nConnection: keep-alive\r\n\r\n"
    )
    requests = [f"GET {p} HTTP/1.1\r\n{headers}".encode() for p in paths]

    async def connection():
        nonlocal opened, peak
        if not idle.empty():
            return idle.get_nowait()
        if opened < max_connections:
            opened += 1
            peak = max(peak, opened)
            try:
                return await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                opened -= 1
                raise
        return await idle.get()

    async def one(index: int, due: float, measured: bool) -> None:
        nonlocal opened
        request = requests[index % len(requests)]
        sent = None
        for attempt in range(3):
            try:
                conn = await connection()
            except OSError as exc:
                errors.append(f"connect: {exc}")
                return
            sent = time.perf_counter() if sent is None else sent
            reader, writer = conn
            try:
                status, body = await _exchange(reader, writer, request)
            except _Answered as answered:
                opened -= 1
                status, body = answered.status, answered.body
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                opened -= 1
                writer.close()
                if attempt == 2:
                    errors.append(f"connection lost: {type(exc).__name__}")
                    return
                continue
            else:
                idle.put_nowait(conn)
            break
        done = time.perf_counter()
        if status != 200 or marker not in body:
            errors.append(f"HTTP {status}: {body[:200]!r}")
            return
        if measured:
            samples.append((due, sent, done))
        finished.append(done)

    total = int((warmup + seconds) * rate)
    tasks = []
    for i in range(total):
        due = start + (i + offset) / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.001:
            late += 1
        measured = due >= start + warmup
        tasks.append(asyncio.create_task(one(i, due, measured)))
    drained = True
    if tasks:
        done, pending = await asyncio.wait(tasks, timeout=30)
        for task in pending:
            task.cancel()
        drained = not pending
        errors.extend(["not answered within 30 s of the end of the load"] * len(pending))
    return {
        "samples": samples,
        "finished": finished,
        "errors": errors,
        "late": late,
        "drained": drained,
        "opened": peak,
    }


def _client(index, clients, port, token, paths, rate, warmup, seconds, marker, start_wall, results):
    """One generator process: its share of the rate, interleaved with the others'."""
    try:
        cpu = time.process_time()
        start = time.perf_counter() + (start_wall - time.time())
        outcome = asyncio.run(
            _load(
                port=port, token=token, paths=paths[index::clients] or paths, rate=rate / clients,
                start=start, warmup=warmup, seconds=seconds, offset=index / clients,
                max_connections=64, marker=marker,
            )
        )  # fmt: skip
        # express instants relative to the start of the measured part
        origin = start + warmup
        outcome["samples"] = [
            (d - origin, s - origin, e - origin) for d, s, e in outcome["samples"]
        ]
        outcome["finished"] = [e - origin for e in outcome["finished"]]
        outcome["cpu"] = time.process_time() - cpu
        results.put(("done", index, outcome))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails
        results.put(("error", index, f"{type(exc).__name__}: {exc}"))


@dataclass
class Phase:
    name: str
    rate: int
    seconds: float
    answered: int  # answers that came inside the measured window
    latencies: list[float]  # from the instant each request was due, seconds, sorted
    service: list[float]  # from the instant it was sent
    lag: list[float]  # how late the generator sent it
    errors: list[str]
    late: int
    drained: bool
    connections: int
    client_cpu: float
    cpu: dict[str, float]
    throughput: float

    def p(self, values: list[float], q: float) -> float:
        if not values:
            return float("nan")
        return values[min(len(values) - 1, max(0, round(q / 100 * len(values)) - 1))]

    def line(self) -> str:
        ms = 1000
        return (
            f"p50 {self.p(self.latencies, 50) * ms:.2f} ms, p99 {self.p(self.latencies, 99) * ms:.2f} ms, "
            f"max {self.latencies[-1] * ms if self.latencies else float('nan'):.2f} ms at "
            f"{self.throughput:,.0f} req/s achieved of {self.rate:,} offered "
            f"({len(self.latencies):,} measured, {len(self.errors)} errors)"
        )


def run_phase(
    *, name, server: Gunicorn, token, paths, rate, warmup, seconds, clients, marker, control,
    redis_url,
) -> Phase:  # fmt: skip
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    start_wall = time.time() + 1.0  # every generator is running by then
    processes = [
        ctx.Process(
            target=_client,
            args=(
                i,
                clients,
                server.port,
                token,
                paths,
                rate,
                warmup,
                seconds,
                marker,
                start_wall,
                results,
            ),
            daemon=True,
        )  # fmt: skip
        for i in range(clients)
    ]
    for process in processes:
        process.start()
    # CPU marks at the start of the measured part (after the warm-up)
    time.sleep(max(0.0, start_wall + warmup - time.time()))
    marks = {
        "workers": server.worker_cpu_seconds(),
        "backends": backend_cpu_seconds(control),
        "redis": redis_cpu_seconds(redis_url),
        "machine": MachineCpu.read(),
        "clients": sum(process_cpu_seconds(p.pid) for p in processes),
    }
    time.sleep(max(0.0, start_wall + warmup + seconds - time.time()))
    machine = MachineCpu.read() - marks["machine"]
    cpu = {
        "gunicorn workers": server.worker_cpu_seconds() - marks["workers"],
        "PostgreSQL backends": cpu_delta(marks["backends"], backend_cpu_seconds(control)),
        "Redis": redis_cpu_seconds(redis_url) - marks["redis"],
        "load generators": sum(process_cpu_seconds(p.pid) for p in processes) - marks["clients"],
    }
    cpu["everything else"] = max(0.0, machine.busy - sum(cpu.values()))
    cpu["machine idle"] = max(0.0, machine.total - machine.busy)
    try:
        done = []
        deadline = time.monotonic() + 60
        while len(done) < clients:
            try:
                message = results.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty as exc:
                raise RuntimeError(f"{name}: the load generators did not finish") from exc
            if message[0] == "error":
                raise RuntimeError(f"{name}: generator {message[1]} failed: {message[2]}")
            done.append(message[2])
    finally:
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.terminate()
    samples = [s for d in done for s in d["samples"]]
    inside = [s for s in samples if s[0] < seconds]  # due inside the measured window
    # answers that came inside the window: the throughput, and what its CPU was spent on
    answered = sum(1 for d in done for e in d["finished"] if 0 <= e < seconds)
    return Phase(
        name=name,
        rate=rate,
        seconds=seconds,
        latencies=sorted(e - d for d, _, e in inside),
        service=sorted(e - s for _, s, e in inside),
        lag=sorted(s - d for d, s, _ in inside),
        errors=[e for d in done for e in d["errors"]],
        late=sum(d["late"] for d in done),
        drained=all(d["drained"] for d in done),
        connections=sum(d["opened"] for d in done),
        client_cpu=sum(d["cpu"] for d in done),
        cpu=cpu,
        throughput=answered / seconds,
        answered=answered,
    )


# -- checking answers ---------------------------------------------------------------


def prime(
    *, port: int, token: str, paths: list[str], threads: int = 4
) -> tuple[float, list[float]]:
    """Ask each distinct check once, ``threads`` at a time, closed loop: every context and
    every past-days sum is then computed (a first check of a pair costs its context's
    queries and the sum of its past days). Returns the seconds it took and the sorted
    latencies, so the steady state is measured apart from the cold start."""
    import http.client
    from concurrent.futures import ThreadPoolExecutor

    def share(part: list[str]) -> list[float]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        latencies = []
        for path in part:
            sent = time.perf_counter()
            conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise SystemExit(f"prime: {path} answered {response.status}: {body[:200]!r}")
            latencies.append(time.perf_counter() - sent)
        conn.close()
        return latencies

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        parts = list(pool.map(share, [paths[i::threads] for i in range(threads)]))
    return time.perf_counter() - started, sorted(lat for part in parts for lat in part)


def answers_check(*, port: int, token: str, paths: list[str], at: datetime) -> int:
    """The server's answer at ``time=at`` equals the one computed here from the database
    alone (no cache, and usage read by ``metering.usage.feature_usage``, the reference
    the check's own usage statement is held to), for each sampled pair; returns how
    many were compared."""
    import http.client

    from billing.entitlements.context import EntitlementNotFound, entitlement_context_build_for_keys
    from billing.entitlements.value import entitlement_value_from
    from core.api.renderers import ExactNumberJSONRenderer

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    stamp = at.isoformat().replace("+00:00", "Z")
    compared = 0
    for path in paths:
        parts = path.strip("/").split("/")  # api v1 customers KEY entitlements FEATURE value
        key, feature_key = parts[3], parts[5]
        conn.request("GET", f"{path}?time={stamp}", headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        served = json.loads(response.read(), parse_float=Decimal)
        if response.status != 200:
            raise SystemExit(f"check: {path} answered {response.status}: {served}")
        try:
            context = entitlement_context_build_for_keys(customer_key=key, feature_key=feature_key)
        except EntitlementNotFound as exc:
            raise SystemExit(f"check: {path}: {exc}") from exc
        value = entitlement_value_from(context=context, at=at, narrow=False)
        body = (
            value.as_openmeter()
            if value is not None
            else {"hasAccess": False, "balance": 0, "usage": 0, "overage": 0}
        )
        expected = json.loads(ExactNumberJSONRenderer().render(body), parse_float=Decimal)
        if served != expected:
            raise SystemExit(f"check: {path} at {stamp}: served {served}, computed {expected}")
        compared += 1
    conn.close()
    return compared


# -- main ---------------------------------------------------------------------------


def _cpu_text(phase: Phase) -> str:
    per = 1e6 / max(1, phase.answered)
    parts = [f"{name} {seconds:.1f} s" for name, seconds in phase.cpu.items()]
    server = phase.cpu["gunicorn workers"] + phase.cpu["PostgreSQL backends"] + phase.cpu["Redis"]
    return ", ".join(parts) + f"; server {server * per:,.0f} us per request"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rps", type=int, default=TARGET_RPS, help="requests per second offered")
    parser.add_argument("--seconds", type=float, default=20, help="measured seconds per endpoint")
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="unmeasured seconds first (default: a quarter of --seconds, 2 to 5)",
    )
    parser.add_argument("--accounts", type=int, default=200, help="billing accounts")
    parser.add_argument(
        "--events-per-customer",
        type=int,
        default=2000,
        help="events per customer over the last 31 days",
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn gthread workers")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker")
    parser.add_argument("--clients", type=int, default=2, help="load generator processes")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the data of an earlier run of the same size (faster; its month of usage "
        "then ends when that run set it up) instead of building it afresh",
    )
    add_database_arguments(parser)
    parser.set_defaults(database=DEFAULT_DATABASE)
    args = parser.parse_args(argv)
    if args.rps < 1 or args.seconds <= 0 or args.accounts < 1 or args.events_per_customer < 1:
        parser.error("--rps, --seconds, --accounts and --events-per-customer must be positive")
    warmup = args.warmup if args.warmup is not None else min(5.0, max(2.0, args.seconds / 4))

    # Stop cleanly (gunicorn included) on a TERM, e.g. from a CI timeout.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    url = bench_database_url(database_url=args.database_url, database=args.database)
    migrated = migrate(url)
    redis_url = redis_url_for_bench()
    django_setup(url)
    control = psycopg.connect(url, autocommit=True)
    bench_lock(control, args.database)
    print(
        f"== bench/entitlements: the value check at {args.rps:,} requests/s for "
        f"{args.seconds:g} s (after {warmup:g} s of warm-up), beside a trivial endpoint; "
        f"{args.accounts:,} accounts, {args.events_per_customer:,} events per customer; "
        f"gunicorn {args.workers} gthread workers x {args.threads} threads, "
        f"{args.clients} load generator processes ==",
        flush=True,
    )
    figure("database", f"{safe_url(url)} (migrated in {migrated:.1f} s)")
    figure("server", server_summary(control))
    figure("cache", f"Redis {safe_url(redis_url)}, key prefix {CACHE_PREFIX}")

    now = datetime.now(UTC)
    made = None
    if args.reuse:
        made = setup_reuse(
            control, accounts=args.accounts, per_customer=args.events_per_customer, now=now
        )
    if made is None:
        made = setup(
            control, accounts=args.accounts, per_customer=args.events_per_customer, now=now
        )
    figure(
        "setup",
        f"{made['accounts']:,} accounts, {made['customers']:,} customers, "
        f"{made['overrides']} overrides, {made['grants']} grants, {made['events']:,} events "
        f"rolled up into {made['buckets']:,} buckets + {made['fresh']:,} not rolled up "
        f"(loaded in {made['loaded']:.1f} s, rolled up in {made['rolled']:.1f} s"
        + (f", waited {made['waited']:.1f} s for the horizon" if made["waited"] > 0.5 else "")
        + (
            f"; reused from {made['reused_from']:%Y-%m-%d %H:%M} UTC"
            if "reused_from" in made
            else ""
        )
        + ")",
    )
    token = api_key_for_bench(control)
    forgotten = cache_forget(redis_url)
    if forgotten:
        figure("cache entries dropped", f"{forgotten:,} left by an earlier run")
    paths, distinct = value_paths(control, count=max(1000, int(args.rps * (args.seconds + warmup))))

    checkpoint(control)

    log = Path(tempfile.mkstemp(prefix="bench-entitlements-gunicorn-", suffix=".log")[1])
    # gthread workers keep connections alive, as a gateway's connection pool expects
    # (sync workers close every connection after one response)
    server = Gunicorn(
        url=url,
        workers=args.workers,
        log=log,
        options=(
            "--worker-class", "gthread", "--threads", str(args.threads),
            "--keep-alive", "75", "--backlog", "2048",
        ),
        env={"DJANGO_SETTINGS_MODULE": SETTINGS, "REDIS_URL": redis_url},
    )  # fmt: skip
    try:
        server.start()
        common = {
            "server": server, "token": token, "rate": args.rps, "warmup": warmup,
            "seconds": args.seconds, "clients": args.clients, "control": control,
            "redis_url": redis_url,
        }  # fmt: skip
        trivial = run_phase(name="trivial", paths=[TRIVIAL_PATH], marker=b'"ok"', **common)
        # every distinct check once first: what the load measures is the steady state
        primed, cold = prime(port=server.port, token=token, paths=paths[:distinct])
        value = run_phase(name="value", paths=paths, marker=b'"hasAccess"', **common)
        at = datetime.now(UTC).replace(microsecond=0)
        sample = random.Random(3).sample(paths, min(VERIFY_SAMPLES, len(paths)))
        compared = answers_check(port=server.port, token=token, paths=sample, at=at)
    except BaseException:
        if log.exists():
            print(f"gunicorn's log:\n{log.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        server.stop()
        log.unlink(missing_ok=True)

    for phase in (trivial, value):
        if phase.errors:
            print(f"{phase.name}: first errors: {phase.errors[:5]}", file=sys.stderr)
    ms = 1000
    figure("trivial endpoint", trivial.line())
    figure("value check", value.line())
    figure(
        "ratio value/trivial",
        f"p50 {value.p(value.latencies, 50) / trivial.p(trivial.latencies, 50):.1f}x, "
        f"p99 {value.p(value.latencies, 99) / trivial.p(trivial.latencies, 99):.1f}x, "
        f"server CPU per request "
        f"{_server_cpu(value) / max(_server_cpu(trivial), 1e-9):.1f}x",
    )
    for phase in (trivial, value):
        figure(
            f"{phase.name} latency once sent",
            f"p50 {phase.p(phase.service, 50) * ms:.2f} ms, p99 {phase.p(phase.service, 99) * ms:.2f} ms",
        )
        figure(
            f"{phase.name} generator",
            f"sent p50 {phase.p(phase.lag, 50) * ms:.2f} ms, p99 {phase.p(phase.lag, 99) * ms:.2f} ms "
            f"after due, {phase.late:,} more than 1 ms late; "
            f"{phase.cpu['load generators'] / max(1, phase.answered) * 1e6:.0f} us CPU per request, "
            f"{phase.connections} connections",
        )
        figure(f"{phase.name} CPU", _cpu_text(phase))
    figure(
        "first check of each pair",
        f"{distinct:,} distinct checks in {primed:.1f} s, 4 at a time: p50 "
        f"{value.p(cold, 50) * ms:.2f} ms, p99 {value.p(cold, 99) * ms:.2f} ms (context and "
        "past days computed; before the load)",
    )
    figure(
        "answers checked",
        f"{compared} sampled checks equal the value computed without cache "
        "(usage by metering.usage.feature_usage)",
    )
    p99 = value.p(value.latencies, 99) * ms
    achieved = value.throughput >= 0.97 * args.rps and not value.errors and value.drained
    verdict = "met" if achieved and p99 <= TARGET_P99_MS else "MISSED"
    figure(
        "target",
        f"p99 <= {TARGET_P99_MS:g} ms at {TARGET_RPS} req/s: {verdict} "
        f"(p99 {p99:.2f} ms at {value.throughput:,.0f} req/s"
        + ("" if args.rps == TARGET_RPS else f"; offered {args.rps:,} req/s, not the target rate")
        + ")",
    )
    control.close()
    failed = trivial.errors or value.errors or not trivial.drained or not value.drained
    return 1 if failed else 0


def _server_cpu(phase: Phase) -> float:
    total = phase.cpu["gunicorn workers"] + phase.cpu["PostgreSQL backends"] + phase.cpu["Redis"]
    return total / max(1, phase.answered)


if __name__ == "__main__":
    sys.exit(main())
