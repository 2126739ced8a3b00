import json
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from metering.models import Event
from metering.partitions import month_start, partition_name
from tests.metering.conftest import cloud_event

pytestmark = pytest.mark.django_db

URL = "/api/v1/events"
BATCH = "application/cloudevents-batch+json"
ONE = "application/cloudevents+json"


def post(client, body, content_type=BATCH):
    raw = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.generic("POST", URL, raw, content_type=content_type)


@pytest.fixture
def gateway(api_client_for):
    return api_client_for("ingest")


def test_a_batch_is_stored_before_the_204(gateway):
    events = [cloud_event(i, tokens=i) for i in range(3)]
    response = post(gateway, events)
    assert response.status_code == 204
    assert response.content == b""
    stored = Event.objects.order_by("event_id")
    assert [(e.event_id, e.subject, e.type, e.data) for e in stored] == [
        (str(i), "acme-gw", "request", {"tokens": i}) for i in range(3)
    ]


def test_one_event_and_plain_json_are_accepted(gateway):
    assert post(gateway, cloud_event("a"), content_type=ONE).status_code == 204
    assert post(gateway, cloud_event("b"), content_type="application/json").status_code == 204
    assert (
        post(
            gateway, [cloud_event("c")], content_type="application/json; charset=utf-8"
        ).status_code
        == 204
    )
    assert Event.objects.count() == 3


def test_a_missing_time_takes_the_receipt_time(gateway):
    assert post(gateway, [cloud_event("a", time=None)]).status_code == 204
    event = Event.objects.get()
    assert abs((event.ingested_at - event.time).total_seconds()) < 5


def test_duplicates_count_once_within_and_across_requests(gateway):
    assert (
        post(
            gateway, [cloud_event("a", tokens=1), cloud_event("a", tokens=2), cloud_event("b")]
        ).status_code
        == 204
    )
    assert (
        post(gateway, [cloud_event("a", tokens=3), cloud_event("a", source="other")]).status_code
        == 204
    )
    rows = sorted((e.source, e.event_id, e.data.get("tokens")) for e in Event.objects.all())
    assert rows == [("gw", "a", 1), ("gw", "b", None), ("other", "a", None)]


def test_the_same_event_resent_with_another_time_still_counts_once(gateway):
    post(gateway, [cloud_event("a", time="2026-10-31T23:59:59Z")])
    post(gateway, [cloud_event("a", time="2026-11-01T00:00:00Z")])
    assert Event.objects.count() == 1


def test_an_invalid_batch_names_every_bad_event_and_stores_nothing(gateway):
    events = [
        cloud_event("ok"),
        {**cloud_event("x"), "subject": ""},
        {k: v for k, v in cloud_event("y").items() if k != "type"},
        {**cloud_event("z"), "time": "yesterday"},
        {**cloud_event("w"), "data": [1, 2]},
        {**cloud_event("v"), "id": "i" * 256},
        {**cloud_event("u"), "time": "2026-11-01T10:00:00"},
        {**cloud_event("t"), "source": 7},
    ]
    response = post(gateway, events)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    errors = response.json()["errors"]
    assert [e["index"] for e in errors] == [1, 2, 3, 4, 5, 6, 7]
    reasons = {e["index"]: e["reason"] for e in errors}
    assert reasons[1].startswith("subject")
    assert reasons[2] == "type: required"
    assert reasons[3].startswith("time")
    assert reasons[4].startswith("data")
    assert reasons[5].startswith("id") and "255" in reasons[5]
    assert "timezone" in reasons[6]
    assert reasons[7].startswith("source")
    assert Event.objects.count() == 0


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2", b"", b'"a string"'])
def test_malformed_json_is_a_400(gateway, body):
    response = post(gateway, body, content_type="application/json")
    assert response.status_code == 400
    assert Event.objects.count() == 0


def test_a_batch_content_type_needs_an_array(gateway):
    assert post(gateway, cloud_event("a"), content_type=BATCH).status_code == 400
    assert post(gateway, [cloud_event("a")], content_type=ONE).status_code == 400


def test_a_wrong_content_type_is_415(gateway):
    assert post(gateway, [cloud_event("a")], content_type="text/plain").status_code == 415
    assert post(gateway, "a=b", content_type="application/x-www-form-urlencoded").status_code == 415


@override_settings(METERING_MAX_BATCH_EVENTS=3)
def test_a_batch_past_the_limit_is_413(gateway):
    response = post(gateway, [cloud_event(i) for i in range(4)])
    assert response.status_code == 413
    assert "limit is 3" in response.json()["detail"]
    assert post(gateway, [cloud_event(i) for i in range(3)]).status_code == 204


@override_settings(METERING_MAX_BODY_BYTES=1000)
def test_a_body_past_the_limit_is_413(gateway):
    response = post(gateway, [cloud_event(i, padding="x" * 200) for i in range(10)])
    assert response.status_code == 413
    assert Event.objects.count() == 0


def test_ingestion_needs_the_ingest_scope(api_client_for):
    assert post(api_client_for("read", "write"), [cloud_event("a")]).status_code == 403
    from rest_framework.test import APIClient

    assert post(APIClient(), [cloud_event("a")]).status_code == 401


def test_past_the_rate_limit_the_answer_is_429_with_retry_after(gateway):
    gateway.api_key.rate_limit = 2
    gateway.api_key.save()
    # six requests span at most two one-second windows, so one window sees three
    responses = [post(gateway, [cloud_event(i)]) for i in range(6)]
    limited = [r for r in responses if r.status_code == 429]
    assert limited, [r.status_code for r in responses]
    assert int(limited[0]["Retry-After"]) >= 1
    assert limited[0].json()["status"] == 429
    assert Event.objects.count() == 6 - len(limited)


def test_events_land_in_monthly_partitions_created_on_demand(gateway):
    recent = timezone.now().replace(microsecond=0) - timedelta(hours=1)
    response = post(
        gateway,
        [
            cloud_event("old", time="2019-03-15T00:00:00Z"),
            cloud_event("new", time=recent.isoformat()),
        ],
    )
    assert response.status_code == 204, response.content
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tableoid::regclass::text, event_id FROM metering_event ORDER BY event_id"
        )
        assert cursor.fetchall() == [
            (partition_name(month_start(recent)), "new"),
            ("metering_event_p2019_03", "old"),
        ]


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_requests_with_the_same_events_store_them_once(api_client_for):
    gateway = api_client_for("ingest")
    events = [cloud_event(i) for i in range(200)]
    barrier = threading.Barrier(2)
    codes = []

    def send():
        barrier.wait()
        codes.append(post(gateway, events).status_code)
        connection.close()

    threads = [threading.Thread(target=send) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [204, 204]
    assert Event.objects.count() == 200
