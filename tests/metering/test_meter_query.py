"""The meter query endpoint, checked against a reference aggregation written here in plain
Python over the events the tests generated.

The scenario data is committed once per module (the rollup only takes events of finished
transactions) and removed at the end; the tests themselves only read. Part of it is
rolled up, part is ingested after the rollup, so bucket-path answers must merge both.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import msgspec
import pytest
from django.db import connection
from django.http import QueryDict
from django.urls import Resolver404, include, path, resolve

from metering.api.query_serializers import (
    MeterQueryRequestSerializer,
    request_data_from_query_params,
)
from metering.api.query_views import MeterQueryView
from metering.ingest import CloudEvent
from metering.models import Aggregation, Meter, RollupState, UsageBucket
from metering.query import MeterQuery, meter_query
from metering.services import events_ingest, meter_create, usage_rollup
from tests.factories import ConsumerMappingFactory, CustomerFactory


def _urlpatterns() -> list:
    """The project's routes, plus this endpoint's route until metering/api/urls.py has it."""
    project = [path("", include("config.urls"))]
    try:
        resolve("/api/v1/meters/any/query", urlconf="config.urls")
    except Resolver404:
        return [path("api/v1/meters/<str:key>/query", MeterQueryView.as_view()), *project]
    return project


urlpatterns = _urlpatterns()
pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SWITCH = datetime(2026, 10, 31, 12, 0, tzinfo=UTC)  # shared-gw moves from acme to globex
AGGREGATIONS = [a.value for a in Aggregation]
ENCODE = msgspec.json.Encoder(decimal_format="number")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@dataclass(frozen=True)
class Usage:
    seq: int  # ingestion order: later batches get higher event ids
    subject: str
    time: datetime
    model: str
    direction: str | None
    tokens: Decimal | None
    user: str | None

    @property
    def customer(self) -> str | None:
        if self.subject == "acme-gw":
            return "acme"
        if self.subject == "shared-gw":
            return "acme" if self.time < SWITCH else "globex"
        return None

    def cloud_event(self) -> CloudEvent:
        data: dict = {"model": self.model}
        if self.direction is not None:
            data["direction"] = self.direction
        if self.tokens is not None:  # some values arrive as numeric strings
            data["tokens"] = str(self.tokens) if self.seq % 5 == 0 else self.tokens
        if self.user is not None:
            data["user"] = self.user
        return CloudEvent(
            id=f"e{self.seq:06d}",
            source="gw",
            type="llm",
            subject=self.subject,
            time=self.time,
            data=msgspec.Raw(ENCODE.encode(data)),
        )


EDGE_TIMES = [
    utc(2026, 10, 31, 11, 59, 59, 999999),  # just before shared-gw changes customer
    utc(2026, 10, 31, 12),
    utc(2026, 10, 31, 18, 29, 59, 999999),  # Asia/Kolkata midnight is 18:30Z
    utc(2026, 10, 31, 18, 30),
    utc(2026, 10, 31, 23, 59, 59, 999999),  # month boundary (UTC)
    utc(2026, 11, 1, 0),
    utc(2026, 11, 1, 3, 59, 59, 999999),  # New York midnight (EDT)
    utc(2026, 11, 1, 4),
    utc(2026, 11, 1, 5, 30),  # 01:30 EDT
    utc(2026, 11, 1, 6, 30),  # 01:30 EST, the repeated hour
    utc(2026, 11, 2, 4, 59, 59, 999999),  # New York midnight (EST)
    utc(2026, 11, 2, 5),
    utc(2026, 11, 2, 9, 59, 59, 999999),
    utc(2026, 11, 2, 10),
]
TIE = dict(subject="acme-gw", time=utc(2026, 11, 2, 10), model="gpt-4o", direction="input")


def _generate(rng: random.Random, seq: int, count: int, times: list[datetime] | None = None):
    start, span = utc(2026, 10, 29), int(timedelta(days=5, hours=12).total_seconds() * 1e6)
    usages = []
    for i in range(count):
        time = times[i] if times else start + timedelta(microseconds=rng.randrange(span))
        tokens = None if rng.random() < 0.1 else Decimal(rng.randrange(0, 100_000)) / 100
        usages.append(
            Usage(
                seq=seq + i,
                subject=rng.choice(["acme-gw", "shared-gw", "orphan-gw"]),
                time=time,
                model=rng.choice(["gpt-4o", "claude"]),
                direction=rng.choice(["input", "output", None]),
                tokens=tokens,
                user=None if rng.random() < 0.1 else rng.choice([f"u{n}" for n in range(6)]),
            )
        )
    return usages


def _ingest(usages: list[Usage]) -> None:
    events_ingest(events=[u.cloud_event() for u in usages], received_at=NOW)


@dataclass(frozen=True)
class World:
    usages: list[Usage]
    fresh: list[Usage]  # ingested after the rollup
    meters: dict[str, Meter]


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        try:
            yield _build_world()
        finally:
            with connection.cursor() as cursor:
                cursor.execute(
                    "TRUNCATE metering_event, metering_eventkey, "
                    "metering_usagebucket, metering_rollupstate, metering_meter, "
                    "customers_consumermapping, customers_consumermappingchange, "
                    "customers_customer CASCADE"
                )


def _build_world() -> World:
    acme, globex = CustomerFactory(key="acme"), CustomerFactory(key="globex")
    ConsumerMappingFactory(consumer_key="acme-gw", customer=acme)
    ConsumerMappingFactory(consumer_key="shared-gw", customer=acme, valid_to=SWITCH)
    ConsumerMappingFactory(consumer_key="shared-gw", customer=globex, valid_from=SWITCH)
    meters = {
        agg: meter_create(
            key=f"llm_{agg.lower()}",
            event_type="llm",
            aggregation=agg,
            value_property={"COUNT": "", "UNIQUE_COUNT": "$.user"}.get(agg, "$.tokens"),
            group_by={"model": "$.model", "direction": "$.direction"},
        )
        for agg in AGGREGATIONS
    }
    rng = random.Random(20261101)
    rolled = _generate(rng, 0, 300)
    rolled += _generate(rng, 300, len(EDGE_TIMES), EDGE_TIMES)
    rolled.append(Usage(seq=400, tokens=Decimal(10), user="u1", **TIE))
    _ingest(rolled)
    usage_rollup(now=NOW)
    fresh = _generate(rng, 1000, 40)
    fresh.append(Usage(seq=1100, tokens=Decimal(99), user="u9", **TIE))  # same time, later id
    _ingest(fresh)
    return World(usages=rolled + fresh, fresh=fresh, meters=meters)


# --- the reference: plain Python over the generated usage -------------------------------


def _window(t: datetime, size: str, zone: ZoneInfo) -> tuple[datetime, datetime]:
    local = t.astimezone(zone)
    if size in ("MINUTE", "HOUR"):
        step = timedelta(minutes=1) if size == "MINUTE" else timedelta(hours=1)
        start = local.replace(second=0, microsecond=0)
        if size == "HOUR":
            start = start.replace(minute=0)
        start = start.astimezone(UTC)
        return start, start + step
    if size == "DAY":
        first = local.date()
        after = first + timedelta(days=1)
    else:
        first = date(local.year, local.month, 1)
        after = date(local.year + local.month // 12, local.month % 12 + 1, 1)
    return (
        datetime(first.year, first.month, first.day, tzinfo=zone).astimezone(UTC),
        datetime(after.year, after.month, after.day, tzinfo=zone).astimezone(UTC),
    )


def _value(aggregation: str, group: list[Usage]) -> Decimal | None:
    values = [u.tokens for u in group if u.tokens is not None]
    if aggregation == "COUNT":
        return Decimal(len(group))
    if aggregation == "UNIQUE_COUNT":
        return Decimal(len({u.user for u in group if u.user is not None}))
    if not values:
        return None
    return {
        "SUM": lambda: sum(values),
        "MIN": lambda: min(values),
        "MAX": lambda: max(values),
        "AVG": lambda: sum(values) / len(values),
        "LATEST": lambda: (
            max((u for u in group if u.tokens is not None), key=lambda u: (u.time, u.seq)).tokens
        ),
    }[aggregation]()


def _parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def reference(usages: list[Usage], aggregation: str, params: dict) -> dict:
    """{(windowStart, windowEnd, subject, customerId, groupBy items): value}"""
    start, end = _parse(params.get("from")), _parse(params.get("to"))
    zone = ZoneInfo(params.get("windowTimeZone", "UTC"))
    subjects = params.get("subject", [])
    customers = params.get("filterCustomerId", [])
    group_by = params.get("groupBy", [])
    by_subject = bool(subjects) or "subject" in group_by
    by_customer = bool(customers) or "customerId" in group_by
    dims = [g for g in group_by if g not in ("subject", "customerId")]
    filters = {
        k[len("filterGroupBy[") : -1]: v
        for k, v in params.items()
        if k.startswith("filterGroupBy[")
    }
    groups = defaultdict(list)
    for u in usages:
        if (start and u.time < start) or (end and u.time >= end):
            continue
        if (subjects and u.subject not in subjects) or (customers and u.customer not in customers):
            continue
        if any(getattr(u, name) not in values for name, values in filters.items()):
            continue
        window = _window(u.time, params["windowSize"], zone) if "windowSize" in params else None
        key = (
            window,
            u.subject if by_subject else None,
            u.customer if by_customer else None,
            tuple((d, getattr(u, d)) for d in dims),
        )
        groups[key].append(u)
    answer = {}
    for (window, subject, customer, dim_values), group in groups.items():
        value = _value(aggregation, group)
        if value is None:
            continue
        if window is None:
            window = (
                start or min(u.time for u in group).replace(second=0, microsecond=0),
                end
                or max(u.time for u in group).replace(second=0, microsecond=0)
                + timedelta(minutes=1),
            )
        answer[(*window, subject, customer, dim_values)] = value
    return answer


def answered(body: dict) -> dict:
    starts = [_parse(row["windowStart"]) for row in body["data"]]
    assert starts == sorted(starts), "rows are ordered by window"
    return {
        (
            _parse(row["windowStart"]),
            _parse(row["windowEnd"]),
            row["subject"],
            row["customerId"],
            tuple(row["groupBy"].items()),
        ): row["value"]
        for row in body["data"]
    }


def assert_same(actual: dict, expected: dict, aggregation: str) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        if aggregation == "AVG":  # a quotient: equal to the precision PostgreSQL divides to
            assert abs(actual[key] - value) <= Decimal("1e-12") * max(1, abs(value)), key
        else:
            assert actual[key] == value, key


def query(client, meter: str, params: dict, *, method: str = "get"):
    url = f"/api/v1/meters/{meter}/query"
    if method == "post":
        return client.post(url, params, format="json")
    return client.get(url, params)


def body_of(response) -> dict:
    assert response.status_code == 200, response.content
    return json.loads(response.content, parse_float=Decimal)


# --- scenarios ----------------------------------------------------------------------------

WHOLE = ("2026-10-29T00:00:00Z", "2026-11-04T00:00:00Z")
PERIOD = dict(zip(("from", "to"), WHOLE, strict=True))
NY, KOLKATA = "America/New_York", "Asia/Kolkata"


def case(source, span=WHOLE, window=None, tz=None, filters=None, **lists) -> tuple[dict, str]:
    """API parameters of a scenario, and the source that should answer it."""
    params = dict(zip(("from", "to"), span, strict=True)) if span else {}
    params |= {"windowSize": window} if window else {}
    params |= {"windowTimeZone": tz} if tz else {}
    params |= {f"filterGroupBy[{k}]": v for k, v in (filters or {}).items()}
    return params | lists, source


SCENARIOS = {
    "whole period, no window": case("buckets"),
    "no bounds, per subject": case("buckets", None, groupBy=["subject"]),
    "hourly across the month boundary": case(
        "buckets", ("2026-10-31T20:00:00Z", "2026-11-01T08:00:00Z"), "HOUR", groupBy=["model"]
    ),
    "daily per customer": case("buckets", window="DAY", groupBy=["customerId"]),
    "daily in New York across the DST change": case(
        "buckets",
        ("2026-10-30T04:00:00Z", "2026-11-03T05:00:00Z"),
        "DAY",
        NY,
        groupBy=["direction"],
    ),
    "hourly in New York through the repeated hour": case(
        "buckets", ("2026-11-01T03:00:00Z", "2026-11-01T09:00:00Z"), "HOUR", NY
    ),
    "monthly across the month boundary": case(
        "buckets", window="MONTH", groupBy=["direction", "subject"]
    ),
    "monthly in New York, no bounds": case("buckets", None, "MONTH", NY, groupBy=["model"]),
    "by subject, unattributed included": case(
        "buckets", window="DAY", subject=["shared-gw", "orphan-gw"], groupBy=["model"]
    ),
    "by customer": case("buckets", window="DAY", filterCustomerId=["acme"], groupBy=["direction"]),
    "dimension filter": case(
        "buckets", window="DAY", filters={"model": ["claude"]}, groupBy=["direction"]
    ),
    "minute windows": case(
        "events", ("2026-11-02T09:00:00Z", "2026-11-02T11:00:00Z"), "MINUTE", groupBy=["subject"]
    ),
    "daily in Asia/Kolkata (half-hour offset)": case(
        "events", window="DAY", tz=KOLKATA, groupBy=["customerId"]
    ),
    "hourly with unaligned bounds": case(
        "events",
        ("2026-10-31T11:30:00Z", "2026-11-01T00:00:00.5Z"),
        "HOUR",
        filters={"model": ["gpt-4o"]},
    ),
    "unaligned, no window, by customer and subject": case(
        "events",
        ("2026-10-31T11:59:00Z", "2026-11-02T10:00:00.000001Z"),
        filterCustomerId=["globex", "acme"],
        groupBy=["subject", "model"],
    ),
}


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_answers_equal_a_direct_aggregation_of_the_events(world, api, scenario, aggregation):
    params, _ = SCENARIOS[scenario]
    body = body_of(query(api, f"llm_{aggregation.lower()}", params))
    expected = reference(world.usages, aggregation, params)
    assert expected, "the scenario has usage"
    assert_same(answered(body), expected, aggregation)


def _selector_query(params: dict) -> MeterQuery:
    get = QueryDict(mutable=True)
    for name, value in params.items():
        get.setlist(name, value if isinstance(value, list) else [value])
    serializer = MeterQueryRequestSerializer(data=request_data_from_query_params(get))
    serializer.is_valid(raise_exception=True)
    return serializer.to_query()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_hourly_aligned_queries_read_buckets_and_others_read_events(world, scenario):
    params, source = SCENARIOS[scenario]
    result = meter_query(meter=world.meters["SUM"], query=_selector_query(params))
    assert result.source == source


def test_usage_not_yet_rolled_up_is_already_in_the_answer(world, api):
    meter = world.meters["SUM"]
    watermark = RollupState.objects.get(meter=meter).watermark
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM metering_event WHERE xid >= %s", [watermark])
        assert cursor.fetchone()[0] >= len(world.fresh)
    rolled_up = sum(b.value_sum for b in UsageBucket.objects.filter(meter=meter))
    total = sum(u.tokens for u in world.usages if u.tokens is not None)
    assert 0 < rolled_up < total
    [row] = body_of(query(api, "llm_sum", {})).get("data")
    assert row["value"] == total


def test_latest_breaks_a_tie_in_time_by_the_later_event(world, api):
    params = {"from": "2026-11-02T10:00:00Z", "to": "2026-11-02T11:00:00Z", "subject": ["acme-gw"]}
    params["filterGroupBy[direction]"] = ["input"]
    params["filterGroupBy[model]"] = ["gpt-4o"]
    rows = body_of(query(api, "llm_latest", params))["data"]
    assert [r["value"] for r in rows] == [99]


def test_a_unique_count_is_distinct_over_the_window_not_a_sum_of_hours(world, api):
    day = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"}
    [daily] = body_of(query(api, "llm_unique_count", {**day, "windowSize": "DAY"}))["data"]
    hourly = body_of(query(api, "llm_unique_count", {**day, "windowSize": "HOUR"}))["data"]
    users = {
        u.user for u in world.usages if u.user and utc(2026, 11, 1) <= u.time < utc(2026, 11, 2)
    }
    assert daily["value"] == len(users)
    assert sum(r["value"] for r in hourly) > daily["value"]


def test_post_takes_the_same_query_as_a_json_body_with_a_read_only_key(world, api, api_client_for):
    params = {
        **PERIOD,
        "windowSize": "DAY",
        "groupBy": ["model", "customerId"],
        "subject": ["shared-gw"],
    }
    reader = api_client_for("read")
    posted = body_of(query(reader, "llm_sum", params, method="post"))
    assert posted == body_of(query(api, "llm_sum", params))
    post_filter = {**params, "filterGroupBy": {"model": ["claude"]}}
    get_filter = {**params, "filterGroupBy[model]": ["claude"]}
    assert body_of(query(reader, "llm_sum", post_filter, method="post")) == body_of(
        query(api, "llm_sum", get_filter)
    )


def test_the_answer_has_openmeters_shape(world, api):
    body = body_of(query(api, "llm_count", {**PERIOD, "windowSize": "DAY", "groupBy": ["model"]}))
    assert body["from"] == "2026-10-29T00:00:00Z"
    assert body["to"] == "2026-11-04T00:00:00Z"
    assert body["windowSize"] == "DAY"
    row = body["data"][0]
    assert set(row) == {"value", "windowStart", "windowEnd", "subject", "customerId", "groupBy"}
    assert row["subject"] is None and row["customerId"] is None
    assert set(row["groupBy"]) == {"model"}
    assert isinstance(row["value"], int)
    no_window = body_of(query(api, "llm_count", {}))
    assert (no_window["from"], no_window["to"], no_window["windowSize"]) == (None, None, None)


def test_an_offset_whose_plus_arrived_as_a_space_is_understood(world, api):
    plus = body_of(
        query(api, "llm_count", {"from": "2026-11-01T01:00:00+01:00", "to": "2026-11-02T00:00:00Z"})
    )
    space = body_of(
        query(api, "llm_count", {"from": "2026-11-01T01:00:00 01:00", "to": "2026-11-02T00:00:00Z"})
    )
    assert plus == space
    assert plus["from"] == "2026-11-01T00:00:00Z"


def test_values_are_exact_json_numbers(api):
    meter_create(key="exact", event_type="exact", aggregation="SUM", value_property="$.n")

    def send(event_id: str, data: bytes) -> None:
        event = CloudEvent(
            id=event_id, source="s", type="exact", subject="x", data=msgspec.Raw(data)
        )
        events_ingest(events=[event], received_at=NOW)

    send("a", b'{"n": 0.1}')
    send("b", b'{"n": 0.2}')
    assert b'"value":0.3,' in query(api, "exact", {}).content  # not 0.30000000000000004
    send("c", b'{"n": 12345678901234567}')  # past 2**53
    assert b'"value":12345678901234567.3,' in query(api, "exact", {}).content


@pytest.mark.parametrize(
    "params, field",
    [
        ({"windowSize": "WEEK"}, "windowSize"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-11-01T00:00:00"}, "from"),  # no offset
        ({"to": "2026-11-01"}, "to"),
        ({"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, "to"),
        ({"from": "2026-11-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, "to"),
        ({"groupBy": ["colour"]}, "groupBy"),
        ({"windowTimeZone": "Mars/Olympus_Mons"}, "windowTimeZone"),
        ({"filterCustomerId": ["nobody"]}, "filterCustomerId"),
        ({"filterGroupBy[colour]": ["red"]}, "filterGroupBy"),
    ],
)
def test_bad_parameters_are_a_problem_document_naming_the_field(api, params, field):
    meter_create(
        key="plain",
        event_type="plain",
        aggregation="SUM",
        value_property="$.n",
        group_by={"model": "$.model"},
    )
    response = query(api, "plain", params)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert field in response.json()["errors"]


def test_a_bad_json_body_is_a_problem_document(api):
    meter_create(key="plain", event_type="plain", aggregation="SUM", value_property="$.n")
    response = query(api, "plain", {"subject": "not-a-list", "windowSize": "DAY"}, method="post")
    assert response.status_code == 400
    assert "subject" in response.json()["errors"]


@pytest.mark.parametrize("method", ["get", "post"])
def test_an_unknown_meter_is_not_found(api, method):
    response = query(api, "no_such_meter", {}, method=method)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"


def test_a_key_without_the_read_scope_is_refused(api_client_for):
    meter_create(key="plain", event_type="plain", aggregation="SUM", value_property="$.n")
    assert query(api_client_for("ingest"), "plain", {}).status_code == 403
    assert query(api_client_for("ingest"), "plain", {}, method="post").status_code == 403
