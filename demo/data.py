"""The demo's data set: the example catalog moved to recent months, and about a million
usage events of an API and AI business, generated inside PostgreSQL for speed."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import yaml
from django.conf import settings
from django.db import connection, transaction

from billing.periods import period_at
from metering.partitions import month_start, partitions_ensure

CATALOG = Path(settings.BASE_DIR) / "examples" / "catalog.yaml"
# The example file is written for October 2026; the demo moves it so that its first
# month is two months before the current one.
EXAMPLE_FIRST_MONTH = date(2026, 10, 1)
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(T.*)?$")

# consumer key -> (share of traffic, share of LLM calls among its events)
SUBJECTS = {
    "globex-hq-gw": (0.24, 0.35),
    "globex-eu-gw": (0.16, 0.25),
    "shared-gw": (0.10, 0.50),
    "globex-apac-gw": (0.08, 0.20),
    "initech-prod": (0.20, 0.30),
    "initech-staging": (0.04, 0.10),
    "hooli-app-1": (0.15, 0.60),
    "pp-laptop": (0.0012, 0.0),
    "unknown-gw-7f3a": (0.0288, 0.0),  # a gateway consumer nobody mapped yet
}


def months_shift(first_month: date) -> int:
    return (
        (first_month.year - EXAMPLE_FIRST_MONTH.year) * 12
        + first_month.month
        - EXAMPLE_FIRST_MONTH.month
    )


def _shift(value: str, months: int) -> str:
    match = _DATE.match(value)
    if not match:
        return value
    year, month, day, rest = int(match[1]), int(match[2]), int(match[3]), match[4] or ""
    anchor = datetime(year, month, day, tzinfo=UTC)
    shifted = period_at(anchor=anchor, cadence="monthly", timezone="UTC", index=months).start
    return f"{shifted:%Y-%m-%d}{rest}"


def _walk(node, months: int):
    if isinstance(node, dict):
        return {k: _walk(v, months) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, months) for v in node]
    if isinstance(node, str):
        return _shift(node, months)
    if isinstance(node, date):
        return date.fromisoformat(_shift(node.isoformat(), months))
    return node


def demo_catalog(*, now: datetime) -> dict:
    """The example catalog with every date moved so it starts two months before ``now``."""
    this_month = month_start(now)
    first = date(this_month.year - (this_month.month <= 2), (this_month.month - 3) % 12 + 1, 1)
    document = yaml.safe_load(CATALOG.read_text())
    return _walk(document, months_shift(first))


_EVENTS_SQL = """
WITH params AS (
    SELECT %(start)s::timestamptz AS t0, extract(epoch FROM %(end)s::timestamptz - %(start)s::timestamptz) AS span
), series AS (
    SELECT g AS n, random() AS r1, random() AS r2, random() AS r3, random() AS r4
    FROM generate_series(1, %(count)s) AS g
), shaped AS (
    SELECT n, r1, r2, r3, r4,
           (SELECT t0 FROM params) + make_interval(secs => (SELECT span FROM params) * r1) AS time,
           (r2 < %(llm_share)s) AS is_llm
    FROM series
)
INSERT INTO metering_event (source, event_id, type, subject, time, data)
SELECT 'demo-gateway', %(prefix)s || n, CASE WHEN is_llm THEN 'llm' ELSE 'request' END, %(subject)s, time,
       CASE WHEN is_llm THEN jsonb_build_object(
                'tokens', CASE WHEN r3 < 0.5 THEN 200 + floor(r4 * 3800)::int ELSE 50 + floor(r4 * 1450)::int END,
                'direction', CASE WHEN r3 < 0.5 THEN 'input' ELSE 'output' END,
                'model', (ARRAY['gpt-4o', 'gpt-4o-mini', 'claude-sonnet', 'llama-3-70b'])[1 + floor(r4 * 4)::int % 4])
            ELSE jsonb_build_object(
                'route', (ARRAY['/flights', '/hotels', '/cars', '/flights', '/search'])[1 + floor(r3 * 5)::int % 5],
                'method', CASE WHEN r4 < 0.8 THEN 'GET' ELSE 'POST' END,
                'status', (ARRAY['200', '200', '200', '200', '200', '200', '201', '404', '429', '500'])[1 + floor(r4 * 10)::int % 10],
                'latency_ms', 20 + floor(r3 * 400)::int)
       END
FROM shaped
"""


@transaction.atomic
def demo_events(*, start: datetime, end: datetime, total: int) -> int:
    """Generate ``total`` events between ``start`` and ``end`` (and their dedup keys)."""
    months = set()
    cursor_month = month_start(start)
    while datetime(cursor_month.year, cursor_month.month, 1, tzinfo=UTC) < end:
        months.add(cursor_month)
        cursor_month = month_start(
            datetime(cursor_month.year, cursor_month.month, 28, tzinfo=UTC) + timedelta(days=5)
        )
    partitions_ensure(months)
    made = 0
    with connection.cursor() as cursor:
        for subject, (share, llm_share) in SUBJECTS.items():
            count = max(int(total * share), 1)
            cursor.execute(
                _EVENTS_SQL,
                {
                    "start": start,
                    "end": end,
                    "count": count,
                    "subject": subject,
                    "llm_share": llm_share,
                    "prefix": f"demo-{subject}-",
                },
            )
            made += cursor.rowcount
        cursor.execute(
            "INSERT INTO metering_eventkey (source, event_id, time) "
            "SELECT source, event_id, time FROM metering_event WHERE source = 'demo-gateway' ON CONFLICT DO NOTHING"
        )
    return made
