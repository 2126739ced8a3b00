"""Synthetic gateway traffic for the demo and load tests, written straight into the event
store by one set-based statement per subject (a million events in seconds, where the
ingestion API would take minutes). The events look like the gateway presets' (API
requests with route, method, status and latency; LLM calls with tokens by direction and
model) and go in with their deduplication keys, so they roll up and bill like any other.
The caller makes sure the months' partitions exist.
"""

from __future__ import annotations

from datetime import datetime

from django.db import connection

# Traffic grows over the months (the day is drawn from a rising density) and peaks around
# midday UTC each day; a range shorter than three days is filled evenly. The events go in
# in time order (the time indexes fill in sequence, far faster than in random order) and
# their deduplication keys with them, in one statement.
_EVENTS_SQL = """
WITH params AS (
    SELECT %(start)s::timestamptz AS t0, %(end)s::timestamptz AS t1,
           extract(epoch FROM %(end)s::timestamptz - %(start)s::timestamptz) AS span
), series AS (
    SELECT g AS n, random() AS r1, random() AS r2, random() AS r3, random() AS r4,
           random() AS r5, random() AS r6
    FROM generate_series(1, %(count)s) AS g
), shaped AS (
    SELECT n, r2, r3, r4,
           CASE WHEN p.span < 3 * 86400 THEN p.t0 + make_interval(secs => p.span * r1)
                ELSE p.t0 + make_interval(days => floor(sqrt(r1) * ceil(p.span / 86400))::int,
                                          secs => 86400 * (r5 + r6) / 2)
           END AS time,
           (r2 < %(llm_share)s) AS is_llm
    FROM series CROSS JOIN params AS p
), stored AS (
    INSERT INTO metering_event (source, event_id, type, subject, time, data)
    SELECT 'demo-gateway', %(prefix)s || n, CASE WHEN is_llm THEN 'llm' ELSE 'request' END, %(subject)s, time,
           CASE WHEN is_llm THEN jsonb_build_object(
                    'tokens', CASE WHEN r3 < 0.5 THEN 200 + floor(r4 * 3800)::int ELSE 50 + floor(r4 * 1450)::int END,
                    'direction', CASE WHEN r3 < 0.5 THEN 'input' ELSE 'output' END,
                    'model', (ARRAY['gpt-4o', 'gpt-4o-mini', 'claude-sonnet', 'llama-3-70b'])[1 + floor(r4 * 4)::int %% 4])
                ELSE jsonb_build_object(
                    'route', (ARRAY['/flights', '/hotels', '/cars', '/flights', '/search'])[1 + floor(r3 * 5)::int %% 5],
                    'method', CASE WHEN r4 < 0.8 THEN 'GET' ELSE 'POST' END,
                    'status', (ARRAY['200', '200', '200', '200', '200', '200', '201', '404', '429', '500'])[1 + floor(r4 * 10)::int %% 10],
                    'latency_ms', 20 + floor(r3 * 400)::int)
           END
    FROM shaped
    WHERE time < (SELECT t1 FROM params)
    ORDER BY time
    RETURNING source, event_id, time
)
INSERT INTO metering_eventkey (source, event_id, time)
SELECT source, event_id, time FROM stored
"""


def synthetic_events_insert(
    *,
    start: datetime,
    end: datetime,
    count: int,
    subject: str,
    llm_share: float,
    prefix: str,
) -> int:
    """About ``count`` events for ``subject`` in ``[start, end)``, a share ``llm_share`` of
    them LLM calls, with ids ``prefix`` + a number (so another range adds new events).
    Returns how many were stored."""
    with connection.cursor() as cursor:
        cursor.execute(
            _EVENTS_SQL,
            {
                "start": start,
                "end": end,
                "count": count,
                "subject": subject,
                "llm_share": llm_share,
                "prefix": prefix,
            },
        )
        return cursor.rowcount


def event_statistics_refresh() -> None:
    """Fresh planner statistics for the event store, after a bulk load."""
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE metering_event")
