#!/usr/bin/env python
"""Benchmark of the billing run: a month of usage closed into drafts, then issued.

    .venv/bin/python bench/billing_run.py [--accounts 10000] [--events-per-account 200] [--profile]

1. Works in its own database (``billing_bench`` on the server of ``--database-url`` /
   ``DATABASE_URL`` / the embedded server), migrated with ``manage.py migrate``.
2. Runs twice, at ``--accounts / 10`` and at ``--accounts`` billing accounts, each time
   from empty tables (untimed setup):
   - two meters (``api_requests`` COUNT by route, ``llm_tokens`` SUM by model), their
     features, and three monthly USD plans through the services: *starter* ($49 flat +
     unit price per call over 1,000 included), *growth* ($99 flat + graduated tokens in
     three tiers), *scale* ($1 per started 100,000 tokens, $500 minimum commitment);
   - the accounts (one ``INSERT … SELECT``), a third on each plan and on each rail
     (manual, and Stripe and NetSuite in sandbox mode); every tenth has a subsidiary
     billed to it, so its invoice is consolidated; one gateway consumer mapped to each
     customer; a subscription from 2026-10-01 per account;
   - ``--events-per-account`` events per customer spread over October 2026 (requests
     for starter accounts, LLM token events for the others), rolled up with the real
     ``usage_rollup``: the billing run finds a month of hourly buckets and nothing left
     to roll up, as it would after a month of the beat schedule.
3. Times what ``billing_run`` does, phase by phase, **without PDFs**: a run at period end
   (2026-11-01 01:00: ``usage_rollup``, ``periods_close``, ``drafts_refresh``,
   ``invoices_issue_due``), then a run after the 24 h grace period (2026-11-02 01:00: the
   same four, which now issue every draft). ``billing_run`` itself is not called because
   it always renders up to 500 PDFs (``bench/pdf.py`` measures those) and drives
   settlements; the PDF and settlement tasks that issuing enqueues on commit are sent to
   a Redis queue of the benchmark's own (``REDIS_URL``, else the embedded Redis), counted
   and dropped, as a worker would receive them.
4. Checks the result: one issued invoice per account, numbered 1..N without a gap, one
   settlement each, usage lines adding up to the buckets, a PDF task and a settlement
   task enqueued for every invoice (ten invoices per task).
5. Prints seconds, accounts/s, SQL statements per account, CPU (this process and the
   PostgreSQL backend), and peak RSS after each size: the second size has ten times the
   accounts, so a peak RSS that stays put shows memory flat in the number of accounts.
6. The physical limit: the same number of rows in the same tables (invoices, lines,
   invoice events, settlements, settlement events), written set-based in one
   transaction from one ``GROUP BY`` over the month's buckets: one ``INSERT … SELECT``
   per table, then one ``UPDATE`` that numbers and issues the invoices (so the freeze
   trigger fires once per invoice as in the run), rolled back. Printed as
   ``ratio billing run/set-based SQL``. The target is the run's own: 10,000 accounts in
   at most 60 s on this machine.

``--profile`` runs the largest size under cProfile and prints where the time went (the
figures of that size are then inflated by the profiler).
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import io
import json
import os
import pstats
import resource
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from bench.common import (  # noqa: E402
    add_database_arguments,
    backend_cpu_seconds,
    bench_database_url,
    bench_lock,
    checkpoint,
    cpu_delta,
    figure,
    horizon_wait,
    migrate,
    rate,
    safe_url,
    server_summary,
)

TARGET_SECONDS = 60.0
TARGET_ACCOUNTS = 10_000
OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
AT_PERIOD_END = NOV + timedelta(hours=1)
AFTER_GRACE = NOV + timedelta(hours=25)
PLANS = ("starter", "growth", "scale")
RAILS = ("manual", "stripe", "netsuite")

# Accounts a, their subsidiaries (every tenth account has one) and everyone's consumer.
_CUSTOMERS = """
INSERT INTO customers_customer (
    key, name, email, address_line1, address_line2, city, region, postal_code, country,
    tax_id, currency, timezone, bill_to_parent, rail, rail_settings, created_at, updated_at
)
SELECT 'acct-' || lpad(g::text, 6, '0'), 'Account ' || g, 'ap@acct-' || g || '.example',
       g || ' Market Street', '', 'San Francisco', 'CA', '94105', 'US', '', 'USD', 'UTC', false,
       (ARRAY['manual', 'stripe', 'netsuite'])[1 + g %% 3], '{}', now(), now()
FROM generate_series(0, %(n)s - 1) AS g
"""
_SUBSIDIARIES = """
INSERT INTO customers_customer (
    key, name, email, address_line1, address_line2, city, region, postal_code, country,
    tax_id, currency, timezone, bill_to_parent, rail, rail_settings, created_at, updated_at,
    parent_id
)
SELECT c.key || '-eu', c.name || ' EU', '', '', '', '', '', '', 'DE', '', 'USD', 'UTC', true,
       'manual', '{}', now(), now(), c.id
FROM customers_customer c
WHERE c.parent_id IS NULL AND substr(c.key, 6)::int %% 10 = 7
"""
_MAPPINGS = """
INSERT INTO customers_consumermapping (consumer_key, customer_id, valid_from, valid_to, created_at)
SELECT key || '-gw', id, %(since)s, NULL, now() FROM customers_customer
"""
_SUBSCRIPTIONS = """
INSERT INTO billing_subscription (customer_id, plan_version_id, start, "end", anchor, created_at)
SELECT c.id, (%(versions)s::bigint[])[1 + substr(c.key, 6)::int %% 3], %(start)s, NULL, %(start)s, now()
FROM customers_customer c WHERE c.parent_id IS NULL
"""
# Each customer's events, spread over October. random() is seeded first: repeatable.
_EVENTS = """
INSERT INTO metering_event (source, event_id, type, subject, time, data)
SELECT 'bench', 'bench-' || c.id || '-' || g, t.type, c.key || '-gw',
       %(start)s::timestamptz + random() * interval '31 days',
       CASE WHEN t.type = 'llm' THEN jsonb_build_object(
           'model', (ARRAY['gpt-4o', 'gpt-4o-mini', 'claude-sonnet-4', 'llama-3.1-70b'])[1 + floor(random() * 4)::int],
           'tokens', 1 + floor(exp(4 + 4 * random()))::int)
       ELSE jsonb_build_object(
           'route', (ARRAY['/v1/flights', '/v1/flights', '/v1/hotels', '/v1/bookings'])[1 + floor(random() * 4)::int],
           'status', CASE WHEN random() < 0.95 THEN 200 ELSE 429 END)
       END
FROM customers_customer c
JOIN customers_customer a ON a.id = coalesce(c.parent_id, c.id)
CROSS JOIN LATERAL (
    SELECT CASE WHEN substr(a.key, 6)::int %% 3 = 0 THEN 'request' ELSE 'llm' END AS type
) t
CROSS JOIN generate_series(1, %(per)s) AS g
"""


def django_setup(url: str, redis_url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["REDIS_URL"] = redis_url
    os.environ["CELERY_TASK_ALWAYS_EAGER"] = "false"  # enqueue, as in production
    os.environ["DEBUG"] = "false"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def redis_url_for_bench() -> str:
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    from config.embedded import embedded_redis_url

    return embedded_redis_url()


def reset(conn) -> None:
    conn.execute(
        "TRUNCATE customers_customer, billing_plan, billing_documentsequence, metering_meter, "
        "metering_event, metering_eventkey, metering_usagetouch, metering_usagebucket, "
        "customers_consumermappingchange CASCADE"
    )


def catalog_create() -> list[int]:
    """The meters, features and three plans, through the services; the plan version ids
    in the order of ``PLANS``."""
    from decimal import Decimal

    from billing.catalog.services import PlanVersionSpec, RateCardSpec, plan_save
    from metering.services import feature_create, meter_create

    requests = meter_create(
        key="api_requests", event_type="request", aggregation="COUNT", group_by={"route": "$.route"}
    )
    tokens = meter_create(
        key="llm_tokens",
        event_type="llm",
        aggregation="SUM",
        value_property="$.tokens",
        group_by={"model": "$.model"},
    )
    calls = feature_create(key="api_calls", name="API calls", meter=requests)
    llm = feature_create(key="llm_tokens", name="LLM tokens", meter=tokens)

    def plan(key, cards, minimum="0"):
        spec = PlanVersionSpec(
            currency="USD", cadence="monthly", minimum_commitment=Decimal(minimum), rate_cards=cards
        )
        return plan_save(key=key, name=key.title(), spec=spec)[1].pk

    flat = {"model": "flat", "timing": "in_arrears"}
    return [
        plan(
            "starter",
            (
                RateCardSpec(key="platform", name="Platform", price={**flat, "amount": "49.00"}),
                RateCardSpec(
                    key="calls",
                    feature=calls,
                    price={"model": "unit", "unit_price": "0.002", "included": 1000},
                ),
            ),
        ),
        plan(
            "growth",
            (
                RateCardSpec(key="platform", name="Platform", price={**flat, "amount": "99.00"}),
                RateCardSpec(
                    key="tokens",
                    feature=llm,
                    price={
                        "model": "graduated",
                        "tiers": [
                            {"up_to": 10000, "unit_price": "0.0001"},
                            {"up_to": 50000, "unit_price": "0.00005", "flat_price": "1.00"},
                            {"up_to": None, "unit_price": "0.00002"},
                        ],
                    },
                ),
            ),
        ),
        plan(
            "scale",
            (
                RateCardSpec(
                    key="tokens",
                    feature=llm,
                    price={"model": "package", "package_size": 100000, "package_price": "1.00"},
                ),
            ),
            minimum="500",
        ),
    ]


def setup(conn, *, accounts: int, per_account: int) -> dict:
    """Everything the run will find, in empty tables; returns what was made."""
    from metering.partitions import partitions_ensure
    from metering.services import usage_rollup

    started = time.perf_counter()
    reset(conn)
    versions = catalog_create()
    conn.execute(_CUSTOMERS, {"n": accounts})
    conn.execute(_SUBSIDIARIES, {})
    conn.execute(_MAPPINGS, {"since": OCT - timedelta(days=30)})
    conn.execute(_SUBSCRIPTIONS, {"versions": versions, "start": OCT})
    partitions_ensure([date(2026, 10, 1), date(2026, 11, 1), date(2026, 12, 1)])
    conn.execute("SELECT setseed(0.42)")
    conn.execute(_EVENTS, {"start": OCT, "per": per_account})
    customers = conn.execute("SELECT count(*) FROM customers_customer").fetchone()[0]
    events = conn.execute("SELECT count(*) FROM metering_event").fetchone()[0]
    loaded = time.perf_counter() - started

    waited = horizon_wait(conn)
    started = time.perf_counter()
    rolled = usage_rollup(now=NOV).events
    rolled_in = time.perf_counter() - started
    if rolled != events:
        raise SystemExit(f"the rollup took {rolled:,} of {events:,} events")
    for table in (
        "metering_event",
        "metering_usagebucket",
        "customers_customer",
        "customers_consumermapping",
        "billing_subscription",
    ):
        conn.execute(f"VACUUM ANALYZE {table}")
    buckets = conn.execute("SELECT count(*) FROM metering_usagebucket").fetchone()[0]
    waited += horizon_wait(conn)
    return {
        "customers": customers,
        "events": events,
        "buckets": buckets,
        "loaded": loaded,
        "rolled": rolled_in,
        "waited": waited,
    }


class StatementCounter:
    """Counts the SQL statements Django sends (an ``execute_wrapper``), by their text
    (parameters are placeholders, so one call site is one text)."""

    def __init__(self) -> None:
        self.count = 0
        self.by_text: dict[str, int] = {}

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        key = " ".join(sql.split())[:110]
        self.by_text[key] = self.by_text.get(key, 0) + 1
        return execute(sql, params, many, context)


def run_phases(now: datetime, counter: StatementCounter) -> dict:
    """What ``billing_run(now=now)`` does before rendering PDFs, timed per step."""
    from billing.invoicing.services import drafts_refresh, invoices_issue_due, periods_close
    from metering.services import usage_rollup

    out: dict = {"seconds": {}, "statements": {}}
    for name, step in (
        ("rollup", lambda: usage_rollup(now=now).events),
        ("close", lambda: periods_close(now=now).created),
        ("refresh", lambda: drafts_refresh(now=now)),
        ("issue", lambda: invoices_issue_due(now=now)),
    ):
        before, started = counter.count, time.perf_counter()
        out[name] = step()
        out["seconds"][name] = time.perf_counter() - started
        out["statements"][name] = counter.count - before
    return out


def measure(conn, *, profile: bool) -> dict:
    """Both runs (period end, after grace) for ``accounts``; their figures."""
    from django.db import connection

    counter = StatementCounter()
    checkpoint(conn)
    backends = backend_cpu_seconds(conn)
    cpu, started = time.process_time(), time.perf_counter()
    profiler = cProfile.Profile() if profile else None
    with connection.execute_wrapper(counter):
        if profiler:
            profiler.enable()
        at_end = run_phases(AT_PERIOD_END, counter)
        after_grace = run_phases(AFTER_GRACE, counter)
        if profiler:
            profiler.disable()
    wall = time.perf_counter() - started
    return {
        "wall": wall,
        "cpu": time.process_time() - cpu,
        "db_cpu": cpu_delta(backends, backend_cpu_seconds(conn)),
        "at_end": at_end,
        "after_grace": after_grace,
        "statements": counter.count,
        "by_text": counter.by_text,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "profiler": profiler,
    }


def check(conn, *, accounts: int, queue: str, redis_url: str) -> str:
    """The run's result is what it must be; returns what was written, per table."""
    row = conn.execute(
        """
        SELECT count(*), count(*) FILTER (WHERE status = 'issued'), count(DISTINCT number),
               min(substr(number, 10)::int), max(substr(number, 10)::int),
               (SELECT count(*) FROM rails_settlement),
               (SELECT count(*) FROM billing_invoiceline),
               (SELECT count(*) FROM billing_invoiceevent),
               (SELECT count(*) FROM rails_settlementevent),
               sum(total)
        FROM billing_invoice
        """
    ).fetchone()
    invoices, issued, numbers, low, high, settlements, lines, events, s_events, total = row
    if (invoices, issued, numbers, low, high, settlements) != (
        accounts,
        accounts,
        accounts,
        1,
        accounts,
        accounts,
    ):
        raise SystemExit(
            f"expected {accounts} issued invoices numbered 1..{accounts} with a settlement "
            f"each; found {row}"
        )
    usage = conn.execute(
        """
        SELECT f.key, (SELECT coalesce(sum(l.quantity), 0) FROM billing_invoiceline l
                       WHERE l.feature_id = f.id AND l.kind = 'usage'),
               (SELECT coalesce(sum(CASE WHEN m.aggregation = 'COUNT' THEN b.event_count ELSE b.value_sum END), 0)
                FROM metering_usagebucket b WHERE b.meter_id = m.id AND b.customer_id IS NOT NULL
                  AND b.hour >= %s AND b.hour < %s)
        FROM metering_feature f JOIN metering_meter m ON m.id = f.meter_id
        """,
        [OCT, NOV],
    ).fetchall()
    for key, billed, rolled in usage:
        if billed != rolled:
            raise SystemExit(f"{key}: the invoices bill {billed}, the buckets hold {rolled}")
    import redis

    client = redis.Redis.from_url(redis_url)
    messages = client.lrange(queue, 0, -1)
    client.delete(queue)
    covered = {"invoice": set(), "settlement": set()}
    for message in messages:  # Celery's protocol 2: the body is [args, kwargs, embed]
        _, kwargs, _ = json.loads(base64.b64decode(json.loads(message)["body"]))
        for kind, ids in covered.items():
            ids.update(kwargs.get(f"{kind}_ids", []))
            if kwargs.get(f"{kind}_id") is not None:
                ids.add(kwargs[f"{kind}_id"])
    if len(covered["invoice"]) != accounts or len(covered["settlement"]) != accounts:
        raise SystemExit(
            f"expected a PDF and a settlement task for each of {accounts} invoices; "
            f"{len(covered['invoice'])} and {len(covered['settlement'])} in {len(messages)} tasks"
        )
    return (
        f"{invoices:,} invoices (total ${total:,.2f}), {lines:,} lines, {events:,} invoice "
        f"events, {settlements:,} settlements, {s_events:,} settlement events; "
        f"{len(messages):,} tasks enqueued (PDFs and settlements, for {accounts:,} invoices)"
    )


def written_counts(conn) -> dict[str, int]:
    tables = (
        "billing_invoice",
        "billing_invoiceline",
        "billing_invoiceevent",
        "rails_settlement",
        "rails_settlementevent",
    )
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


# The physical limit: the same rows, set-based. The invoices are for November (the run's
# are October's) so the unique constraints do not meet; everything is rolled back.
_BASELINE = [
    """
    CREATE TEMP TABLE bench_usage ON COMMIT DROP AS
    SELECT a.id AS account_id, row_number() OVER (ORDER BY a.id) AS n,
           coalesce(sum(b.event_count), 0) AS events, coalesce(sum(b.value_sum), 0) AS total
    FROM customers_customer a
    JOIN customers_customer c ON coalesce(c.parent_id, c.id) = a.id
    LEFT JOIN metering_usagebucket b ON b.customer_id = c.id AND b.hour >= %(start)s AND b.hour < %(end)s
    WHERE a.parent_id IS NULL
    GROUP BY a.id
    """,
    """
    INSERT INTO billing_invoice (
        id, number, status, currency, period_start, period_end, subtotal, tax_total, total,
        credits_applied, amount_due, amount_paid, tax_exempt_reason, grace_until, rated_at,
        rated_xmin, pdf, settlement_state, memo, void_reason, created_at, updated_at, customer_id
    )
    SELECT gen_random_uuid(), NULL, 'draft', 'USD', %(nov)s, %(dec)s, u.total / 1000, 0,
           u.total / 1000, 0, u.total / 1000, 0, '', %(nov)s, now(), 0, '', '', '', '', now(),
           now(), u.account_id
    FROM bench_usage u
    """,
    """
    INSERT INTO billing_invoiceline (
        position, kind, description, period_start, period_end, quantity, unit_price, amount,
        unrounded_amount, group_quantity, group_amount, tier_breakdown, manual, customer_id,
        invoice_id
    )
    SELECT g, 'usage', 'Usage', %(nov)s, %(dec)s, u.total, 0.001, u.total / 1000,
           u.total / 1000, u.total, u.total / 1000, '[]', false, u.account_id, i.id
    FROM generate_series(0, %(lines)s - 1) AS g
    JOIN bench_usage u ON u.n = 1 + g %% %(accounts)s
    JOIN billing_invoice i ON i.customer_id = u.account_id AND i.period_start = %(nov)s
    """,
    """
    INSERT INTO billing_invoiceevent (at, from_status, to_status, actor, note, invoice_id)
    SELECT now(), s.f, s.t, 'billing run', 'set-based', i.id
    FROM billing_invoice i CROSS JOIN (VALUES ('', 'draft'), ('draft', 'issued')) AS s(f, t)
    WHERE i.period_start = %(nov)s
    """,
    """
    INSERT INTO rails_settlement (
        rail, state, attempts, sandbox, external_ids, last_error, next_action_at, created_at,
        updated_at, invoice_id
    )
    SELECT 'manual', 'pending', 0, false, '{}', '', now(), now(), now(), i.id
    FROM billing_invoice i WHERE i.period_start = %(nov)s
    """,
    """
    INSERT INTO rails_settlementevent (at, from_state, to_state, actor, note, settlement_id)
    SELECT now(), '', 'pending', 'billing', 'set-based', s.id
    FROM rails_settlement s JOIN billing_invoice i ON i.id = s.invoice_id
    WHERE i.period_start = %(nov)s
    """,
    """
    UPDATE billing_invoice i SET status = 'issued', number = 'BENCH-' || lpad(u.n::text, 6, '0'),
           issued_at = now(), due_at = now() + interval '30 days', settlement_state = 'pending'
    FROM bench_usage u WHERE u.account_id = i.customer_id AND i.period_start = %(nov)s
    """,
]


def baseline_run(url: str, *, accounts: int, lines: int) -> tuple[float, dict]:
    """The set-based writes of the same rows, in one transaction that is rolled back."""
    with psycopg.connect(url) as conn:
        conn.execute("SELECT 1")
        conn.rollback()
        params = {
            "start": OCT,
            "end": NOV,
            "nov": NOV,
            "dec": DEC,
            "accounts": accounts,
            "lines": lines,
        }
        started = time.perf_counter()
        counts = {}
        for statement in _BASELINE:
            counts[statement.split()[2]] = conn.execute(statement, params).rowcount
        seconds = time.perf_counter() - started
        conn.rollback()
    return seconds, counts


def report(size: int, made: dict, result: dict, written: str) -> None:
    at_end, after = result["at_end"], result["after_grace"]
    wall = result["wall"]
    figure(
        f"setup {size:,} (untimed)",
        f"{made['customers']:,} customers, {made['events']:,} events rolled up into "
        f"{made['buckets']:,} buckets; loaded in {made['loaded']:.1f} s, rollup "
        f"{made['rolled']:.1f} s",
    )

    def phases(run: dict) -> str:
        return ", ".join(f"{k} {v:.2f} s" for k, v in run["seconds"].items())

    figure(
        f"run at period end {size:,}",
        f"{sum(at_end['seconds'].values()):.2f} s ({phases(at_end)}); "
        f"{at_end['close']:,} drafts, {at_end['refresh']:,} refreshed",
    )
    figure(
        f"run after grace {size:,}",
        f"{sum(after['seconds'].values()):.2f} s ({phases(after)}); "
        f"{after['issue']:,} issued, {after['refresh']:,} refreshed",
    )
    figure(
        f"billing run {size:,}",
        f"{wall:.2f} s, {rate(size, wall)} accounts/s, {wall / size * 1000:.2f} ms per account",
    )
    statements = {
        "drafts": at_end["statements"]["close"],
        "issue": after["statements"]["issue"],
        "rest": result["statements"] - at_end["statements"]["close"] - after["statements"]["issue"],
    }
    figure(
        f"SQL statements {size:,}",
        f"{result['statements'] / size:.1f} per account ("
        + ", ".join(f"{k} {v / size:.1f}" for k, v in statements.items())
        + ")",
    )
    other = wall - result["cpu"] - result["db_cpu"]
    figure(
        f"CPU {size:,}",
        f"this process {result['cpu']:.1f} s, PostgreSQL backend {result['db_cpu']:.1f} s, "
        f"neither (waits, round trips, other load) {max(other, 0):.1f} s",
    )
    figure(f"peak RSS {size:,}", f"{result['rss_mb']:.0f} MB")
    figure(f"written {size:,}", written)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=TARGET_ACCOUNTS)
    parser.add_argument(
        "--events-per-account",
        type=int,
        default=200,
        help="events per customer in October (about as many hourly buckets, up to 744)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile the largest size with cProfile"
    )
    add_database_arguments(parser)
    args = parser.parse_args(argv)
    if args.accounts < 10 or args.events_per_account < 1:
        parser.error("--accounts must be at least 10 and --events-per-account positive")

    url = bench_database_url(database_url=args.database_url, database=args.database)
    migrated = migrate(url)
    redis_url = redis_url_for_bench()
    django_setup(url, redis_url)
    from config.celery import app

    queue = f"bench-billing-run-{uuid.uuid4().hex[:8]}"
    app.conf.task_default_queue = queue  # nobody consumes it; counted and dropped
    control = psycopg.connect(url, autocommit=True)
    bench_lock(control, args.database)
    sizes = [args.accounts // 10, args.accounts]
    print(
        f"== bench/billing_run: {sizes[0]:,} then {sizes[1]:,} billing accounts, "
        f"{args.events_per_account} events per customer over October, drafts and issue "
        f"without PDFs ==",
        flush=True,
    )
    figure("database", f"{safe_url(url)} (migrated in {migrated:.1f} s)")
    figure("server", server_summary(control))

    results = {}
    for size in sizes:
        made = setup(control, accounts=size, per_account=args.events_per_account)
        result = measure(control, profile=args.profile and size == sizes[-1])
        written = check(control, accounts=size, queue=queue, redis_url=redis_url)
        report(size, made, result, written)
        results[size] = (made, result)

    small, large = (results[s][1] for s in sizes)
    growth = large["rss_mb"] - small["rss_mb"]
    figure(
        "memory",
        f"peak RSS {small['rss_mb']:.0f} MB after {sizes[0]:,} accounts, "
        f"{large['rss_mb']:.0f} MB after {sizes[1]:,} (+{growth:.0f} MB, "
        f"{growth * 1024 / (sizes[1] - sizes[0]):.1f} KB per extra account)",
    )
    counts = written_counts(control)
    checkpoint(control)
    base_seconds, base_counts = baseline_run(
        url,
        accounts=args.accounts,
        lines=counts["billing_invoiceline"],
    )
    rows = sum(counts.values())
    figure(
        "set-based SQL",
        f"{base_seconds:.2f} s for the same {rows:,} rows ("
        + ", ".join(f"{t.split('_', 1)[1]} {n:,}" for t, n in counts.items())
        + "), one statement per table and one UPDATE issuing them, rolled back",
    )
    wall = large["wall"]
    figure(
        "ratio billing run/set-based SQL",
        f"{wall / base_seconds:.1f} ({wall:.2f} s against {base_seconds:.2f} s)",
    )
    if sizes[1] == TARGET_ACCOUNTS:
        verdict = "met" if wall <= TARGET_SECONDS else "MISSED"
        figure(
            "target",
            f"{TARGET_ACCOUNTS:,} accounts in <= {TARGET_SECONDS:.0f} s: {verdict} ({wall:.1f} s)",
        )
    else:
        projected = wall / sizes[1] * TARGET_ACCOUNTS
        figure(
            "target",
            f"{TARGET_ACCOUNTS:,} accounts in <= {TARGET_SECONDS:.0f} s: projected "
            f"{projected:.0f} s from {sizes[1]:,} (run --accounts {TARGET_ACCOUNTS} to measure)",
        )
    print(f"\n-- SQL statements per account at {sizes[1]:,} accounts, by text --", flush=True)
    for text, count in sorted(large["by_text"].items(), key=lambda kv: -kv[1])[:20]:
        print(f"{count / sizes[1]:6.2f}  {text}", flush=True)
    if large["profiler"] is not None:
        text = io.StringIO()
        stats = pstats.Stats(large["profiler"], stream=text)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(40)
        print("\n-- cProfile of the largest size --\n" + text.getvalue(), flush=True)
    control.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
