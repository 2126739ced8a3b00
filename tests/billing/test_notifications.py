"""Notifications: thresholds notify once per threshold per period (even from concurrent
rollups), events go to a real local HTTP receiver that verifies the Standard Webhooks
signature, failed deliveries are retried with backoff, given up, and redelivered."""

from __future__ import annotations

import base64
import importlib
import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from django.db import connection, transaction
from django.test import override_settings
from django.urls import NoReverseMatch, clear_url_caches, reverse
from django.utils import timezone
from standardwebhooks import Webhook

import billing.notifications.admin  # noqa: F401  registers the admin pages under test
from billing.catalog.periods import Period
from billing.invoicing.services import invoice_draft_for, invoice_issue, invoice_mark
from billing.models import (
    NotificationEvent,
    NotificationRule,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from billing.notifications.delivery import deliveries_send_due, delivery_send, redeliver
from billing.notifications.services import notify, notify_invoice_status, notify_settlement_failed
from billing.notifications.thresholds import (
    account_thresholds_check,
    thresholds_check,
    thresholds_validate,
)
from metering.models import Feature
from metering.services import usage_rollup
from tests.factories import (
    ConsumerMappingFactory,
    CustomerFactory,
    FeatureFactory,
    PlanVersionFactory,
    SubscriptionFactory,
    flat_fee,
)
from tests.metering.conftest import cloud_event

OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
CHECK = NOV + timedelta(days=10)
ALL_EVENTS = [
    "entitlement.threshold",
    "spend.threshold",
    "invoice.issued",
    "invoice.paid",
    "invoice.payment_failed",
    "settlement.failed",
]


@pytest.fixture(autouse=True)
def _receivers_on_this_machine(settings):
    """The receiver listens on 127.0.0.1, a private target: allowed here, as for receivers
    on premises. Refusing private targets is tested in test_webhook_targets."""
    settings.NOTIFICATION_WEBHOOKS_ALLOW_PRIVATE = True


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


class Receiver:
    """A webhook receiver on 127.0.0.1: verifies each request's signature with
    ``standardwebhooks`` and answers the scripted statuses (then 200)."""

    def __init__(self, secret: str):
        self.secret = secret
        self.statuses: list[int] = []
        self.delay = 0.0
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k: v for k, v in self.headers.items()}
                try:
                    payload, verified = Webhook(receiver.secret).verify(body, headers), True
                except Exception:
                    payload, verified = None, False
                with receiver.lock:
                    status = (
                        (receiver.statuses.pop(0) if receiver.statuses else 200)
                        if verified
                        else 400
                    )
                    receiver.requests.append(
                        {
                            "id": headers.get("webhook-id"),
                            "payload": payload,
                            "verified": verified,
                            "status": status,
                        }
                    )
                time.sleep(receiver.delay)
                self.send_response(status)
                self.send_header("content-type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"try again later")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    @property
    def verified(self) -> list[dict]:
        return [r["payload"] for r in self.requests if r["verified"]]

    def of_type(self, type_: str) -> list[dict]:
        return [p for p in self.verified if p["type"] == type_]


@pytest.fixture
def receiver():
    r = Receiver(new_secret())
    thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
def endpoint(db, receiver):
    return WebhookEndpoint.objects.create(
        key="ops", url=receiver.url, secret=receiver.secret, events=ALL_EVENTS
    )


@pytest.fixture
def acme(db):
    """A billing account on a plan with 10 API calls a month, thresholds at 80% and 100%."""
    acme = CustomerFactory(key="acme")
    limit = {
        "feature": "api_calls",
        "type": "metered",
        "limit": 10,
        "period": "monthly",
        "hard": True,
        "thresholds": [80, 100],
    }
    version = PlanVersionFactory(
        fee=flat_fee(name=""), feature=FeatureFactory(), unit_price="0.50", entitlements=(limit,)
    )
    SubscriptionFactory(customer=acme, plan_version=version, start=OCT)
    ConsumerMappingFactory(consumer_key="acme-gw", customer=acme, valid_from=OCT)
    return acme


def send_calls(ingest, n, *, start=NOV + timedelta(days=1), prefix="c"):
    ingest(
        *[
            cloud_event(
                f"{prefix}{i}", subject="acme-gw", time=(start + timedelta(minutes=i)).isoformat()
            )
            for i in range(n)
        ]
    )


def settled():
    """Wait until every stored event's transaction is below the cluster-wide horizon, so
    a rollup takes them all (other test runs on the same server can hold it back)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(xid), 0) FROM metering_event")
        newest = cursor.fetchone()[0]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            if cursor.fetchone()[0] > newest:
                return
            time.sleep(0.1)
    raise AssertionError("Another transaction held the rollup horizon back for 30 s")


def thresholds_notified() -> list[str]:
    return sorted(
        NotificationEvent.objects.filter(type="entitlement.threshold").values_list(
            "dedupe_key", flat=True
        )
    )


# ---------------------------------------------------------------- thresholds


@pytest.mark.django_db(transaction=True)
def test_each_threshold_notifies_once_per_period_signed_to_the_receiver(
    acme, endpoint, receiver, ingest
):
    NotificationRule.objects.create(
        key="acme-5-calls", kind="entitlement_threshold", customer=acme, thresholds=[{"usage": 5}]
    )
    send_calls(ingest, 8)
    settled()
    usage_rollup(now=CHECK)
    assert thresholds_check(now=CHECK) == {"accounts": 1, "notified": 2}  # 80% and 5 calls
    assert thresholds_check(now=CHECK + timedelta(minutes=1))["notified"] == 0
    assert (
        account_thresholds_check(account=acme, now=CHECK + timedelta(minutes=2)) == 0
    )  # already notified

    send_calls(ingest, 3, prefix="more")
    settled()
    usage_rollup(now=CHECK)
    assert thresholds_check(now=CHECK + timedelta(hours=1))["notified"] == 1  # 100%

    payloads = receiver.of_type("entitlement.threshold")
    assert len(payloads) == 3 and all(r["verified"] for r in receiver.requests)
    by_threshold = {json.dumps(p["data"]["threshold"]): p["data"] for p in payloads}
    assert by_threshold['{"percent": "80"}'] == {
        "customer": "acme",
        "feature": "api_calls",
        "threshold": {"percent": "80"},
        "threshold_usage": "8",
        "usage": "8",
        "limit": "10",
        "granted": "0",
        "balance": "2",
        "overage": "0",
        "hard": True,
        "hasAccess": True,
        "period": {"start": "2026-11-01T00:00:00+00:00", "end": "2026-12-01T00:00:00+00:00"},
    }
    assert by_threshold['{"usage": "5"}']["usage"] == "8"
    assert by_threshold['{"percent": "100"}']["hasAccess"] is False
    assert {r["id"] for r in receiver.requests} == {
        str(e.pk) for e in NotificationEvent.objects.all()
    }
    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"delivered"}

    # the next usage period starts over
    send_calls(ingest, 8, start=DEC + timedelta(days=1), prefix="dec")
    settled()
    usage_rollup(now=DEC + timedelta(days=2))
    assert thresholds_check(now=DEC + timedelta(days=2))["notified"] == 2
    assert [k.split(":", 3)[3] for k in thresholds_notified()] == [
        "2026-11-01T00:00:00+00:00:percent:100",
        "2026-11-01T00:00:00+00:00:percent:80",
        "2026-11-01T00:00:00+00:00:usage:5",
        "2026-12-01T00:00:00+00:00:percent:80",
        "2026-12-01T00:00:00+00:00:usage:5",
    ]


@pytest.mark.django_db(transaction=True)
def test_a_threshold_crossed_by_two_concurrent_rollups_notifies_once(
    acme, endpoint, receiver, ingest
):
    send_calls(ingest, 9)  # crosses 80%, not 100%
    settled()
    start, checks = threading.Barrier(2), threading.Barrier(2)
    results, errors = [], []

    def worker():
        try:
            start.wait(10)
            usage_rollup(now=CHECK)
            checks.wait(10)  # both rollups done: both checks see the crossing at once
            results.append(thresholds_check(now=CHECK))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sum(r["notified"] for r in results) == 1
    assert len(thresholds_notified()) == 1
    assert len(receiver.of_type("entitlement.threshold")) == 1
    assert WebhookDelivery.objects.get().state == "delivered"


@pytest.mark.django_db(transaction=True)
def test_the_billing_run_checks_thresholds_sends_due_deliveries_and_expires_credit(
    acme, endpoint, receiver, ingest
):
    from billing.run import billing_run

    send_calls(ingest, 8)
    settled()
    hooks = [
        "billing.notifications.thresholds.thresholds_check",
        "billing.notifications.delivery.deliveries_send_due",
        "billing.credits.services.credit_expire_due",
    ]
    with override_settings(BILLING_RUN_HOOKS=hooks):
        result = billing_run(now=CHECK)
    assert result.events_rolled_up == 8
    assert result.extra["thresholds_check"] == {"accounts": 1, "notified": 1}
    assert result.extra["credit_expire_due"] == {"grants": 0, "amount": {}}
    json.dumps(result.extra)  # the beat task returns it: JSON only
    assert [p["data"]["threshold"] for p in receiver.of_type("entitlement.threshold")] == [
        {"percent": "80"}
    ]


@pytest.mark.django_db(transaction=True)
def test_concurrent_notify_of_one_dedupe_key_makes_one_event(endpoint, receiver):
    """The guarantee is the unique key, not timing: the second insert waits for the
    first transaction and then inserts nothing."""
    first_inserted, release = threading.Event(), threading.Event()
    outcome = {}

    def first():
        try:
            with transaction.atomic():
                outcome["first"] = notify(
                    type="invoice.issued", payload={"n": 1}, dedupe_key="k", now=NOV
                )
                first_inserted.set()
                release.wait(10)
        finally:
            connection.close()

    def second():
        try:
            first_inserted.wait(10)
            outcome["second"] = notify(
                type="invoice.issued", payload={"n": 2}, dedupe_key="k", now=NOV
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the second is now blocked on the first's uncommitted row
    assert "second" not in outcome
    release.set()
    for t in threads:
        t.join(30)
    assert outcome["first"] is not None and outcome["second"] is None
    assert NotificationEvent.objects.get().payload["data"] == {"n": 1}
    assert [p["data"] for p in receiver.verified] == [{"n": 1}]


def test_spend_thresholds_watch_the_upcoming_invoice(acme, endpoint, ingest):
    NotificationRule.objects.create(
        key="spend", kind="spend_threshold", thresholds=[{"amount": "50.00"}, {"amount": "1000"}]
    )
    assert account_thresholds_check(account=acme, now=CHECK) == 0  # 49.00 of flat fee so far
    send_calls(ingest, 2)  # + 1.00
    assert account_thresholds_check(account=acme, now=CHECK) == 1
    assert account_thresholds_check(account=acme, now=CHECK) == 0
    event = NotificationEvent.objects.get(type="spend.threshold")
    assert event.payload["data"] == {
        "customer": "acme",
        "currency": "USD",
        "threshold": {"amount": "50.00"},
        "amount": "50.00",
        "period": {"start": "2026-11-01T00:00:00+00:00", "end": "2026-12-01T00:00:00+00:00"},
    }
    assert event.deliveries.get().endpoint == endpoint


def test_rule_endpoints_receive_the_rules_crossings(acme, ingest, receiver):
    quiet = WebhookEndpoint.objects.create(
        key="finance", url=receiver.url, secret=receiver.secret, events=[]
    )
    rule = NotificationRule.objects.create(
        key="calls",
        kind="entitlement_threshold",
        thresholds=[{"usage": 3}],
        feature=Feature.objects.get(key="api_calls"),
    )
    rule.endpoints.add(quiet)
    send_calls(ingest, 3)
    assert account_thresholds_check(account=acme, now=CHECK) == 1
    event = NotificationEvent.objects.get()
    assert event.payload["data"]["threshold"] == {"usage": "3"}
    assert [d.endpoint.key for d in event.deliveries.all()] == ["finance"]


def test_thresholds_are_validated():
    assert thresholds_validate(
        kind="entitlement_threshold", thresholds=[{"percent": 80}, {"usage": 1000}]
    ) == [{"percent": 80}, {"usage": 1000}]
    assert thresholds_validate(kind="spend_threshold", thresholds=[{"amount": "500.00"}]) == [
        {"amount": "500.00"}
    ]
    for kind, bad in [
        ("entitlement_threshold", [{"amount": "5"}]),
        ("entitlement_threshold", [{"percent": -1}]),
        ("spend_threshold", [{"amount": "lots"}]),
        ("spend_threshold", []),
        ("entitlement_threshold", [{"percent": 80, "usage": 5}]),
    ]:
        with pytest.raises(Exception, match="thresholds|list"):
            thresholds_validate(kind=kind, thresholds=bad)


# ---------------------------------------------------------------- invoice and settlement events


@pytest.mark.django_db(transaction=True)
def test_an_issued_invoice_notifies_its_subscribers_once(acme, receiver):
    WebhookEndpoint.objects.create(
        key="ops", url=receiver.url, secret=receiver.secret, events=["invoice.issued"]
    )
    WebhookEndpoint.objects.create(
        key="usage", url=receiver.url, secret=receiver.secret, events=["entitlement.threshold"]
    )
    draft, _ = invoice_draft_for(account=acme, period=Period(OCT, NOV), now=NOV)
    with override_settings(
        BILLING_INVOICE_ISSUED_HOOKS=["billing.notifications.services.notify_invoice_issued"]
    ):
        invoice = invoice_issue(invoice=draft, now=NOV + timedelta(days=2))
    [payload] = receiver.verified
    assert payload["type"] == "invoice.issued"
    assert payload["timestamp"] == "2026-11-03T00:00:00+00:00"
    data = payload["data"]
    assert (
        data["number"],
        data["customer"],
        data["total"],
        data["credits_applied"],
        data["amount_due"],
    ) == (invoice.number, "acme", "49.00", "0.00", "49.00")
    assert WebhookDelivery.objects.get().endpoint.key == "ops"


def test_payment_changes_and_failed_settlements_notify(acme, endpoint):
    draft, _ = invoice_draft_for(account=acme, period=Period(OCT, NOV), now=NOV)
    invoice = invoice_issue(invoice=draft, now=NOV + timedelta(days=2))
    invoice_mark(
        invoice=invoice, status="payment_failed", now=NOV + timedelta(days=3), actor="test"
    )
    # invoice_mark notified once; a repeat for the same change is refused
    assert NotificationEvent.objects.filter(type="invoice.payment_failed").count() == 1
    assert (
        notify_invoice_status(invoice=invoice, status="payment_failed", now=NOV + timedelta(days=3))
        is None
    )
    invoice = invoice_mark(
        invoice=invoice, status="paid", now=NOV + timedelta(days=4), actor="test"
    )
    paid = NotificationEvent.objects.get(type="invoice.paid")
    assert (
        paid.payload["data"]["status"] == "paid" and paid.payload["data"]["amount_paid"] == "49.00"
    )
    assert notify_invoice_status(invoice=invoice, status="uncollectible", now=NOV) is None
    settlement = SimpleNamespace(
        pk=7,
        invoice=invoice,
        rail="stripe",
        state="failed",
        attempts=8,
        last_error="card_declined",
        sandbox=False,
    )
    failed = notify_settlement_failed(settlement=settlement, now=NOV + timedelta(days=5))
    assert failed.payload["data"]["settlement"] == {
        "id": 7,
        "rail": "stripe",
        "state": "failed",
        "attempts": 8,
        "error": "card_declined",
        "sandbox": False,
    }
    assert failed.payload["data"]["invoice"]["number"] == invoice.number
    assert notify_settlement_failed(settlement=settlement, now=NOV + timedelta(days=6)) is None
    assert sorted(NotificationEvent.objects.values_list("type", flat=True)) == [
        "invoice.issued",  # from the issue hook in settings
        "invoice.paid",
        "invoice.payment_failed",
        "settlement.failed",
    ]


# ---------------------------------------------------------------- delivery


def one_delivery(endpoint) -> WebhookDelivery:
    notify(
        type="invoice.paid",
        payload={"number": "INV-2026-000001"},
        dedupe_key="paid:1",
        now=timezone.now(),
    )
    return WebhookDelivery.objects.get(endpoint=endpoint)


def test_a_failed_delivery_is_retried_with_backoff_until_delivered(endpoint, receiver):
    receiver.statuses = [500, 503]
    delivery = one_delivery(endpoint)
    t0 = timezone.now()
    delivery = delivery_send(delivery_id=delivery.pk, now=t0)
    assert (delivery.state, delivery.attempts, delivery.last_status_code) == ("failed", 1, 500)
    assert delivery.next_attempt_at == t0 + timedelta(seconds=30)
    assert delivery.response_body == "try again later"
    assert deliveries_send_due(now=t0 + timedelta(seconds=29))["attempted"] == 0
    assert deliveries_send_due(now=t0 + timedelta(seconds=30)) == {
        "attempted": 1,
        "delivered": 0,
        "failed": 1,
        "given_up": 0,
    }
    delivery.refresh_from_db()
    assert delivery.next_attempt_at == t0 + timedelta(seconds=90)  # 30 s, then 60 s
    deliveries_send_due(now=t0 + timedelta(seconds=90))
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.delivered_at) == (
        "delivered",
        3,
        t0 + timedelta(seconds=90),
    )
    assert delivery.next_attempt_at is None
    assert [a.status for a in delivery.attempt_log.all()] == [500, 503, 200]
    assert [r["status"] for r in receiver.requests] == [500, 503, 200]
    assert len({r["id"] for r in receiver.requests}) == 1  # the same webhook-id every time


@override_settings(WEBHOOK_MAX_ATTEMPTS=3)
def test_a_delivery_is_given_up_after_the_last_attempt_and_can_be_redelivered(
    endpoint, receiver, django_capture_on_commit_callbacks
):
    receiver.statuses = [500] * 3
    delivery = one_delivery(endpoint)
    now = timezone.now()
    for _ in range(3):
        delivery = delivery_send(delivery_id=delivery.pk, now=now)
        now = delivery.next_attempt_at or now
    assert (delivery.state, delivery.attempts, delivery.next_attempt_at) == ("given_up", 3, None)
    assert deliveries_send_due(now=now + timedelta(days=30))["attempted"] == 0
    with django_capture_on_commit_callbacks(execute=True):
        redeliver(delivery=delivery, now=timezone.now())  # sent at once through the task
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == ("delivered", 1)
    assert WebhookAttempt.objects.filter(delivery=delivery).count() == 4


def test_a_wrong_signature_is_refused_by_the_receiver(db, receiver):
    stranger = WebhookEndpoint.objects.create(
        key="x", url=receiver.url, secret=new_secret(), events=["invoice.paid"]
    )
    delivery = delivery_send(delivery_id=one_delivery(stranger).pk, now=timezone.now())
    assert (delivery.state, delivery.last_status_code) == ("failed", 400)
    assert receiver.requests[0]["verified"] is False


@override_settings(WEBHOOK_TIMEOUT_SECONDS=0.5)
def test_slow_and_unreachable_receivers_are_bounded_failures(endpoint, receiver):
    receiver.delay = 3
    started = time.monotonic()
    delivery = delivery_send(delivery_id=one_delivery(endpoint).pk, now=timezone.now())
    assert time.monotonic() - started < 2.5
    assert delivery.state == "failed" and delivery.last_status_code is None
    assert "Timeout" in delivery.last_error
    endpoint.url = "http://127.0.0.1:9/nothing-listens"
    endpoint.save()
    delivery = delivery_send(delivery_id=delivery.pk, now=delivery.next_attempt_at)
    assert delivery.attempts == 2 and "ConnectionError" in delivery.last_error


def test_disabled_endpoints_are_not_sent_to(endpoint, receiver):
    delivery = one_delivery(endpoint)
    endpoint.enabled = False
    endpoint.save()
    assert delivery_send(delivery_id=delivery.pk, now=timezone.now()).state == "given_up"
    assert (
        notify(type="invoice.paid", payload={}, dedupe_key="paid:2", now=NOV).deliveries.count()
        == 0
    )
    assert receiver.requests == []


# ---------------------------------------------------------------- admin


@pytest.fixture
def admin_urls():
    try:
        reverse("admin:billing_webhookdelivery_changelist")
    except NoReverseMatch:  # the URLconf was built before this module registered its admins
        import config.urls

        importlib.reload(config.urls)
        clear_url_caches()


def test_the_delivery_log_shows_attempts_and_redelivers(
    admin_client, endpoint, receiver, admin_urls, django_capture_on_commit_callbacks
):
    receiver.statuses = [500]
    delivery = delivery_send(delivery_id=one_delivery(endpoint).pk, now=timezone.now())
    listing = reverse("admin:billing_webhookdelivery_changelist")
    assert b"invoice.paid" in admin_client.get(listing).content
    page = admin_client.get(
        reverse("admin:billing_webhookdelivery_change", args=[delivery.pk])
    ).content.decode()
    assert "webhook-redeliver" in page and "try again later" in page and "INV-2026-000001" in page
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            listing, {"action": "redeliver_selected", "_selected_action": [delivery.pk]}
        )
    assert response.status_code == 302
    delivery.refresh_from_db()
    assert delivery.state == "delivered"
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("admin:billing_webhookdelivery_redeliver", args=[delivery.pk]))
    assert len(receiver.requests) == 3
    event = delivery.event
    assert (
        admin_client.get(
            reverse("admin:billing_notificationevent_change", args=[event.pk])
        ).status_code
        == 200
    )
    assert (
        admin_client.get(reverse("admin:billing_notificationevent_changelist")).status_code == 200
    )


def test_rules_are_edited_with_validated_thresholds(admin_client, endpoint, admin_urls):
    add = reverse("admin:billing_notificationrule_add")
    assert admin_client.get(add).status_code == 200
    bad = admin_client.post(
        add,
        {
            "key": "r",
            "kind": "entitlement_threshold",
            "thresholds": '[{"amount": "5"}]',
            "enabled": "on",
        },
    )
    assert bad.status_code == 200 and not NotificationRule.objects.exists()
    good = admin_client.post(
        add,
        {
            "key": "r",
            "kind": "spend_threshold",
            "thresholds": '[{"amount": 500}]',
            "endpoints": [endpoint.pk],
            "enabled": "on",
        },
    )
    assert good.status_code == 302
    rule = NotificationRule.objects.get()
    assert rule.thresholds == [{"amount": "500"}] and list(rule.endpoints.all()) == [endpoint]
    assert (
        b"amount 500"
        in admin_client.get(reverse("admin:billing_notificationrule_changelist")).content
    )
