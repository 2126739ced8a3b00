"""Entitlements: what a customer may use, and how much of it is left right now.

The value check is on a gateway's hot path. It reads two things:

- the **context** of a (customer, feature) pair: the billing account, the customers
  billed on it, the feature and its meter, the account's override, its subscriptions
  (with their plan version's template for the feature) and its grants. It changes only
  when an operator changes something, so ``entitlement_context`` keeps it in Redis
  (``billing.entitlement_cache``) under a generation that every such change moves;
- the **usage** of the usage period so far, which changes with every event. It is never
  cached as an answer: one SQL statement reads it, exact and fresh (events accepted a
  moment ago count, rolled up or not). For additive meters (COUNT, SUM, AVG) that
  statement is a narrower one than ``metering.usage.feature_usage`` (see
  ``_usage_statement``); other aggregations use that function.

Everything else (which spec applies at ``at``, the usage period, what grants are left)
is computed in Python from the context. Money is not involved; quantities are
``Decimal``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from time import monotonic as time_monotonic
from zoneinfo import ZoneInfo

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from psycopg import sql as psycopg_sql

from billing.models import EntitlementOverride, Grant, Subscription
from billing.periods import Period, period_containing
from customers.models import ConsumerMapping, Customer
from customers.selectors import billed_customer_ids, billing_account_ids
from metering import sql as meter_sql
from metering.models import Aggregation, Feature
from metering.usage import feature_usage

ZERO = Decimal(0)
MAX_ROLLOVER_PERIODS = 36
HOUR = timedelta(hours=1)
# Aggregations whose partial results add up, so the narrow statement can answer them.
ADDITIVE = {Aggregation.COUNT, Aggregation.SUM, Aggregation.AVG}


@dataclass(frozen=True)
class EntitlementSpec:
    feature_key: str
    type: str
    limit: Decimal | None = None
    period: str = "monthly"
    hard: bool = False
    enabled: bool = True
    config: dict = field(default_factory=dict)
    thresholds: tuple = ()
    source: str = "plan"


@dataclass(frozen=True)
class EntitlementValue:
    has_access: bool
    balance: Decimal | None
    usage: Decimal
    overage: Decimal
    type: str
    limit: Decimal | None = None
    granted: Decimal = ZERO
    period: Period | None = None
    config: dict | None = None
    hard: bool = False

    def as_openmeter(self) -> dict:
        """OpenMeter's shape: hasAccess, balance, usage, overage (and config for static)."""
        body: dict = {"hasAccess": self.has_access}
        if self.type == "metered":
            body.update(balance=self.balance, usage=self.usage, overage=self.overage)
        if self.type == "static":
            body["config"] = self.config
        return body


@dataclass(frozen=True)
class SubscriptionTerm:
    """One subscription of the account, reduced to what a check needs."""

    start: datetime
    end: datetime | None
    anchor: datetime
    template: dict | None  # its plan version's template for the feature, if any

    def covers(self, at: datetime) -> bool:
        return self.start <= at and (self.end is None or at < self.end)


@dataclass(frozen=True)
class GrantTerm:
    """One grant that is not voided."""

    pk: int
    amount: Decimal
    priority: int
    effective_at: datetime
    expires_at: datetime | None
    rollover: bool


@dataclass(frozen=True)
class ConsumerTerm:
    """A consumer key mapped to one of the billed customers over ``[valid_from, valid_to)``."""

    consumer_key: str
    valid_from: datetime
    valid_to: datetime | None


@dataclass(frozen=True)
class EntitlementContext:
    """Everything a value check reads except usage, for one account and feature.

    Depends only on rows of customers, consumer mappings, meters, features, plan
    versions, subscriptions, overrides and grants: ``billing.entitlement_cache`` moves
    its generation whenever one of those changes, which is what makes caching it safe.
    """

    account_pk: int
    account_key: str
    timezone: str
    feature: Feature  # with its meter
    customer_ids: tuple[int, ...]  # the account and every subsidiary billed on it
    consumers: tuple[ConsumerTerm, ...]  # the gateway consumers mapped to them
    override: EntitlementSpec | None
    subscriptions: tuple[SubscriptionTerm, ...]  # by start
    grants: tuple[GrantTerm, ...]


class EntitlementNotFound(LookupError):
    """No customer or no feature with the key asked for."""

    def __init__(self, what: str, key: str) -> None:
        super().__init__(f"No {what} {key!r}.")
        self.what, self.key = what, key


# -- the context: built from the database --------------------------------------------


def _spec_from_template(template: dict) -> EntitlementSpec:
    limit = template.get("limit")
    return EntitlementSpec(
        feature_key=template["feature"],
        type=template.get("type", "metered"),
        limit=None if limit is None else Decimal(str(limit)),
        period=template.get("period", "monthly"),
        hard=bool(template.get("hard", False)),
        enabled=bool(template.get("enabled", True)),
        config=template.get("config") or {},
        thresholds=tuple(template.get("thresholds") or ()),
        source="plan",
    )


def _spec_from_override(override: EntitlementOverride, feature_key: str) -> EntitlementSpec:
    return EntitlementSpec(
        feature_key=feature_key,
        type=override.type,
        limit=override.limit,
        period=override.period,
        hard=override.hard,
        enabled=override.enabled,
        config=override.config,
        thresholds=tuple(override.thresholds or ()),
        source="override",
    )


def _template_for(entitlements: list | None, feature_key: str) -> dict | None:
    for template in entitlements or []:
        if template.get("feature") == feature_key:
            return template
    return None


def entitlement_context_build(*, account: Customer, feature: Feature) -> EntitlementContext:
    """The context of ``account`` (taken as the billing account) and ``feature``, read
    from the database: five queries."""
    customer_ids = tuple(billed_customer_ids(account=account))
    consumers = tuple(
        ConsumerTerm(consumer_key=key, valid_from=valid_from, valid_to=valid_to)
        for key, valid_from, valid_to in ConsumerMapping.objects.filter(
            customer_id__in=customer_ids
        )
        .order_by("consumer_key", "valid_from")
        .values_list("consumer_key", "valid_from", "valid_to")
    )
    override = EntitlementOverride.objects.filter(customer=account, feature=feature).first()
    subscriptions = tuple(
        SubscriptionTerm(
            start=sub.start,
            end=sub.end,
            anchor=sub.anchor,
            template=_template_for(sub.plan_version.entitlements, feature.key),
        )
        for sub in Subscription.objects.filter(customer=account)
        .select_related("plan_version")
        .only("start", "end", "anchor", "plan_version__entitlements")
        .order_by("start")
    )
    grants = tuple(
        GrantTerm(
            pk=g.pk,
            amount=g.amount,
            priority=g.priority,
            effective_at=g.effective_at,
            expires_at=g.expires_at,
            rollover=g.rollover,
        )
        for g in Grant.objects.filter(customer=account, feature=feature, voided_at__isnull=True)
    )
    return EntitlementContext(
        account_pk=account.pk,
        account_key=account.key,
        timezone=account.timezone,
        feature=feature,
        customer_ids=customer_ids,
        consumers=consumers,
        override=None if override is None else _spec_from_override(override, feature.key),
        subscriptions=subscriptions,
        grants=grants,
    )


def entitlement_context_build_for_keys(
    *, customer_key: str, feature_key: str
) -> EntitlementContext:
    """The context for a check by keys: a subsidiary billed to its parent is checked on
    its billing account. Eight queries (nine for a subsidiary). Raises
    ``EntitlementNotFound``."""
    customer = Customer.objects.filter(key=customer_key).first()
    if customer is None:
        raise EntitlementNotFound("customer", customer_key)
    feature = Feature.objects.select_related("meter").filter(key=feature_key).first()
    if feature is None:
        raise EntitlementNotFound("feature", feature_key)
    account_id = billing_account_ids(customer_ids=[customer.pk])[customer.pk]
    account = customer if account_id == customer.pk else Customer.objects.get(pk=account_id)
    return entitlement_context_build(account=account, feature=feature)


def entitlement_context(*, customer_key: str, feature_key: str) -> EntitlementContext:
    """The context for a check by keys, from the cache when it holds a current one.
    Raises ``EntitlementNotFound`` (also remembered, until the next change)."""
    from billing.entitlement_cache import context_cached

    return context_cached(
        customer_key=customer_key,
        feature_key=feature_key,
        build=entitlement_context_build_for_keys,
    )


# -- pure: which spec, which period, which grants ----------------------------------


def _term_at(context: EntitlementContext, at: datetime) -> SubscriptionTerm | None:
    for term in context.subscriptions:
        if term.covers(at):
            return term
    return None


def _spec_at(context: EntitlementContext, at: datetime) -> EntitlementSpec | None:
    if context.override is not None:
        return context.override
    term = _term_at(context, at)
    if term is None or term.template is None:
        return None
    return _spec_from_template(term.template)


def _period_at(context: EntitlementContext, spec: EntitlementSpec, at: datetime) -> Period:
    """The usage period containing ``at``: monthly and yearly follow the subscription's
    anchor in the customer's time zone; daily and weekly are calendar days and ISO weeks
    there. Without a subscription, monthly and yearly are calendar months and years."""
    zone = ZoneInfo(context.timezone)
    local = at.astimezone(zone)
    if spec.period in ("monthly", "yearly"):
        term = _term_at(context, at)
        if term is not None:
            return period_containing(
                anchor=term.anchor, cadence=spec.period, timezone=context.timezone, instant=at
            )
        start = local.replace(
            month=1 if spec.period == "yearly" else local.month,
            day=1,
            hour=0,
            minute=0,
            second=0,
            microsecond=0,
        )
        return period_containing(
            anchor=start.astimezone(UTC), cadence=spec.period, timezone=context.timezone, instant=at
        )
    first_day = local.date() - timedelta(days=local.weekday() if spec.period == "weekly" else 0)
    days = 7 if spec.period == "weekly" else 1
    # local midnights, converted to UTC: a day across a DST change is 23 or 25 hours
    start = datetime.combine(first_day, time(0), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(first_day + timedelta(days=days), time(0), tzinfo=zone).astimezone(UTC)
    return Period(start, end)


def _grants_in_play(context: EntitlementContext, period: Period, at: datetime) -> list[GrantTerm]:
    """Grants available in ``period`` at ``at``, in the order they are used: by priority,
    then soonest expiry (never last), then effective date."""
    grants = [
        g
        for g in context.grants
        if g.effective_at <= at
        and (g.expires_at is None or g.expires_at > period.start)
        and (g.rollover or g.effective_at >= period.start)
    ]
    return sorted(
        grants,
        key=lambda g: (
            g.priority,
            g.expires_at is None,
            g.expires_at or g.effective_at,
            g.effective_at,
            g.pk,
        ),
    )


def _replay_periods(
    context: EntitlementContext, spec: EntitlementSpec, period: Period, grants: list[GrantTerm]
) -> list[Period]:
    """The past usage periods whose overage consumed rollover grants still in play."""
    if not grants:
        return []
    earliest = min(g.effective_at for g in grants)
    periods: list[Period] = []
    if earliest < period.start:
        past = _period_at(context, spec, earliest)
        for _ in range(MAX_ROLLOVER_PERIODS):
            if past.start >= period.start:
                break
            periods.append(past)
            past = _period_at(context, spec, past.end)
    return periods


def _grants_left(
    *,
    grants: list[GrantTerm],
    replayed: list[tuple[Period, Decimal]],
    limit: Decimal | None,
    at: datetime,
) -> Decimal:
    """Units left in ``grants`` at ``at``, after the overage of each replayed past
    period (with its usage) consumed them in order."""
    remaining = {g.pk: g.amount for g in grants}
    for past, used in replayed:
        overage = max(used - (limit or ZERO), ZERO)
        for g in grants:
            if g.effective_at >= past.end or (g.expires_at and g.expires_at <= past.start):
                continue
            take = min(remaining[g.pk], overage)
            remaining[g.pk] -= take
            overage -= take
    return sum((remaining[g.pk] for g in grants if not g.expires_at or g.expires_at > at), ZERO)


# -- usage: one statement --------------------------------------------------------------


def _floor_hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _ceil_hour(t: datetime) -> datetime:
    floor = _floor_hour(t)
    return floor if floor == t else floor + HOUR


def _floor_day(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class _Partial:
    """What an additive answer needs: events, the sum of values, how many had one."""

    events: int = 0
    total: Decimal = ZERO
    values: int = 0

    def __add__(self, other: _Partial) -> _Partial:
        return _Partial(
            self.events + other.events, self.total + other.total, self.values + other.values
        )

    def quantity(self, aggregation: str) -> Decimal:
        if aggregation == Aggregation.COUNT:
            return Decimal(self.events)
        if aggregation == Aggregation.SUM:
            return self.total
        return self.total / self.values if self.values else ZERO  # AVG


# Per process: the last rollup watermark seen per meter (a guess that each statement
# checks), the bucket sums of whole past UTC days per range (checked against
# metering_usagetouch by each statement; shared through Redis so that a range is summed
# once, not once per process), and how old the events not rolled up are (see
# _LateEvents). None of them is ever trusted unchecked or beyond what it proves, so none
# needs invalidating.
_watermarks: dict[int, int] = {}
_past_days: dict[tuple, tuple[_Partial, int]] = {}
_PAST_DAYS_MAX = 20_000
_lock = threading.Lock()


PAST_DAYS_SECONDS = 2 * 24 * 3600


def _past_days_cache_key(key: tuple) -> str:
    from billing.entitlement_cache import DATABASE_GENERATION_KEY, generation

    meter_pk, filters_key, ids, inner_start, day = key
    digest = hashlib.sha256(f"{filters_key}|{ids}".encode()).hexdigest()[:24]
    # the database's generation: after a flush or a new database, ids start over
    return (
        f"entitlements:past-days:v1:{connection.settings_dict['NAME']}:"
        f"{generation(DATABASE_GENERATION_KEY)}:{meter_pk}:{digest}:"
        f"{int(inner_start.timestamp())}:{int(day.timestamp())}"
    )


def _past_days_known(key: tuple) -> tuple[_Partial, int] | None:
    """A sum of past days' buckets with its horizon: from this process, else from Redis
    (another process summed it), else None. Whichever it is, the statement checks it."""
    known = _past_days.get(key)
    if known is None:
        known = cache.get(_past_days_cache_key(key))
        if known is not None:
            with _lock:
                _past_days[key] = known
    return known


def _past_days_remember(key: tuple, known: tuple[_Partial, int]) -> None:
    with _lock:
        if len(_past_days) >= _PAST_DAYS_MAX:
            _past_days.clear()
        _past_days[key] = known
    cache.set(_past_days_cache_key(key), known, timeout=PAST_DAYS_SECONDS)


@dataclass(frozen=True)
class _LateEvents:
    """Of a meter's events with ``watermark <= xid < horizon`` (all of them committed or
    aborted for good: ``horizon`` was the snapshot's xmin), the earliest ``time``.

    Events not rolled up usually arrived a moment ago and carry a recent time: they lie
    in the partial hour at the end of a check's range, which is read by time anyway. A
    check whose whole hours end at or before ``earliest`` then needs only the events
    from ``horizon`` on, found through the index on ``xid``: a few, instead of the whole
    backlog of events not rolled up."""

    watermark: int
    horizon: int
    earliest: datetime | None  # None: there were none
    taken: float  # time.monotonic()


_late: dict[int, _LateEvents] = {}
LATE_EVENTS_SECONDS = 1.0  # how long one reading is used before the next


def _late_events(meter, watermark: int) -> _LateEvents:
    """The current reading for ``meter`` at ``watermark`` (taken again after a second,
    or when the watermark is behind it)."""
    late = _late.get(meter.pk)
    if (
        late is not None
        and late.watermark <= watermark
        and time_monotonic() - late.taken < LATE_EVENTS_SECONDS
    ):
        return late
    with connection.cursor() as cursor:
        # OFFSET 0: read the few events through the index on xid, never min() through
        # the index on time (which would walk every rolled-up event first)
        cursor.execute(
            "SELECT (SELECT min(x.time) FROM (SELECT e.time FROM metering_event e "
            "WHERE e.type = %s AND e.xid >= %s OFFSET 0) x), "
            "pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            [meter.event_type, watermark],
        )
        earliest, horizon = cursor.fetchone()
    late = _LateEvents(watermark, horizon, earliest, time_monotonic())
    _late[meter.pk] = late
    return late


def _filter_sql(filters: dict, group_by: dict, params: dict, *, bucket: bool) -> str:
    """The feature's dimension filters: on a bucket's ``dims``, or on an event's data
    read with the meter's group-by paths (a filter on a dimension the meter does not
    group by matches nothing, as in the buckets)."""
    clauses = []
    for i, (name, values) in enumerate(sorted(filters.items())):
        params[f"fv{i}"] = [str(v) for v in values]
        if bucket:
            params[f"fn{i}"] = name
            clauses.append(f"(b.dims ->> %(fn{i})s) = ANY(%(fv{i})s)")
        elif name in group_by:
            expr = meter_sql.text_expr(group_by[name], params, column="e.data")
            clauses.append(f"{expr} = ANY(%(fv{i})s)")
        else:
            clauses.append("FALSE")
    return " AND ".join(clauses) or "TRUE"


def _consumers_sql(
    consumers: tuple[ConsumerTerm, ...], start: datetime, end: datetime, params: dict, tag: str
) -> str:
    """Which events of ``[start, end)`` are the customers': those whose subject is one of
    their consumer keys at the event's time (at most one customer holds a key at any
    instant, so no event counts twice). A key held over the whole range needs no time
    test."""
    whole: list[str] = []
    windows: list[str] = []
    for j, term in enumerate(consumers):
        if term.valid_from >= end or (term.valid_to is not None and term.valid_to <= start):
            continue
        if term.valid_from <= start and (term.valid_to is None or term.valid_to >= end):
            whole.append(term.consumer_key)
            continue
        params[f"ck{tag}_{j}"] = term.consumer_key
        params[f"cf{tag}_{j}"] = term.valid_from
        clause = f"(e.subject = %(ck{tag}_{j})s AND e.time >= %(cf{tag}_{j})s"
        if term.valid_to is not None:
            params[f"ct{tag}_{j}"] = term.valid_to
            clause += f" AND e.time < %(ct{tag}_{j})s"
        windows.append(clause + ")")
    if whole:
        params[f"cw{tag}"] = sorted(set(whole))
        windows.insert(0, f"e.subject = ANY(%(cw{tag})s)")
    return "(" + " OR ".join(windows) + ")" if windows else "FALSE"


_NOTHING = '(SELECT NULL::bigint AS events, NULL::numeric AS total, NULL::bigint AS "values")'
# Whole hours from the buckets: the past days only when they must be summed again.
_BUCKETS = """(SELECT sum(b.event_count) FILTER (WHERE b.hour < %(day{i})s) AS past_events,
        sum(b.value_sum) FILTER (WHERE b.hour < %(day{i})s) AS past_total,
        sum(b.value_count) FILTER (WHERE b.hour < %(day{i})s) AS past_values,
        sum(b.event_count) FILTER (WHERE b.hour >= %(day{i})s) AS events,
        sum(b.value_sum) FILTER (WHERE b.hour >= %(day{i})s) AS total,
        sum(b.value_count) FILTER (WHERE b.hour >= %(day{i})s) AS "values"
    FROM metering_usagebucket b
    WHERE b.meter_id = %(meter)s AND b.customer_id = ANY(%(customers)s)
      AND b.hour >= CASE WHEN recount.r THEN %(inner_start{i})s ELSE %(day{i})s END
      AND b.hour < %(inner_end{i})s AND {bucket_filter})"""
_NO_BUCKETS = (
    "(SELECT NULL::numeric AS past_events, NULL::numeric AS past_total, "
    "NULL::numeric AS past_values, NULL::numeric AS events, NULL::numeric AS total, "
    'NULL::numeric AS "values")'
)
_RAW = """(SELECT count(*) AS events, sum(r.v) AS total, count(r.v) AS "values" FROM (
        SELECT {value} AS v FROM metering_event e
        WHERE e.type = %(type)s AND {when} AND {consumers} AND {raw_filter}
    ) r)"""
_TOUCHED = """EXISTS (SELECT 1 FROM metering_usagetouch t
        WHERE t.customer_id = ANY(%(customers)s) AND t.xid >= %(xmin{i})s
          AND t.day >= (%(inner_start{i})s AT TIME ZONE 'UTC')::date
          AND t.day < (%(day{i})s AT TIME ZONE 'UTC')::date)"""
# One row per range. The past days' check is read once (OFFSET 0 keeps the planner from
# copying it) and decides where the bucket scan starts. The raw events (the partial hours
# at the edges, and the events not rolled up) are one scan: PostgreSQL ORs the index on
# (subject, time) for the edges with the index on xid for the rest.
_RANGE = """SELECT {i} AS n, recount.r AS recounted,
    b.past_events, b.past_total, b.past_values, b.events, b.total, b."values",
    raw.events, raw.total, raw."values",
    (SELECT coalesce((SELECT watermark FROM metering_rollupstate WHERE meter_id = %(meter)s), 0)),
    pg_snapshot_xmin(pg_current_snapshot())::text::bigint
FROM (SELECT {recount} AS r OFFSET 0) recount
CROSS JOIN LATERAL {buckets} b, {raw} raw"""


_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


@functools.lru_cache(maxsize=4096)
def _quoted(text: str) -> str:
    """A string as an SQL literal, quoted by the driver as its client-side binding does
    (the same strings come back with every check: consumer keys, event types, filters)."""
    connection.ensure_connection()
    return psycopg_sql.Literal(text).as_string(connection.connection)


def _literal(value) -> str | None:
    if type(value) is int:
        return str(value)
    if isinstance(value, str):
        return _quoted(value)
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'::timestamptz"
    if isinstance(value, list) and value:
        if all(type(v) is int for v in value):
            return "'{" + ",".join(map(str, value)) + "}'::bigint[]"
        if all(isinstance(v, str) for v in value):
            return "ARRAY[" + ",".join(_quoted(v) for v in value) + "]"
    return None


def _inline(sql: str, params: dict) -> tuple[str, dict | None]:
    """The statement with its parameters written in as literals, as the driver's
    client-side binding (Django's default) would, but each value once and the same
    strings quoted once per process: this halves the statement's client CPU. Values of
    other types are left to the driver."""
    rendered = {name: _literal(value) for name, value in params.items()}
    sql = _PLACEHOLDER.sub(lambda m: rendered.get(m.group(1)) or m.group(0), sql)
    left = {name: value for name, value in params.items() if rendered[name] is None}
    return sql, left or None


def _partial(events, total, values) -> _Partial:
    return _Partial(int(events or 0), total if total is not None else ZERO, int(values or 0))


def _usage_statement(
    *, context: EntitlementContext, ranges: list[tuple[datetime, datetime]]
) -> list[Decimal]:
    """The feature's usage over each ``[start, end)`` in ``ranges`` for the context's
    customers, exact and fresh, in one statement (run again, rarely, when a rollup moved
    the watermark between the guess and the statement).

    Like ``feature_usage``, whole UTC hours come from the buckets and the rest from raw
    events: the partial hours at the edges, and the events not rolled up yet (``xid`` at
    or above the watermark). What makes it narrower:

    - the events are found by the customers' consumer keys (from the context) instead
      of a join with the mappings: less to plan;
    - the watermark is passed as a literal (the last one seen), so PostgreSQL finds the
      events not rolled up through the index on ``xid`` instead of reading every event of
      the period; the statement also reads the real watermark, in the same snapshot, and
      is run again with it when the guess was wrong, so the answer is always exact;
    - the buckets of whole past UTC days are summed once per process and kept with the
      transaction horizon of that sum; each statement sums them again only when
      ``metering_usagetouch`` shows that a rollup or a re-attribution changed those days
      since (every writer of buckets stamps the customers and days it changed with its
      own transaction id there). Today's buckets are always summed.
    """
    feature = context.feature
    meter = feature.meter
    filters = feature.filters or {}
    group_by = meter.group_by or {}
    ids = sorted(context.customer_ids)
    filters_key = json.dumps(filters, sort_keys=True)
    for _ in range(3):
        guess = _watermarks.get(meter.pk)
        if guess is None:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT coalesce((SELECT watermark FROM metering_rollupstate "
                    "WHERE meter_id = %s), 0)",
                    [meter.pk],
                )
                guess = cursor.fetchone()[0]
        late = _late_events(meter, guess)
        params: dict = {"meter": meter.pk, "type": meter.event_type, "customers": ids}
        value = meter_sql.value_expr(meter, params, column="e.data")
        bucket_filter = _filter_sql(filters, group_by, params, bucket=True)
        raw_filter = _filter_sql(filters, group_by, params, bucket=False)
        selects, past_keys = [], []
        for i, (start, end) in enumerate(ranges):
            inner_start, inner_end = _ceil_hour(start), _floor_hour(end)
            if inner_end < inner_start:  # the whole range lies inside one hour
                inner_start = inner_end = start
            day = max(inner_start, min(inner_end, _floor_day(inner_end)))
            params.update(
                {
                    f"start{i}": start,
                    f"end{i}": end,
                    f"inner_start{i}": inner_start,
                    f"inner_end{i}": inner_end,
                    f"day{i}": day,
                }
            )
            key = (meter.pk, filters_key, tuple(ids), inner_start, day)
            known = _past_days_known(key) if day > inner_start else None
            if day <= inner_start:
                recount = "FALSE"
            elif known is None:
                recount = "TRUE"
            else:
                params[f"xmin{i}"] = known[1]
                recount = _TOUCHED.format(i=i)
            past_keys.append((key, known))
            consumers = _consumers_sql(context.consumers, start, end, params, str(i))
            # raw events: the partial hours at the edges, by time...
            when = [
                f"(e.time >= %({lo}{i})s AND e.time < %({hi}{i})s)"
                for lo, hi, present in (
                    ("start", "inner_start", inner_start > start),
                    ("inner_end", "end", end > inner_end),
                )
                if present
            ]
            # ...and, inside the whole hours, those not rolled up: all of them from the
            # watermark on, or only those from the horizon of the late-events reading on
            # when it shows that none before it falls inside these hours
            if inner_end > inner_start:
                params[f"fx{i}"] = (
                    max(guess, late.horizon)
                    if late.earliest is None or late.earliest >= inner_end
                    else guess
                )
                when.append(
                    f"(e.time >= %(inner_start{i})s AND e.time < %(inner_end{i})s "
                    f"AND e.xid >= %(fx{i})s)"
                )
            # parts that are empty by their bounds are left out: less to plan
            selects.append(
                _RANGE.format(
                    i=i,
                    recount=recount,
                    buckets=_BUCKETS.format(i=i, bucket_filter=bucket_filter)
                    if inner_end > inner_start
                    else _NO_BUCKETS,
                    raw=_RAW.format(
                        value=value,
                        when="(" + " OR ".join(when) + ")",
                        consumers=consumers,
                        raw_filter=raw_filter,
                    )
                    if when and consumers != "FALSE"
                    else _NOTHING,
                )
            )
        statement, left = _inline("\nUNION ALL\n".join(selects) + "\nORDER BY n", params)
        with connection.cursor() as cursor:
            cursor.execute(statement, left)
            rows = cursor.fetchall()
        watermark = rows[0][11]
        _watermarks[meter.pk] = watermark
        if watermark != guess:
            continue  # a rollup ran in between: the raw part counted the wrong events
        quantities = []
        for row, (key, known) in zip(rows, past_keys, strict=True):
            if row[1]:  # the past days were summed again
                past = _partial(*row[2:5])
                _past_days_remember(key, (past, row[12]))
            else:
                past = known[0] if known is not None else _Partial()
            total = past + _partial(*row[5:8]) + _partial(*row[8:11])
            quantities.append(total.quantity(meter.aggregation))
        return quantities
    return _usage_generic(context=context, ranges=ranges)


def _usage_generic(
    *, context: EntitlementContext, ranges: list[tuple[datetime, datetime]]
) -> list[Decimal]:
    return [
        feature_usage(
            feature=context.feature, customer_ids=context.customer_ids, start=s, end=e
        ).quantity
        for s, e in ranges
    ]


def _usages(
    *, context: EntitlementContext, ranges: list[tuple[datetime, datetime]], narrow: bool
) -> list[Decimal]:
    if not ranges:
        return []
    if narrow and context.feature.meter.aggregation in ADDITIVE:
        return _usage_statement(context=context, ranges=ranges)
    return _usage_generic(context=context, ranges=ranges)


# -- the value check ----------------------------------------------------------------


def entitlement_value_from(
    *, context: EntitlementContext, at: datetime, narrow: bool = True
) -> EntitlementValue | None:
    """``{hasAccess, balance, usage, overage}`` of the context's entitlement at ``at``.

    Usage is the usage period's so far (up to ``at``), over the whole subsidiary tree,
    including events not yet rolled up. None when there is no such entitlement.
    ``narrow=False`` reads usage with ``metering.usage.feature_usage`` (the reference the
    narrow statement is tested against).
    """
    spec = _spec_at(context, at)
    if spec is None:
        return None
    if spec.type == "boolean":
        return EntitlementValue(
            has_access=spec.enabled, balance=None, usage=ZERO, overage=ZERO, type="boolean"
        )
    if spec.type == "static":
        return EntitlementValue(
            has_access=True,
            balance=None,
            usage=ZERO,
            overage=ZERO,
            type="static",
            config=spec.config,
        )
    period = _period_at(context, spec, at)
    end = min(at, period.end)
    grants = _grants_in_play(context, period, at) if spec.limit is not None else []
    replay = _replay_periods(context, spec, period, grants)
    ranges = [(p.start, p.end) for p in replay]
    if end > period.start:
        ranges.append((period.start, end))
    quantities = _usages(context=context, ranges=ranges, narrow=narrow)
    usage = quantities[-1] if end > period.start else ZERO
    if spec.limit is None:
        return EntitlementValue(
            has_access=True,
            balance=None,
            usage=usage,
            overage=ZERO,
            type="metered",
            period=period,
            hard=spec.hard,
        )
    granted = (
        _grants_left(
            grants=grants,
            replayed=list(zip(replay, quantities[: len(replay)], strict=True)),
            limit=spec.limit,
            at=at,
        )
        if grants
        else ZERO
    )
    allowance = spec.limit + granted
    balance = max(allowance - usage, ZERO)
    overage = max(usage - allowance, ZERO)
    return EntitlementValue(
        has_access=balance > 0 or not spec.hard,
        balance=balance,
        usage=usage,
        overage=overage,
        type="metered",
        limit=spec.limit,
        granted=granted,
        period=period,
        hard=spec.hard,
    )


def entitlement_value(
    *, account: Customer, feature: Feature, at: datetime
) -> EntitlementValue | None:
    """``{hasAccess, balance, usage, overage}`` of the account's entitlement at ``at``,
    read from the database (no cache): for the admin, notifications and the portal.

    Usage is the usage period's so far (up to ``at``), over the whole subsidiary tree,
    including events not yet rolled up. None when the account has no such entitlement.
    """
    context = entitlement_context_build(account=account, feature=feature)
    return entitlement_value_from(context=context, at=at)


def entitlement_value_for_key(
    *, customer_key: str, feature_key: str, at: datetime, cached: bool = True
) -> EntitlementValue | None:
    """The value check by keys, as the API answers it; a subsidiary billed to its parent
    checks the parent's. Raises ``EntitlementNotFound``."""
    context = (
        entitlement_context(customer_key=customer_key, feature_key=feature_key)
        if cached
        else entitlement_context_build_for_keys(customer_key=customer_key, feature_key=feature_key)
    )
    return entitlement_value_from(context=context, at=at)


# -- reads for the admin, the portal and notifications -------------------------------


def entitlement_resolve(
    *, account: Customer, feature: Feature, at: datetime
) -> EntitlementSpec | None:
    """The account's entitlement to ``feature`` at ``at``: its override, else its plan's template."""
    return _spec_at(entitlement_context_build(account=account, feature=feature), at)


def usage_period(*, account: Customer, spec: EntitlementSpec, at: datetime) -> Period:
    """The usage period of ``spec`` containing ``at`` for the account (see ``_period_at``)."""
    feature = Feature.objects.select_related("meter").get(key=spec.feature_key)
    return _period_at(entitlement_context_build(account=account, feature=feature), spec, at)


def entitlements_of(*, account: Customer, at: datetime) -> list[tuple[Feature, EntitlementSpec]]:
    """Every entitlement the account has at ``at`` (templates and overrides), by feature key."""
    specs: dict[str, EntitlementSpec] = {}
    sub = (
        Subscription.objects.select_related("plan_version")
        .filter(customer=account, start__lte=at)
        .exclude(end__lte=at)
        .order_by("start")
        .first()
    )
    for template in (sub.plan_version.entitlements or []) if sub else []:
        specs.setdefault(template["feature"], _spec_from_template(template))
    features = {
        f.key: f for f in Feature.objects.select_related("meter").filter(key__in=list(specs))
    }
    for override in EntitlementOverride.objects.filter(customer=account).select_related(
        "feature__meter"
    ):
        features[override.feature.key] = override.feature
        specs[override.feature.key] = _spec_from_override(override, override.feature.key)
    return [(features[key], spec) for key, spec in sorted(specs.items()) if key in features]


def entitlement_specs_many(
    *, account_ids: Sequence[int], features: Sequence[Feature], at: datetime
) -> dict[tuple[int, str], EntitlementSpec]:
    """The entitlement of each account to each feature at ``at`` (its override, else the
    template of its subscription covering ``at``), keyed by ``(account id, feature key)``;
    pairs without one are absent. Two queries whatever the number of accounts: the rule
    of ``_spec_at``, for the bulk access query."""
    keys = {f.key for f in features}
    specs: dict[tuple[int, str], EntitlementSpec] = {}
    if not account_ids or not keys:
        return specs
    termed: set[int] = set()
    for sub in (
        Subscription.objects.select_related("plan_version")
        .filter(customer_id__in=list(account_ids), start__lte=at)
        .exclude(end__lte=at)
        .only("customer_id", "start", "plan_version__entitlements")
        .order_by("start")
    ):
        if sub.customer_id in termed:  # the first covering subscription is the term
            continue
        termed.add(sub.customer_id)
        for template in sub.plan_version.entitlements or []:
            if template.get("feature") in keys:
                specs[(sub.customer_id, template["feature"])] = _spec_from_template(template)
    for override in EntitlementOverride.objects.filter(
        customer_id__in=list(account_ids), feature__key__in=keys
    ).select_related("feature"):
        specs[(override.customer_id, override.feature.key)] = _spec_from_override(
            override, override.feature.key
        )
    return specs


# -- writes: grants -------------------------------------------------------------------


def grant_create(
    *,
    account: Customer,
    feature: Feature,
    amount: Decimal,
    effective_at: datetime,
    reason: str,
    expires_at: datetime | None = None,
    priority: int = 1,
    rollover: bool = False,
    created_by=None,
) -> Grant:
    """Give ``account`` (a billing account) ``amount`` extra units of ``feature``.

    Raises ``ValidationError`` for a subsidiary billed to its parent (grant its billing
    account), an amount that is not positive, an expiry not after the start, or no
    reason.
    """
    errors: dict[str, str] = {}
    account_id = billing_account_ids(customer_ids=[account.pk])[account.pk]
    if account_id != account.pk:
        billing_account = Customer.objects.get(pk=account_id)
        errors["customer"] = (
            f"{account.key} is billed on {billing_account.key}: grant {billing_account.key}."
        )
    if amount is None or amount <= 0:
        errors["amount"] = "A grant adds a positive number of units."
    if expires_at is not None and expires_at <= effective_at:
        errors["expires_at"] = "A grant must expire after it takes effect."
    if not (reason or "").strip():
        errors["reason"] = "Say why the units are given."
    if errors:
        raise ValidationError(errors)
    return Grant.objects.create(
        customer=account,
        feature=feature,
        amount=amount,
        effective_at=effective_at,
        expires_at=expires_at,
        priority=priority,
        rollover=rollover,
        reason=reason.strip()[:200],
        created_by=created_by,
    )


VOID_MARK = " · voided: "


@transaction.atomic
def grant_void(*, grant: Grant, now: datetime, reason: str = "") -> Grant:
    """Void ``grant`` from ``now`` on: its units stop counting at once, for every period.
    The reason is kept at the end of the grant's ``reason`` (it has no field of its own
    yet). Voiding a voided grant changes nothing. Raises ``ValidationError`` without a
    reason when one is required (``reason`` given as blank by an operator)."""
    grant = Grant.objects.select_for_update().get(pk=grant.pk)
    if grant.voided_at is not None:
        return grant
    grant.voided_at = now
    fields = ["voided_at"]
    if reason.strip():
        grant.reason = (grant.reason + VOID_MARK + reason.strip())[:200]
        fields.append("reason")
    grant.save(update_fields=fields)
    return grant
