"""One bad thing never stops the rest: a meter whose rollup fails is isolated (its other
events, the other meters and the consumer mapping changes go on), what it could not hold
is refused and recorded with the event's id, and no failure loses or double-counts an
event.

The bad events are stored straight into the event tables, as an older version without
ingestion checks would have stored them: the rollup must cope with whatever is stored.
Transactional tests: the rollup only takes events of transactions that have finished.
"""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from html import unescape

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.models import Sum
from django.urls import reverse

from customers.models import ConsumerMappingChange
from customers.services import consumer_mapping_create
from metering import rollup
from metering.models import Meter, RefusedEvent, RollupFailure, RollupState, UsageBucket
from metering.partitions import month_start, partitions_ensure
from metering.services import meter_create, meter_update, usage_rollup
from metering.tasks import usage_rollup_task
from tests.factories import CustomerFactory
from tests.metering.conftest import cloud_event

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
LATER = datetime(2026, 11, 27, 12, 5, tzinfo=UTC)


def store_unchecked(*events: dict) -> list[int]:
    """Store events as they are, past any check; returns their row ids (metering_event.id)."""
    ids = []
    with transaction.atomic():
        times = [datetime.fromisoformat(e["time"].replace("Z", "+00:00")) for e in events]
        partitions_ensure({month_start(t) for t in times})
        with connection.cursor() as cursor:
            for event, at in zip(events, times, strict=True):
                cursor.execute(
                    "INSERT INTO metering_eventkey (source, event_id, time) VALUES (%s, %s, %s)",
                    [event["source"], event["id"], at],
                )
                cursor.execute(
                    "INSERT INTO metering_event (source, event_id, type, subject, time, data) "
                    "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                    [
                        event["source"],
                        event["id"],
                        event["type"],
                        event["subject"],
                        at,
                        json.dumps(event["data"]),
                    ],
                )
                ids.append(cursor.fetchone()[0])
    horizon_passed()
    return ids


def horizon_passed(timeout: float = 60) -> None:
    """Wait until every transaction begun so far has ended, so that the rollup's horizon
    (``pg_snapshot_xmin``, which the whole server shares) has passed the events stored:
    other test runs on the same server hold it back while their transactions are open."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_xact_id()::text::bigint")
        mine = cursor.fetchone()[0]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            if cursor.fetchone()[0] > mine:
                return
            time.sleep(0.02)
    raise AssertionError("a transaction on the server stayed open for a minute")


def totals(meter: Meter) -> dict:
    return UsageBucket.objects.filter(meter=meter).aggregate(
        events=Sum("event_count"), value=Sum("value_sum")
    )


def per_customer(meter: Meter) -> dict:
    found: dict = {}
    for b in UsageBucket.objects.filter(meter=meter).select_related("customer"):
        key = b.customer.key if b.customer else None
        found[key] = found.get(key, 0) + b.event_count
    return found


def watermark(meter: Meter) -> int:
    state = RollupState.objects.filter(meter=meter).first()
    return state.watermark if state else 0


@pytest.fixture
def two_meters(db):
    tokens = meter_create(
        key="llm_tokens",
        event_type="llm",
        aggregation="SUM",
        value_property="$.tokens",
        group_by={"model": "$.model"},
    )
    calls = meter_create(key="api_calls", event_type="request", aggregation="COUNT")
    return tokens, calls


@pytest.mark.django_db(transaction=True)
def test_a_value_no_bucket_can_hold_is_refused_and_everything_else_goes_on(two_meters):
    tokens, calls = two_meters
    acme = CustomerFactory(key="acme")
    store_unchecked(
        cloud_event(1, type="llm", tokens=10, model="a"),
        cloud_event(2, type="request"),
    )
    usage_rollup(now=NOW)
    assert per_customer(calls) == {None: 1}  # nobody mapped yet
    # A mapping change is pending when the bad event arrives among good ones.
    consumer_mapping_create(
        consumer_key="acme-gw", customer=acme, valid_from=datetime(2026, 10, 1, tzinfo=UTC)
    )
    good_before, bad, good_after = store_unchecked(
        cloud_event(3, type="llm", tokens=5, model="a"),
        cloud_event(4, type="llm", tokens=1e30, model="a"),
        cloud_event(5, type="llm", tokens=7, model="b"),
    )
    store_unchecked(cloud_event(6, type="request"))

    result = usage_rollup(now=LATER)

    assert result.refused == 1 and not result.failed
    assert result.mapping_changes == 1
    assert not ConsumerMappingChange.objects.filter(processed_at__isnull=True).exists()
    assert totals(tokens) == {"events": 3, "value": Decimal(22)}  # 10 + 5 + 7, not 1e30
    assert per_customer(tokens) == {"acme": 3}  # the mapping change reached the old event
    assert per_customer(calls) == {"acme": 2}
    refused = RefusedEvent.objects.get()
    assert (refused.meter, refused.event_pk, refused.event_id) == (tokens, bad, "4")
    assert "1e+30 is beyond what a usage bucket holds" in refused.reason
    assert refused.acknowledged_at is None
    assert not RollupFailure.objects.exists()  # the meter is not halted: it goes on

    store_unchecked(cloud_event(7, type="llm", tokens=1, model="a"))
    usage_rollup(now=LATER)
    usage_rollup(now=LATER)

    assert totals(tokens) == {"events": 4, "value": Decimal(23)}  # later events counted once
    assert RefusedEvent.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_value_postgresql_cannot_even_compute_is_found_among_many(two_meters):
    tokens, _ = two_meters
    events = [cloud_event(i, type="llm", tokens=1, model="a") for i in range(40)]
    events[23] = cloud_event(23, type="llm", tokens="1e999999", model="a")  # overflows numeric
    ids = store_unchecked(*events)

    result = usage_rollup(now=NOW)

    assert result.refused == 1 and not result.failed
    assert totals(tokens) == {"events": 39, "value": Decimal(39)}
    refused = RefusedEvent.objects.get(meter=tokens)
    assert refused.event_pk == ids[23]
    assert "value overflows numeric format" in refused.reason


@pytest.mark.django_db(transaction=True)
def test_a_meter_whose_path_cannot_be_evaluated_is_halted_and_resumes_once_fixed(two_meters):
    tokens, calls = two_meters
    # saved by an older version, before paths were checked
    Meter.objects.filter(pk=tokens.pk).update(group_by={"model": "$.a b"})
    tokens.refresh_from_db()
    acme = CustomerFactory(key="acme")
    consumer_mapping_create(
        consumer_key="acme-gw", customer=acme, valid_from=datetime(2026, 10, 1, tzinfo=UTC)
    )
    store_unchecked(
        cloud_event(1, type="llm", tokens=10, model="a"),
        cloud_event(2, type="request"),
    )

    result = usage_rollup(now=NOW)

    assert [r.meter for r in result.failed] == ["llm_tokens"]
    assert result.mapping_changes == 1
    assert per_customer(calls) == {"acme": 1}  # the other meter went on
    failure = RollupFailure.objects.get(meter=tokens)
    assert failure.stage == "rollup" and "'$.a b' is not a JSONPath" in failure.error
    assert failure.event_ids == []  # the meter is to blame, not an event
    assert watermark(tokens) == 0 and totals(tokens)["events"] is None
    usage_rollup(now=LATER)
    failure.refresh_from_db()
    assert (failure.first_failed_at, failure.last_failed_at, failure.attempts) == (NOW, LATER, 2)

    meter_update(meter=tokens, group_by={"model": "$.model"})  # nothing counted: still fixable
    usage_rollup(now=LATER)

    assert totals(tokens) == {"events": 1, "value": Decimal(10)}
    assert not RollupFailure.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_sum_that_overflows_its_bucket_halts_the_meter_without_blaming_one_event(two_meters):
    tokens, calls = two_meters
    store_unchecked(
        cloud_event(1, type="llm", tokens=6e27, model="a"),  # each one fits a bucket
        cloud_event(2, type="llm", tokens=6e27, model="a"),  # their sum does not
        cloud_event(3, type="request"),
    )

    result = usage_rollup(now=NOW)

    assert [r.meter for r in result.failed] == ["llm_tokens"]
    assert "numeric field overflow" in RollupFailure.objects.get(meter=tokens).error
    assert RollupFailure.objects.get(meter=tokens).event_ids == []
    assert not RefusedEvent.objects.exists()  # nothing silently left out
    assert totals(calls)["events"] == 1


@pytest.mark.django_db(transaction=True)
def test_an_operator_refuses_an_event_to_unblock_a_halted_meter_but_never_a_counted_one(
    admin_client, two_meters
):
    tokens, _ = two_meters
    counted, first, second = store_unchecked(
        cloud_event(1, type="llm", tokens=2, model="b"),
        cloud_event(2, type="llm", tokens=6e27, model="a"),
        cloud_event(3, type="llm", tokens=6e27, model="a"),
    )
    usage_rollup(now=NOW)  # halted: the two together overflow their bucket
    meter_page = admin_client.get(reverse("admin:metering_meter_change", args=[tokens.pk]))
    add_url = f"{reverse('admin:metering_refusedevent_add')}?meter={tokens.pk}"
    assert add_url.replace("&", "&amp;") in meter_page.content.decode()

    response = admin_client.post(
        add_url, {"meter": tokens.pk, "event_pk": second, "reason": "a client bug, resent"}
    )

    assert response.status_code == 302
    refused = RefusedEvent.objects.get(event_pk=second)
    assert refused.reason.startswith("refused by admin: a client bug, resent")
    assert refused.acknowledged_at is not None  # the operator decided: nothing to show
    usage_rollup(now=LATER)
    assert totals(tokens) == {"events": 2, "value": Decimal("6000000000000000000000000002")}
    assert not RollupFailure.objects.exists()

    response = admin_client.post(
        add_url, {"meter": tokens.pk, "event_pk": counted, "reason": "too late"}
    )
    errors = response.context["adminform"].form.errors
    assert "has rolled event" in errors["event_pk"][0] and "it is counted" in errors["event_pk"][0]
    assert RefusedEvent.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_rollup_that_raises_mid_meter_loses_nothing_and_counts_nothing_twice(
    two_meters, monkeypatch
):
    tokens, calls = two_meters
    store_unchecked(
        *[cloud_event(i, type="llm", tokens=i, model="a") for i in range(1, 11)],
        *[cloud_event(f"r{i}", type="request") for i in range(4)],
    )
    aggregate = rollup._aggregate

    def buckets_written_then_crash(cursor, meter, *args, **kwargs):
        counted = aggregate(cursor, meter, *args, **kwargs)
        if meter.key == "llm_tokens":
            raise DatabaseError("the worker died here")
        return counted

    monkeypatch.setattr(rollup, "_aggregate", buckets_written_then_crash)
    result = usage_rollup(now=NOW)

    assert [r.meter for r in result.failed] == ["llm_tokens"]
    assert totals(tokens)["events"] is None and watermark(tokens) == 0  # all rolled back
    assert totals(calls)["events"] == 4
    assert "the worker died here" in RollupFailure.objects.get(meter=tokens).error

    monkeypatch.setattr(rollup, "_aggregate", aggregate)
    store_unchecked(cloud_event(11, type="llm", tokens=11, model="a"))
    usage_rollup(now=LATER)
    usage_rollup(now=LATER)

    assert totals(tokens) == {"events": 11, "value": Decimal(66)}  # 1 + ... + 11, once each
    assert totals(calls)["events"] == 4
    assert not RollupFailure.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_rollup_killed_in_the_middle_loses_nothing_and_counts_nothing_twice(
    two_meters, monkeypatch, settings
):
    settings.METERING_ROLLUP_WORKERS = 1
    tokens, calls = two_meters
    store_unchecked(
        *[cloud_event(i, type="llm", tokens=2, model=f"m{i % 3}") for i in range(30)],
        *[cloud_event(f"r{i}", type="request") for i in range(5)],
    )
    aggregate = rollup._aggregate

    def buckets_written_then_wait(cursor, meter, *args, **kwargs):
        counted = aggregate(cursor, meter, *args, **kwargs)
        if meter.key == "llm_tokens":
            cursor.execute("SELECT pg_sleep(30)")  # killed here, its buckets written
        return counted

    monkeypatch.setattr(rollup, "_aggregate", buckets_written_then_wait)
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = usage_rollup(now=NOW)
        except Exception as exc:  # a dead connection may end the run: that is allowed
            outcome["error"] = exc
        finally:
            connection.close()

    worker = threading.Thread(target=run)
    worker.start()
    with connection.cursor() as cursor:
        for _ in range(200):
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' "
                "AND datname = current_database()"
            )
            found = cursor.fetchone()
            if found:
                break
            time.sleep(0.05)
        assert found, "the rollup never reached the middle of the meter"
        cursor.execute("SELECT pg_terminate_backend(%s)", [found[0]])
    worker.join(30)
    assert not worker.is_alive()
    assert totals(tokens)["events"] is None and watermark(tokens) == 0

    monkeypatch.setattr(rollup, "_aggregate", aggregate)
    usage_rollup(now=LATER)
    usage_rollup(now=LATER)

    assert totals(tokens) == {"events": 30, "value": Decimal(60)}
    assert totals(calls)["events"] == 5
    assert not RollupFailure.objects.filter(stage="rollup").exists()


@pytest.mark.django_db(transaction=True)
def test_a_failing_reattribution_is_recorded_for_its_meter_and_retried_until_it_works(
    two_meters,
):
    tokens, calls = two_meters
    acme = CustomerFactory(key="acme")
    store_unchecked(
        cloud_event(1, type="llm", tokens=3, model="a"),
        cloud_event(2, type="request"),
    )
    usage_rollup(now=NOW)  # both meters have buckets, unattributed
    Meter.objects.filter(pk=tokens.pk).update(group_by={"model": "$x"})  # broken since
    tokens.refresh_from_db()
    consumer_mapping_create(
        consumer_key="acme-gw", customer=acme, valid_from=datetime(2026, 10, 1, tzinfo=UTC)
    )

    result = usage_rollup(now=NOW)

    assert result.mapping_changes == 1 and result.reattributions_failed == 1
    assert per_customer(calls) == {"acme": 1}  # the other meter follows the mapping
    failure = RollupFailure.objects.get(meter=tokens, stage="reattribution")
    assert failure.consumer_key == "acme-gw" and "jsonpath variable" in failure.error
    assert per_customer(tokens) == {None: 1}  # untouched, not half-done

    meter_update(meter=tokens, group_by={"model": "$.model"})
    result = usage_rollup(now=LATER)

    assert result.reattributions_failed == 0
    assert per_customer(tokens) == {"acme": 1}
    assert not RollupFailure.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_periodic_rollup_task_does_not_raise_for_one_bad_meter(two_meters):
    tokens, calls = two_meters
    Meter.objects.filter(pk=tokens.pk).update(value_property="$.a b")
    store_unchecked(
        cloud_event(1, type="llm", tokens=1e30, model="a"),
        cloud_event(2, type="request"),
    )

    outcome = usage_rollup_task.delay().get()

    assert outcome["events"] == 1
    assert outcome["failed_meters"] == ["llm_tokens"]
    assert totals(calls)["events"] == 1
    assert RollupFailure.objects.filter(meter=tokens).exists()


def dashboard_row(html: str, meter_key: str) -> str:
    match = re.search(rf'<tr class="meter-problem-{meter_key}">(.*?)</tr>', html, re.S)
    assert match, meter_key
    return match.group(1)


def words(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


@pytest.mark.django_db(transaction=True)
def test_the_dashboard_shows_each_failing_meter_its_error_and_the_events_to_blame(
    admin_client, two_meters
):
    tokens, _ = two_meters
    Meter.objects.create(  # stored before paths were checked
        key="latency", event_type="request", aggregation="MAX", value_property="$.a b"
    )
    _, bad = store_unchecked(
        cloud_event(1, type="llm", tokens=1, model="a"),
        cloud_event(2, type="llm", tokens=1e30, model="a"),
    )
    store_unchecked(cloud_event(3, type="request", ms=12))
    usage_rollup(now=NOW)

    html = admin_client.get(reverse("admin:index"), {"refresh": "1"}).content.decode()

    card = re.search(
        r'id="attention-meter-rollups">.*?class="count"><a href="([^"]+)">(\d+)', html, re.S
    )
    assert card and card.group(2) == "2"
    halted = dashboard_row(html, "latency")
    assert words(halted).startswith("latency Halted since")
    assert "'$.a b' is not a JSONPath PostgreSQL can evaluate" in words(halted)
    refusing = dashboard_row(html, "llm_tokens")
    assert (
        "1 event refused, not counted (the first: its value 1e+30 is beyond what a usage "
        "bucket holds" in words(refusing)
    )
    event_url = reverse("admin:metering_event_change", args=[bad])
    assert f'<a href="{event_url}">{bad}</a>' in refusing
    event_page = admin_client.get(event_url).content.decode()
    assert "refused: its value 1e+30 is beyond what a usage bucket holds" in words(event_page)

    listing_url = unescape(re.search(r'href="([^"]+)">\(all 1 refused\)', refusing).group(1))
    listing = admin_client.get(listing_url)
    assert [r.event_pk for r in listing.context["cl"].result_list] == [bad]
    admin_client.post(
        listing_url,
        {"action": "acknowledge", "_selected_action": [r.pk for r in RefusedEvent.objects.all()]},
    )

    html = admin_client.get(reverse("admin:index"), {"refresh": "1"}).content.decode()
    assert 'class="meter-problem-llm_tokens"' not in html  # seen; the event stays refused
    assert 'class="meter-problem-latency"' in html
    assert totals(tokens) == {"events": 1, "value": Decimal(1)}
