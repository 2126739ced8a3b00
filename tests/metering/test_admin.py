"""The metering admin: catalog forms that speak the services' rules, the event explorer,
unattributed usage, usage charts and template buttons."""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from customers.services import consumer_mapping_create
from metering.admin import EventAdmin
from metering.models import Event, Feature, Meter, UsageBucket
from metering.services import feature_create, meter_create
from tests.factories import CustomerFactory
from tests.metering.conftest import cloud_event

SVG = "{http://www.w3.org/2000/svg}"


def page(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def text(html: str) -> str:
    """The page's text with tags removed and whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.fixture
def catalog(db):
    acme = CustomerFactory(key="acme", name="Acme Corp")
    consumer_mapping_create(
        consumer_key="acme-gw", customer=acme, valid_from=datetime(2026, 10, 1, tzinfo=UTC)
    )
    calls = meter_create(
        key="api_calls",
        event_type="request",
        aggregation="COUNT",
        group_by={"route": "$.route", "status": "$.status"},
    )
    feature = feature_create(key="flights", meter=calls, filters={"route": ["/flights"]})
    return {"customer": acme, "meter": calls, "feature": feature}


SEEDED = [  # (id, subject, time, route)
    (1, "acme-gw", "2026-11-01T10:00:00Z", "/flights"),
    (2, "acme-gw", "2026-11-01T11:00:00Z", "/flights"),
    (3, "acme-gw", "2026-11-03T09:00:00Z", "/flights"),
    (4, "acme-gw", "2026-11-03T09:30:00Z", "/hotels"),
    (5, "stray-gw", "2026-11-02T08:00:00Z", "/flights"),
    (6, "stray-gw", "2026-11-02T12:00:00Z", "/flights"),
    (7, "stray-gw", "2026-11-04T12:00:00Z", "/hotels"),
]


def seed_events(ingest) -> None:
    ingest(*(cloud_event(i, subject=s, time=t, route=r) for i, s, t, r in SEEDED))


def seed_usage(ingest, catalog) -> None:
    """The seeded events and the buckets the rollup makes of them (one event each here),
    written directly: the rollup has its own tests, and waits for every transaction on
    the server to finish, which a busy shared server makes slow."""
    seed_events(ingest)
    for _, subject, time, route in SEEDED:
        at = datetime.fromisoformat(time)
        UsageBucket.objects.create(
            meter=catalog["meter"],
            customer=catalog["customer"] if subject == "acme-gw" else None,
            subject=subject,
            hour=at.replace(minute=0),
            dims={"route": route, "status": None},
            event_count=1,
            first_time=at,
            last_time=at,
        )


def test_every_metering_page_loads_for_a_superuser_with_data(admin_client, catalog, ingest):
    seed_usage(ingest, catalog)
    meter, feature = catalog["meter"], catalog["feature"]
    event = Event.objects.order_by("time").first()
    urls = [
        reverse("admin:app_list", args=["metering"]),
        reverse("admin:metering_meter_changelist"),
        reverse("admin:metering_meter_add"),
        reverse("admin:metering_meter_change", args=[meter.pk]),
        reverse("admin:metering_meter_templates"),
        reverse("admin:metering_feature_changelist"),
        reverse("admin:metering_feature_add"),
        reverse("admin:metering_feature_change", args=[feature.pk]),
        reverse("admin:metering_feature_usage", args=[feature.pk]),
        reverse("admin:metering_feature_usage", args=[feature.pk]) + "?customer=acme&window=hour",
        reverse("admin:metering_event_changelist"),
        reverse("admin:metering_event_changelist") + "?q=acme-gw",
        reverse("admin:metering_event_changelist") + "?recent=24h&type=request&attributed=no",
        reverse("admin:metering_event_changelist") + "?attributed=yes&subject=acme-gw",
        reverse("admin:metering_event_change", args=[event.pk]),
        reverse("admin:metering_unattributed_usage"),
        reverse("admin:metering_unattributed_usage") + "?since=all",
    ]
    for url in urls:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert b"errornote" not in response.content, url


@pytest.mark.django_db
def test_the_meter_list_shows_rollup_state_without_a_query_per_meter(admin_client, catalog):
    url = reverse("admin:metering_meter_changelist")
    admin_client.get(url)
    with CaptureQueriesContext(connection) as few:
        page(admin_client.get(url))
    for i in range(8):
        meter_create(key=f"m{i}", event_type=f"t{i}", aggregation="COUNT")
    with CaptureQueriesContext(connection) as many:
        body = page(admin_client.get(url))
    assert len(many) == len(few)
    assert "not rolled up yet" in body and "route, status" in body


# ------------------------------------------------------------------ catalog forms


def meter_form(meter: Meter, **changes) -> dict:
    data = {
        "key": meter.key,
        "name": meter.name,
        "description": meter.description,
        "event_type": meter.event_type,
        "aggregation": meter.aggregation,
        "value_property": meter.value_property,
        "group_by": '{"route": "$.route", "status": "$.status"}',
        "features-TOTAL_FORMS": "0",
        "features-INITIAL_FORMS": "0",
        "features-MIN_NUM_FORMS": "0",
        "features-MAX_NUM_FORMS": "1000",
    }
    return {**data, **changes}


@pytest.mark.django_db
def test_a_meter_with_data_refuses_a_new_aggregation_on_the_field(admin_client, ingest):
    meter = meter_create(key="calls", event_type="request", aggregation="COUNT")
    ingest(cloud_event(1))
    url = reverse("admin:metering_meter_change", args=[meter.pk])

    response = admin_client.post(
        url, meter_form(meter, aggregation="SUM", value_property="$.bytes")
    )

    body = page(response)
    errors = response.context["adminform"].form.errors
    assert "cannot change once the meter has data" in errors["aggregation"][0]
    assert "cannot change once the meter has data" in errors["value_property"][0]
    assert "cannot change once the meter has data" in body
    meter.refresh_from_db()
    assert (meter.aggregation, meter.value_property) == ("COUNT", "")


@pytest.mark.django_db
def test_a_meter_with_data_still_takes_a_new_name(admin_client, ingest):
    meter = meter_create(key="calls", event_type="request", aggregation="COUNT")
    ingest(cloud_event(1))
    url = reverse("admin:metering_meter_change", args=[meter.pk])
    assert "Fixed: this meter has data" in page(admin_client.get(url))

    response = admin_client.post(url, meter_form(meter, name="API calls"))

    assert response.status_code == 302
    meter.refresh_from_db()
    assert meter.name == "API calls"


@pytest.mark.django_db
def test_a_new_sum_meter_without_a_value_shows_the_error_on_the_value(admin_client):
    response = admin_client.post(
        reverse("admin:metering_meter_add"),
        meter_form(
            Meter(key="tokens", event_type="llm", aggregation="SUM"),
            group_by='{"model": "model"}',
        ),
    )

    errors = response.context["adminform"].form.errors
    assert "SUM needs a value" in errors["value_property"][0]
    assert "JSONPath" in errors["group_by"][0]
    assert not Meter.objects.filter(key="tokens").exists()


@pytest.mark.django_db
def test_a_meter_is_created_through_the_admin(admin_client):
    response = admin_client.post(
        reverse("admin:metering_meter_add"),
        meter_form(
            Meter(key="tokens", event_type="llm", aggregation="SUM", value_property="$.tokens")
        ),
    )

    assert response.status_code == 302
    assert Meter.objects.get(key="tokens").group_by == {"route": "$.route", "status": "$.status"}


@pytest.mark.django_db
def test_a_feature_filter_on_a_missing_dimension_shows_on_the_filters(admin_client, catalog):
    response = admin_client.post(
        reverse("admin:metering_feature_add"),
        {"key": "bad", "name": "", "meter": catalog["meter"].pk, "filters": '{"model": ["a"]}'},
    )

    errors = response.context["adminform"].form.errors
    assert "the meter has no such dimension" in errors["filters"][0]
    assert not Feature.objects.filter(key="bad").exists()


@pytest.mark.django_db
def test_a_meter_with_data_or_features_cannot_be_deleted(admin_client, catalog, ingest):
    unused = meter_create(key="unused", event_type="nothing", aggregation="COUNT")
    assert admin_client.get(
        reverse("admin:metering_meter_delete", args=[catalog["meter"].pk])
    ).status_code in (302, 403)
    assert (
        admin_client.get(reverse("admin:metering_meter_delete", args=[unused.pk])).status_code
        == 200
    )


# ------------------------------------------------------------------ event explorer


@pytest.mark.django_db
def test_the_event_page_shows_pretty_json_and_the_customer_at_its_time(
    admin_client, catalog, ingest
):
    ingest(cloud_event(1, subject="acme-gw", route="/flights", status=200, extra={"b": 1}))
    event = Event.objects.get(event_id="1")

    body = html.unescape(
        page(admin_client.get(reverse("admin:metering_event_change", args=[event.pk])))
    )

    assert '"route": "/flights"' in body
    assert '"extra": {\n    "b": 1\n  }' in body  # indented, one key a line
    customer_url = reverse("admin:customers_customer_change", args=[catalog["customer"].pk])
    assert f'<a href="{customer_url}">acme</a>' in body
    assert "api_calls" in body and "not rolled up yet" in body
    assert 'name="_save"' not in body  # read-only


@pytest.mark.django_db
def test_an_unattributed_event_links_to_mapping_its_subject(admin_client, ingest):
    ingest(cloud_event(1, subject="stray-gw"))
    event = Event.objects.get(event_id="1")

    body = page(admin_client.get(reverse("admin:metering_event_change", args=[event.pk])))

    assert "Unattributed" in body
    assert reverse("admin:customers_consumermapping_add") + "?consumer_key=stray-gw" in body


@pytest.mark.django_db
def test_the_event_list_searches_exactly_and_never_counts_the_whole_table(
    admin_client, catalog, ingest
):
    seed_events(ingest)
    url = reverse("admin:metering_event_changelist")

    with CaptureQueriesContext(connection) as queries:
        body = page(admin_client.get(url, {"q": "stray-gw"}))

    results = body.split('id="result_list"')[1].split("</table>")[0]
    assert results.count('class="field-time') == 3
    assert "stray-gw" in results and "acme-gw" not in results
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"] and "metering_event" in q["sql"]]
    assert counts and all("LIMIT" in sql for sql in counts)
    assert not any("LIKE" in q["sql"] for q in queries)
    assert 'href="/admin/metering/event/add/"' not in body
    by_id = page(admin_client.get(url, {"q": "5"}))
    results = by_id.split('id="result_list"')[1].split("</table>")[0]
    assert results.count('class="field-time') == 1 and "stray-gw" in results
    assert "0 events" in page(admin_client.get(url, {"q": "nothing-like-it"}))


def rows_of(body: str) -> int:
    if 'id="result_list"' not in body:
        return 0
    return body.split('id="result_list"')[1].split("</table>")[0].count('class="field-time')


@pytest.mark.django_db
def test_the_event_list_shows_every_event_and_narrows_to_recent_ones(admin_client, ingest):
    now = datetime.now(UTC)
    ingest(
        cloud_event(1, subject="a-gw", time=(now - timedelta(hours=1)).isoformat()),
        cloud_event(2, subject="a-gw", time=(now - timedelta(days=3)).isoformat()),
    )
    url = reverse("admin:metering_event_changelist")

    assert rows_of(page(admin_client.get(url))) == 2  # the time index makes "any time" the default
    assert rows_of(page(admin_client.get(url, {"recent": "24h"}))) == 1
    assert rows_of(page(admin_client.get(url, {"recent": "any"}))) == 2
    assert rows_of(page(admin_client.get(url, {"recent": "7d"}))) == 2
    assert rows_of(page(admin_client.get(url, {"subject": "a-gw"}))) == 2
    assert rows_of(page(admin_client.get(url, {"q": "a-gw"}))) == 2
    assert rows_of(page(admin_client.get(url, {"type": "request"}))) == 2


@pytest.mark.django_db
def test_the_event_list_shows_customers_without_a_query_per_row(admin_client, catalog, ingest):
    url = reverse("admin:metering_event_changelist") + "?recent=any"
    ingest(cloud_event(1, subject="acme-gw"))
    admin_client.get(url)
    with CaptureQueriesContext(connection) as few:
        page(admin_client.get(url))
    ingest(*(cloud_event(i, subject="acme-gw") for i in range(2, 40)))
    with CaptureQueriesContext(connection) as many:
        body = page(admin_client.get(url))
    assert len(many) == len(few)
    assert body.count(">acme</a>") == 39


@pytest.mark.django_db
def test_events_cannot_be_added_changed_or_deleted(admin_client, ingest):
    ingest(cloud_event(1))
    event = Event.objects.get()
    assert admin_client.get(reverse("admin:metering_event_add")).status_code == 403
    assert (
        admin_client.get(reverse("admin:metering_event_delete", args=[event.pk])).status_code == 403
    )
    admin_client.post(reverse("admin:metering_event_change", args=[event.pk]), {"subject": "x"})
    assert Event.objects.get().subject == "acme-gw"


# ------------------------------------------------------------------ unattributed usage


@pytest.mark.django_db
def test_unattributed_usage_lists_each_subject_with_its_counts_and_a_mapping_link(
    admin_client, catalog, ingest
):
    seed_events(ingest)
    ingest(cloud_event(8, subject="acme-gw", time="2026-09-01T00:00:00Z"))  # before its mapping

    body = page(admin_client.get(reverse("admin:metering_unattributed_usage"), {"since": "all"}))

    rows = text(body)
    assert "stray-gw 3 2026-11-02 08:00:00 2026-11-04 12:00:00" in rows
    assert "acme-gw 1 2026-09-01 00:00:00 2026-09-01 00:00:00" in rows
    assert "2 subjects, 4 unattributed events" in rows
    add = reverse("admin:customers_consumermapping_add")
    assert f'href="{add}?consumer_key=stray-gw"' in body
    assert f'href="{add}?consumer_key=acme-gw"' in body
    assert "mapped at other times" in body  # acme-gw has a mapping, later


@pytest.mark.django_db
def test_unattributed_usage_pages_through_many_subjects(admin_client, ingest, monkeypatch):
    monkeypatch.setattr(EventAdmin, "UNATTRIBUTED_PER_PAGE", 2)
    ingest(*(cloud_event(i, subject=f"s{i}", time="2026-11-01T00:00:00Z") for i in range(5)))
    url = reverse("admin:metering_unattributed_usage")

    first = text(page(admin_client.get(url, {"since": "all"})))
    last = text(page(admin_client.get(url, {"since": "all", "p": 3})))

    assert "5 subjects, 5 unattributed events" in first and "Page 1 of 3" in first
    assert "s0" in first and "s4" not in first
    assert "Page 3 of 3" in last and "s4" in last


@pytest.mark.django_db
def test_the_metering_app_page_links_the_usage_tools(admin_client):
    body = page(admin_client.get(reverse("admin:app_list", args=["metering"])))
    assert reverse("admin:metering_unattributed_usage") in body
    assert reverse("admin:metering_meter_templates") in body


@pytest.mark.django_db
def test_the_mapping_link_opens_a_form_with_the_subject_filled_in(admin_client):
    body = page(
        admin_client.get(reverse("admin:customers_consumermapping_add"), {"consumer_key": "x-gw"})
    )
    assert 'value="x-gw"' in body


# ------------------------------------------------------------------ usage charts


def chart(admin_client, feature: Feature, **params):
    url = reverse("admin:metering_feature_usage", args=[feature.pk])
    response = admin_client.get(url, {**params, "format": "svg"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("image/svg+xml")
    svg = ET.fromstring(response.content)
    bars = [r for r in svg.iter(f"{SVG}rect") if r.get("class") == "bar"]
    return svg, [r.find(f"{SVG}title").text for r in bars]


def test_the_usage_chart_has_a_bar_per_day_with_the_customers_usage(admin_client, catalog, ingest):
    seed_usage(ingest, catalog)
    feature = catalog["feature"]

    svg, bars = chart(admin_client, feature, customer="acme", days=4, until="2026-11-04")

    assert bars == [
        "Sun 2026-11-01 (UTC): 2",
        "Mon 2026-11-02 (UTC): 0",
        "Tue 2026-11-03 (UTC): 1",  # the /hotels call is not on the feature
        "Wed 2026-11-04 (UTC): 0",
    ]
    labels = [t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "label"]
    assert labels == ["Nov 1", "Nov 2", "Nov 3", "Nov 4"]
    assert [t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "tick"][0] == "0"

    _, everyone = chart(admin_client, feature, days=4, until="2026-11-04")
    assert [b.rsplit(": ", 1)[1] for b in everyone] == ["2", "2", "1", "0"]
    _, hourly = chart(admin_client, feature, days=1, until="2026-11-01", window="hour")
    assert len(hourly) == 24 and hourly[10].endswith("10:00 (UTC): 1")


def test_the_usage_page_draws_the_chart_inline_with_a_total(admin_client, catalog, ingest):
    seed_usage(ingest, catalog)
    url = reverse("admin:metering_feature_usage", args=[catalog["feature"].pk])

    body = page(admin_client.get(url, {"customer": "acme", "days": 7, "until": "2026-11-05"}))

    assert body.count('class="bar"') == 7
    assert '<strong id="usage-total">3</strong>' in body
    assert "Acme Corp" in body
    unknown = page(admin_client.get(url, {"customer": "nobody"}))
    assert "No customer with key" in unknown and "usage-chart" not in unknown


@pytest.mark.django_db
def test_feature_pages_link_to_the_usage_chart(admin_client, catalog):
    usage = reverse("admin:metering_feature_usage", args=[catalog["feature"].pk])
    assert usage in page(admin_client.get(reverse("admin:metering_feature_changelist")))
    change = reverse("admin:metering_feature_change", args=[catalog["feature"].pk])
    assert usage in page(admin_client.get(change))


# ------------------------------------------------------------------ templates


@pytest.mark.django_db
def test_a_template_button_creates_its_meters_and_features(admin_client):
    url = reverse("admin:metering_meter_templates")
    body = page(admin_client.get(url))
    assert "API requests" in body and 'value="api_requests"' in body
    assert url in page(admin_client.get(reverse("admin:metering_meter_changelist")))

    response = admin_client.post(url, {"template": "api_requests"}, follow=True)

    assert "created api_requests, api_calls, api_calls_success" in response.content.decode()
    assert Meter.objects.filter(key="api_requests").exists()
    assert set(Feature.objects.values_list("key", flat=True)) == {"api_calls", "api_calls_success"}
    again = admin_client.post(url, {"template": "api_requests"}, follow=True).content.decode()
    assert "nothing created" in again and "Already applied" in again


@pytest.mark.django_db
def test_an_unknown_template_is_reported_not_raised(admin_client):
    response = admin_client.post(
        reverse("admin:metering_meter_templates"), {"template": "nope"}, follow=True
    )
    assert "No template" in response.content.decode()
    assert not Meter.objects.exists()
