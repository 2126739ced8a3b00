#!/usr/bin/env python
"""Benchmark of the usage rollup: full and incremental, against a raw GROUP BY.

    .venv/bin/python bench/rollup.py [--events 5000000] [--subjects 100] [--explain] [--timeout 1800]

1. Works in its own database (``billing_bench`` on the server of ``--database-url`` /
   ``DATABASE_URL`` / the embedded server), migrated with ``manage.py migrate``; empties
   its customers, mappings, meters, buckets and events first.
2. Creates customers and consumer mappings (most subjects mapped for the whole month,
   some moved to another customer mid-month, some never mapped) and three meters:
   ``llm_tokens`` (SUM $.tokens by model and direction), ``api_requests`` (COUNT by
   route and status) and ``llm_users`` (UNIQUE_COUNT $.user).
3. Loads ``--events`` events with ``INSERT … SELECT … generate_series`` (60% LLM token
   events, 40% API request events, times over 30 days, subjects skewed so a few are
   busy), then ``VACUUM ANALYZE`` (all untimed).
4. Baseline: per meter, one plain ``SELECT … GROUP BY`` over the same events with the
   same mapping join, computing what the meter's buckets hold for it per (customer,
   subject, UTC hour, dimensions): ``count(*)``, ``min(time)`` and ``max(time)`` for every
   meter, plus ``count``, ``sum``, ``min`` and ``max`` of the tokens for llm_tokens and
   ``array_agg(DISTINCT user)`` for llm_users. Results are summed up on the server and
   discarded: no writes. PostgreSQL may run these plain SELECTs with parallel workers, as
   it may the rollup's own GROUP BY (a CREATE TEMPORARY TABLE … AS SELECT). The narrower
   baseline of earlier figures (counts and sums only) is timed and printed beside it.
5. Full rollup: ``metering.rollup.meters_rollup`` of every meter, from an empty state, as
   ``usage_rollup`` runs it (``METERING_ROLLUP_WORKERS`` meters at once, each on its own
   connection; the time is the wall time, and each meter's own time is printed too).
   Checks that its buckets hold exactly the baseline's totals.
6. Incremental, twice, each time after loading 1% more events (in two more
   transactions), waiting until the commit horizon has passed them and taking a
   CHECKPOINT: "new traffic" are the next 1% of the stream, with times in the 7.2 hours
   after the month (what the one-minute schedule meets: new hours, new buckets); "late
   events" are 1% more with times spread over the whole month (the stress case: they
   update buckets on nearly every page of the bucket table, each written whole to the
   WAL once after the checkpoint). Times ``meters_rollup`` each time, prints the WAL it
   wrote, and checks that every stored event was rolled up exactly once.
7. Prints the figures, ``ratio full rollup/GROUP BY`` (target <= 1.5) and
   ``ratio incremental/full`` of both runs (target <= 0.05 for new traffic; the stress
   case is printed beside it). ``--explain`` then repeats the full
   rollup inside a transaction that is rolled back, printing EXPLAIN (ANALYZE, BUFFERS)
   of each statement it runs that reads the events.

Every statement is bounded by ``--timeout`` (statement_timeout). See docs/performance.md
for what the figures mean and the figures on record.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from bench.common import (  # noqa: E402
    add_database_arguments,
    bench_database_url,
    bench_lock,
    checkpoint,
    figure,
    horizon_wait,
    migrate,
    rate,
    safe_url,
    server_summary,
)

TARGET_FULL_RATIO = 1.5
TARGET_INCREMENTAL_RATIO = 0.05
MONTH_START = datetime(2026, 10, 1, tzinfo=UTC)
MONTH_SPAN = timedelta(days=30)
NOW = datetime(2026, 11, 2, tzinfo=UTC)
USERS_PER_SUBJECT = 50
# The incremental runs: where the 1% new events' times fall.
INCREMENTAL_CASES = {
    "new traffic": (MONTH_START + MONTH_SPAN, MONTH_SPAN / 100),
    "late events": (MONTH_START, MONTH_SPAN),
}
INCREMENTAL_TEXT = {
    "new traffic": "in the 7.2 hours after the month (the next 1% of the traffic)",
    "late events": "spread over the whole month (late events: the stress case)",
}
METER_EVENT_TYPES = {"llm_tokens": "llm", "api_requests": "request", "llm_users": "llm"}

# One statement generates a chunk of events. random() is seeded per chunk (setseed) so a
# run is repeatable. Subjects are skewed (power 2): the low numbers are the busy ones.
_LOAD = """
INSERT INTO metering_event (source, event_id, type, subject, time, data)
SELECT CASE WHEN llm THEN 'llm-proxy-eu' ELSE 'kong-eu-west-1' END,
       'bench-' || g,
       CASE WHEN llm THEN 'llm' ELSE 'request' END,
       subject,
       %(start)s::timestamptz + r0 * %(span)s::interval,
       CASE WHEN llm THEN jsonb_build_object(
           'model', (ARRAY['gpt-4o', 'gpt-4o', 'gpt-4o-mini', 'gpt-4o-mini', 'gpt-4o-mini',
                           'claude-sonnet-4', 'claude-sonnet-4', 'claude-haiku-4', 'llama-3.1-70b',
                           'gpt-4o-mini'])[1 + floor(r1 * 10)::int],
           'direction', CASE WHEN r2 < 0.5 THEN 'input' ELSE 'output' END,
           'tokens', 1 + floor(exp(4 + 4 * r3))::int,
           'user', subject || ':u' || floor(r4 * %(users)s)::int,
           'request_id', 'req_' || to_hex(g * 2654435761),
           'latency_ms', 200 + floor(r3 * 3000)::int,
           'stream', r4 < 0.7)
       ELSE jsonb_build_object(
           'route', (ARRAY['/v1/flights', '/v1/flights', '/v1/flights', '/v1/flights/{id}',
                           '/v1/flights/{id}', '/v1/hotels', '/v1/hotels', '/v1/bookings',
                           '/v1/search', '/v1/bookings/{id}'])[1 + floor(r1 * 10)::int],
           'method', CASE WHEN r1 < 0.8 THEN 'GET' ELSE 'POST' END,
           'status', CASE WHEN r2 < 0.9 THEN 200 WHEN r2 < 0.94 THEN 201 WHEN r2 < 0.97 THEN 400
                          WHEN r2 < 0.985 THEN 404 WHEN r2 < 0.995 THEN 429 ELSE 500 END,
           'duration_ms', round((5 + 300 * r3 * r3)::numeric, 3),
           'user', subject || ':u' || floor(r4 * %(users)s)::int,
           'bytes_out', floor(200 + 20000 * r4 * r3)::int,
           'region', 'eu-west-1')
       END
FROM (
    SELECT g, random() < 0.6 AS llm,
           'consumer-' || lpad(floor(power(random(), 2) * %(subjects)s)::int::text, 4, '0') AS subject,
           random() AS r0, random() AS r1, random() AS r2, random() AS r3, random() AS r4
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint - 1) AS g
) s
"""

# The baseline: what each meter's buckets hold for it, computed by one GROUP BY over the
# same events with the same mapping join, aggregated on the server and discarded.
_MAPPING_JOIN = """
LEFT JOIN customers_consumermapping m
       ON m.consumer_key = e.subject AND m.valid_from <= e.time
      AND (m.valid_to IS NULL OR e.time < m.valid_to)
"""
BASELINES = {
    "llm_tokens": f"""
        SELECT count(*), coalesce(sum(n), 0), coalesce(sum(tokens), 0) FROM (
            SELECT m.customer_id, e.subject, date_trunc('hour', e.time, 'UTC'),
                   e.data ->> 'model', e.data ->> 'direction',
                   count(*) AS n, count(t) AS values, sum(t) AS tokens, min(t), max(t),
                   min(e.time), max(e.time)
            FROM metering_event e CROSS JOIN LATERAL (SELECT (e.data ->> 'tokens')::numeric AS t) v
            {_MAPPING_JOIN}
            WHERE e.type = 'llm'
            GROUP BY 1, 2, 3, 4, 5
        ) g""",
    "api_requests": f"""
        SELECT count(*), coalesce(sum(n), 0), 0 FROM (
            SELECT m.customer_id, e.subject, date_trunc('hour', e.time, 'UTC'),
                   e.data ->> 'route', e.data ->> 'status', count(*) AS n,
                   min(e.time), max(e.time)
            FROM metering_event e {_MAPPING_JOIN}
            WHERE e.type = 'request'
            GROUP BY 1, 2, 3, 4, 5
        ) g""",
    "llm_users": f"""
        SELECT count(*), coalesce(sum(n), 0), coalesce(sum(cardinality(users)), 0) FROM (
            SELECT m.customer_id, e.subject, date_trunc('hour', e.time, 'UTC'),
                   count(*) AS n, array_agg(DISTINCT e.data ->> 'user') AS users,
                   min(e.time), max(e.time)
            FROM metering_event e {_MAPPING_JOIN}
            WHERE e.type = 'llm'
            GROUP BY 1, 2, 3
        ) g""",
}
# The baseline of the figures on record before 2026-11-27: counts and sums only, without
# the times, value count, minimum and maximum (and the distinct values themselves) that
# the buckets also hold. Printed beside the full one so the two can be compared.
BASELINES_NARROW = {
    "llm_tokens": f"""
        SELECT count(*), coalesce(sum(n), 0), coalesce(sum(tokens), 0) FROM (
            SELECT m.customer_id, e.subject, date_trunc('hour', e.time, 'UTC'),
                   e.data ->> 'model', e.data ->> 'direction',
                   count(*) AS n, sum((e.data ->> 'tokens')::numeric) AS tokens
            FROM metering_event e {_MAPPING_JOIN}
            WHERE e.type = 'llm'
            GROUP BY 1, 2, 3, 4, 5
        ) g""",
    "api_requests": f"""
        SELECT count(*), coalesce(sum(n), 0), 0 FROM (
            SELECT m.customer_id, e.subject, date_trunc('hour', e.time, 'UTC'),
                   e.data ->> 'route', e.data ->> 'status', count(*) AS n
            FROM metering_event e {_MAPPING_JOIN}
            WHERE e.type = 'request'
            GROUP BY 1, 2, 3, 4, 5
        ) g""",
    "llm_users": f"""
        SELECT count(*), coalesce(sum(n), 0), coalesce(sum(users), 0) FROM (
            SELECT m.customer_id, e.subject, date_trunc('hour', e.time, 'UTC'),
                   count(*) AS n, count(DISTINCT e.data ->> 'user') AS users
            FROM metering_event e {_MAPPING_JOIN}
            WHERE e.type = 'llm'
            GROUP BY 1, 2, 3
        ) g""",
}


def django_setup(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def reset(conn) -> None:
    conn.execute(
        "TRUNCATE metering_event, metering_eventkey, metering_usagebucket, metering_rollupstate, "
        " metering_feature, metering_meter, customers_consumermappingchange, "
        "customers_consumermapping, customers_customer CASCADE"
    )


def catalog_create(*, subjects: int) -> list:
    """Customers, consumer mappings and the three meters, through the services."""
    from customers.services import consumer_mapping_create, customer_create
    from metering.services import mapping_changes_apply, meter_create

    customers = [
        customer_create(key=f"bench-{i:03d}", name=f"Bench customer {i}")
        for i in range(max(1, subjects // 3))
    ]
    long_ago = MONTH_START - timedelta(days=365)
    for n in range(subjects):
        key = f"consumer-{n:04d}"
        owner = customers[n % len(customers)]
        if n % 10 == 9:
            continue  # never mapped: unattributed usage
        if n % 10 == 4:  # moved to another customer mid-month
            middle = MONTH_START + timedelta(days=14, hours=n % 24)
            consumer_mapping_create(
                consumer_key=key, customer=owner, valid_from=long_ago, valid_to=middle
            )
            owner = customers[(n + 1) % len(customers)]
            consumer_mapping_create(consumer_key=key, customer=owner, valid_from=middle)
        else:
            consumer_mapping_create(consumer_key=key, customer=owner, valid_from=long_ago)
    # The mapping outbox is drained before there is any usage, so the rollup times below
    # are the meters' own work.
    while mapping_changes_apply(now=NOW, limit=1000)[0]:
        pass
    # The events below land in October 2026 (and the incremental batch after it): their
    # monthly partitions must exist, as ingestion would have made them.
    from metering.partitions import month_start, next_month, partitions_ensure

    partitions_ensure({month_start(MONTH_START), next_month(month_start(MONTH_START))})
    return [
        meter_create(
            key="llm_tokens",
            event_type="llm",
            aggregation="SUM",
            value_property="$.tokens",
            group_by={"model": "$.model", "direction": "$.direction"},
        ),
        meter_create(
            key="api_requests",
            event_type="request",
            aggregation="COUNT",
            group_by={"route": "$.route", "status": "$.status"},
        ),
        meter_create(
            key="llm_users", event_type="llm", aggregation="UNIQUE_COUNT", value_property="$.user"
        ),
    ]


def events_load(
    url: str,
    *,
    first: int,
    count: int,
    subjects: int,
    start: datetime = MONTH_START,
    span: timedelta = MONTH_SPAN,
    loaders: int = 2,
) -> tuple[float, int]:
    """Insert ``count`` events numbered from ``first`` on, their times spread evenly over
    ``[start, start + span)``, in ``loaders`` parallel connections; returns the seconds
    taken and the highest loading transaction id."""
    bounds = [first + count * i // loaders for i in range(loaders + 1)]
    errors: list[BaseException] = []
    xids: list[int] = []

    def load(lo: int, hi: int) -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
                conn.execute("SELECT setseed(%s)", [(lo % 1_000_003) / 1_000_003])
                conn.execute(
                    _LOAD,
                    {
                        "start": start,
                        "span": span,
                        "lo": lo,
                        "hi": hi,
                        "subjects": subjects,
                        "users": USERS_PER_SUBJECT,
                    },
                )
                xids.append(conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0])
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    started = time.perf_counter()
    threads = [
        threading.Thread(target=load, args=(bounds[i], bounds[i + 1]))
        for i in range(loaders)
        if bounds[i + 1] > bounds[i]
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started, max(xids)


def wal_written(conn) -> tuple[int, int]:
    """(bytes, full-page images) of WAL written so far on the server (``pg_stat_wal``, so
    server-wide: the benchmark's server should be quiet)."""
    row = conn.execute(
        "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint, wal_fpi "
        "FROM pg_stat_wal"
    ).fetchone()
    return int(row[0]), int(row[1])


def baseline_run(conn, statements=BASELINES) -> tuple[dict[str, float], dict[str, tuple]]:
    seconds, totals = {}, {}
    for key, statement in statements.items():
        started = time.perf_counter()
        totals[key] = tuple(conn.execute(statement).fetchone())
        seconds[key] = time.perf_counter() - started
    return seconds, totals


def rollup_run(meters) -> tuple[float, dict[str, float], dict[str, int]]:
    """``meters_rollup`` as ``usage_rollup`` runs it (``METERING_ROLLUP_WORKERS`` meters at
    once); (wall seconds, each meter's own seconds, each meter's events)."""
    from metering import rollup

    seconds, events = {}, {}
    timed = rollup.meter_rollup

    def meter_rollup(*, meter, now):
        started = time.perf_counter()
        result = timed(meter=meter, now=now)
        seconds[meter.key] = time.perf_counter() - started
        events[meter.key] = result.events
        return result

    rollup.meter_rollup = meter_rollup
    try:
        started = time.perf_counter()
        rollup.meters_rollup(meters=list(meters), now=NOW)
        wall = time.perf_counter() - started
    finally:
        rollup.meter_rollup = timed
    return wall, {m.key: seconds[m.key] for m in meters}, events


def workers_text() -> str:
    from django.conf import settings

    workers = settings.METERING_ROLLUP_WORKERS
    return "one meter at a time" if workers <= 1 else f"{workers} meters at a time"


def rollup_totals(conn, meters) -> dict[str, tuple]:
    """The buckets' totals in the shape of the baseline's, to check they agree."""
    ids = {m.key: m.pk for m in meters}
    totals = {}
    for key in ("llm_tokens", "api_requests"):
        groups, events, value = conn.execute(
            "SELECT count(*), coalesce(sum(event_count), 0), coalesce(sum(value_sum), 0) "
            "FROM metering_usagebucket WHERE meter_id = %s",
            [ids[key]],
        ).fetchone()
        totals[key] = (groups, events, value if key == "llm_tokens" else 0)
    buckets, events = conn.execute(
        "SELECT count(*), coalesce(sum(event_count), 0) FROM metering_usagebucket "
        "WHERE meter_id = %s",
        [ids["llm_users"]],
    ).fetchone()
    values = conn.execute(
        "SELECT coalesce(sum(cardinality(unique_values)), 0) FROM metering_usagebucket "
        "WHERE meter_id = %s",
        [ids["llm_users"]],
    ).fetchone()[0]
    totals["llm_users"] = (buckets, events, values)
    return totals


def rollup_sizes(conn) -> str:
    row = conn.execute(
        "SELECT count(*), coalesce(sum(cardinality(unique_values)), 0), "
        "pg_size_pretty(pg_total_relation_size('metering_usagebucket')) FROM metering_usagebucket"
    ).fetchone()
    return f"{row[0]:,} usage buckets holding {row[1]:,} distinct values ({row[2]} with indexes)"


def explain_full_rollup(meters) -> None:
    """Repeat the full rollup in a transaction that is rolled back, printing EXPLAIN
    (ANALYZE, BUFFERS) of each statement before running it (under a savepoint)."""
    from django.db import connection, transaction

    from metering.rollup import meter_rollup

    def explain(execute, sql, params, many, context):
        heavy = not many and ("metering_event" in sql or "FROM metering_rollup_agg" in sql)
        if heavy:
            cursor = context["cursor"].cursor  # the driver's cursor: no wrappers
            cursor.execute("SAVEPOINT bench_explain")
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, VERBOSE) " + sql, params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            cursor.execute("ROLLBACK TO SAVEPOINT bench_explain")
            print(f"\n-- EXPLAIN ANALYZE of:\n{sql.strip()}\n{plan}\n", flush=True)
        return execute(sql, params, many, context)

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE metering_usagebucket, metering_rollupstate")
        with connection.execute_wrapper(explain):
            for meter in meters:
                meter_rollup(meter=meter, now=NOW)
        transaction.set_rollback(True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--subjects", type=int, default=100, help="gateway consumers")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="after the figures, EXPLAIN ANALYZE the full rollup's statements",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800,
        help="seconds any one SQL statement may take (statement_timeout) before the run fails",
    )
    add_database_arguments(parser)
    args = parser.parse_args(argv)
    if args.events < 100 or args.subjects < 1:
        parser.error("--events must be at least 100 and --subjects positive")
    # Every connection this process opens (Django's, the loaders', the control one) gets it.
    os.environ["PGOPTIONS"] = (
        os.environ.get("PGOPTIONS", "") + f" -c statement_timeout={int(args.timeout * 1000)}"
    ).strip()

    url = bench_database_url(database_url=args.database_url, database=args.database)
    migrated = migrate(url)
    django_setup(url)
    control = psycopg.connect(url, autocommit=True)
    bench_lock(control, args.database)
    increment = args.events // 100
    print(
        f"== bench/rollup: {args.events:,} events (+{increment:,} twice for the incremental runs), "
        f"{args.subjects} subjects, 3 meters ==",
        flush=True,
    )
    figure("database", f"{safe_url(url)} (migrated in {migrated:.1f} s)")
    figure("server", server_summary(control))

    reset(control)
    meters = catalog_create(subjects=args.subjects)
    loaded, xid = events_load(url, first=0, count=args.events, subjects=args.subjects)
    waited = horizon_wait(control, xid, timeout=120)
    started = time.perf_counter()
    control.execute("VACUUM ANALYZE metering_event")
    control.execute("VACUUM ANALYZE customers_consumermapping")
    size = control.execute(
        "SELECT pg_size_pretty(sum(pg_total_relation_size(inhrelid))) FROM pg_inherits "
        "WHERE inhparent = 'metering_event'::regclass"
    ).fetchone()[0]
    figure(
        "loaded (untimed)",
        f"{args.events:,} events in {loaded:.1f} s ({rate(args.events, loaded)}/s), "
        f"VACUUM ANALYZE {time.perf_counter() - started:.1f} s, {size} with indexes",
    )

    checkpoint(control)
    base_seconds, base_totals = baseline_run(control)
    base_total = sum(base_seconds.values())
    figure(
        "raw GROUP BY",
        f"{base_total:.2f} s ("
        + ", ".join(f"{k} {v:.2f} s" for k, v in base_seconds.items())
        + f"; {rate(args.events, base_total)} events/s)",
    )

    checkpoint(control)
    narrow_seconds, narrow_totals = baseline_run(control, BASELINES_NARROW)
    narrow_total = sum(narrow_seconds.values())
    if narrow_totals != base_totals:
        raise SystemExit(f"the two baselines disagree: {narrow_totals} and {base_totals}")
    figure(
        "GROUP BY of counts/sums only",
        f"{narrow_total:.2f} s ("
        + ", ".join(f"{k} {v:.2f} s" for k, v in narrow_seconds.items())
        + "; the baseline before 2026-11-27, without times, min and max)",
    )

    checkpoint(control)
    full_total, full_seconds, full_events = rollup_run(meters)
    figure(
        "full rollup",
        f"{full_total:.2f} s ({workers_text()}: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in full_seconds.items())
        + f"; {rate(args.events, full_total)} events/s)",
    )
    figure("rollup output", rollup_sizes(control))
    totals = rollup_totals(control, meters)
    if totals != base_totals:
        raise SystemExit(f"the rollup's totals {totals} differ from the GROUP BY's {base_totals}")
    figure("check", "bucket counts, event counts, token sum and unique values equal the GROUP BY's")

    # Two incremental runs, each after 1% more events: first the next 1% of the traffic
    # (what the minute beat meets: new hours), then 1% late events spread over the whole
    # month (the stress case: most of the existing buckets' pages are updated).
    rolled = dict(full_events)
    cases = {}
    bucket_pages = control.execute(
        "SELECT pg_relation_size('metering_usagebucket') / current_setting('block_size')::int"
    ).fetchone()[0]
    for case, (start, span) in INCREMENTAL_CASES.items():
        first = args.events + increment * len(cases)
        added, xid = events_load(
            url, first=first, count=increment, subjects=args.subjects, start=start, span=span
        )
        waited += horizon_wait(control, xid, timeout=120)
        checkpoint(control)
        wal_before = wal_written(control)
        inc_total, inc_seconds, inc_events = rollup_run(meters)
        wal = [
            after - before for after, before in zip(wal_written(control), wal_before, strict=True)
        ]
        rolled = {k: rolled[k] + inc_events[k] for k in rolled}
        counts = dict(
            control.execute("SELECT type, count(*) FROM metering_event GROUP BY type").fetchall()
        )
        if any(rolled[k] != counts.get(t, 0) for k, t in METER_EVENT_TYPES.items()):
            raise SystemExit(f"rolled up {rolled}, but the event table holds {counts}")
        cases[case] = inc_total
        figure(
            f"incremental rollup, {case}",
            f"{inc_total:.3f} s for {increment:,} events {INCREMENTAL_TEXT[case]}, loaded in "
            f"{added:.1f} s ({workers_text()}: "
            + ", ".join(f"{k} {v:.3f} s" for k, v in inc_seconds.items())
            + f"; WAL {wal[0] / 1e6:.1f} MB, of it {wal[1]:,} whole pages"
            + (f" out of the buckets' {bucket_pages:,}" if bucket_pages else "")
            + ")",
        )
    full_ratio = full_total / base_total
    figure(
        "per meter full rollup/GROUP BY",
        ", ".join(f"{k} {full_seconds[k] / base_seconds[k]:.2f}" for k in full_seconds)
        + f"; against counts/sums only {full_total / narrow_total:.2f}",
    )
    figure(
        "ratio full rollup/GROUP BY",
        f"{full_ratio:.2f} (target <= {TARGET_FULL_RATIO}: "
        f"{'met' if full_ratio <= TARGET_FULL_RATIO else 'MISSED'})",
    )
    inc_ratio = cases["new traffic"] / full_total
    late_ratio = cases["late events"] / full_total
    figure(
        "ratio incremental/full",
        f"{inc_ratio:.3f} = {inc_ratio:.1%} for new traffic (target <= "
        f"{TARGET_INCREMENTAL_RATIO:.0%}: {'met' if inc_ratio <= TARGET_INCREMENTAL_RATIO else 'MISSED'}); "
        f"{late_ratio:.1%} for late events over the month (stress case)",
    )
    if waited > 0.5:
        figure(
            "note",
            f"waited {waited:.1f} s (untimed) for other transactions on the server to finish "
            "before the rollup could see the loaded events",
        )
    if args.explain:
        explain_full_rollup(meters)
    control.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
