"""Notifications: an outbox of events, delivered to webhook endpoints signed per Standard
Webhooks, retried with exponential backoff, with every attempt logged.

``notify`` inserts the event with ``ON CONFLICT DO NOTHING`` on its ``dedupe_key``, so
concurrent callers who noticed the same thing make one event, and one delivery per
endpoint; sending is enqueued when the transaction commits. ``thresholds_check`` finds
the accounts whose usage changed since it last looked (``UsageTouch`` rows above a
stored transaction horizon) and notifies every threshold crossed in the current usage
period, once per threshold per period by construction of the dedupe key.

Sending happens outside any transaction: a delivery is claimed (lock, check, count the
attempt, lease it), posted, then the answer recorded. A worker that dies mid-send leaves
a leased delivery that is sent again after the lease; receivers deduplicate on
``webhook-id`` (the event id, the same for every attempt and endpoint).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

import requests
from celery import current_app
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Greatest
from standardwebhooks import Webhook

from billing.catalog.rating import current_period_rate
from billing.entitlements.services import entitlement_value, entitlements_of
from billing.models import (
    Invoice,
    InvoiceEvent,
    NotificationCursor,
    NotificationEvent,
    NotificationRule,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from billing.notifications.models import DeliveryState, EventType, RuleKind
from core.money import money_text, plain_decimal, quantize
from core.outbound import OutboundRefused, outbound_post, refusal_text
from customers.models import Customer
from customers.selectors import billing_account_ids
from metering.usage import current_xmin, customers_with_usage_changed_since

logger = logging.getLogger(__name__)

# Characters of a response body kept on the delivery: enough for "bad signature" or a
# framework's error title; a receiver's whole page (perhaps someone else's data, if the URL
# points where it should not) is not the product's to keep or show.
RESPONSE_KEEP = 200
SEND_LEASE = timedelta(seconds=120)  # a claimed attempt whose worker died is retried after this
THRESHOLDS_CURSOR = "thresholds"


def _setting(name: str, default):
    return getattr(settings, name, default)


def retry_delay(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed attempt: base × 2^(attempts−1), capped."""
    base = _setting("WEBHOOK_RETRY_BASE_SECONDS", 30)
    cap = _setting("WEBHOOK_RETRY_MAX_SECONDS", 6 * 3600)
    return timedelta(seconds=min(base * 2 ** max(attempts - 1, 0), cap))


# ---------------------------------------------------------------- the outbox


def notify(
    *,
    type: str,
    payload: dict,
    dedupe_key: str,
    now: datetime,
    customer: Customer | None = None,
    endpoints: Iterable[int] = (),
) -> NotificationEvent | None:
    """Record an event (``payload`` is its ``data``) and a delivery to every enabled
    endpoint subscribed to ``type`` and to each of ``endpoints`` (ids) that is enabled.

    Returns the new event, or None when an event with ``dedupe_key`` already exists (or
    is being inserted by a concurrent transaction that then commits). Sending is
    enqueued when the surrounding transaction commits.
    """
    (event,) = notify_many(
        events=[(type, payload, dedupe_key, customer)], now=now, endpoints=endpoints
    )
    return event


def notify_many(
    *,
    events: list[tuple[str, dict, str, Customer | None]],
    now: datetime,
    endpoints: Iterable[int] = (),
) -> list[NotificationEvent | None]:
    """``notify`` for many (type, payload, dedupe key, customer) at once, in a few
    statements; the result, in order, holds None for each event that already existed."""
    rows = [
        NotificationEvent(
            type=type,
            dedupe_key=dedupe_key[:300],
            customer=customer,
            created_at=now,
            payload={"type": type, "timestamp": now.isoformat(), "data": payload},
        )
        for type, payload, dedupe_key, customer in events
    ]
    extra = list(endpoints)
    with transaction.atomic():
        # INSERT ... ON CONFLICT DO NOTHING: a concurrent insert of the same key waits
        # for the other transaction and then inserts nothing.
        NotificationEvent.objects.bulk_create(rows, ignore_conflicts=True)
        kept = set(
            NotificationEvent.objects.filter(pk__in=[r.pk for r in rows]).values_list(
                "pk", flat=True
            )
        )
        new = [r for r in rows if r.pk in kept]
        targets = {
            type: list(
                WebhookEndpoint.objects.filter(enabled=True)
                .filter(Q(events__contains=[type]) | Q(pk__in=extra))
                .order_by("pk")
            )
            for type in sorted({r.type for r in new})
        }
        deliveries = WebhookDelivery.objects.bulk_create(
            WebhookDelivery(event=event, endpoint=endpoint, created_at=now, next_attempt_at=now)
            for event in new
            for endpoint in targets[event.type]
        )
        ids = [d.pk for d in deliveries]
        if ids:
            transaction.on_commit(lambda: _enqueue(ids), robust=True)
    return [r if r.pk in kept else None for r in rows]


# billing.notifications.tasks, which calls this module: sent by name, not imported.
DELIVERY_SEND_TASK = "billing.webhook_delivery_send"


def _enqueue(delivery_ids: list[int]) -> None:
    task = current_app.tasks[DELIVERY_SEND_TASK]
    for delivery_id in delivery_ids:
        task.delay(delivery_id=delivery_id)


# ---------------------------------------------------------------- sending


@dataclass(frozen=True)
class Answer:
    status: int | None
    body: str
    error: str
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def _excerpt(raw: bytes) -> str:
    """The start of a receiver's answer, as text without control characters."""
    text = raw.decode("utf-8", "replace")[:RESPONSE_KEEP]
    return "".join(c if c.isprintable() or c in " \n" else " " for c in text)


def webhook_post(*, url: str, secret: str, message_id: str, body: str) -> Answer:
    """POST ``body`` signed per Standard Webhooks; never raises for network trouble.

    The target is checked by ``core.outbound`` before anything is sent: the URL, then
    every address its host resolves to, and the connection is made to the vetted
    address (``NOTIFICATION_WEBHOOKS_ALLOW_PRIVATE`` allows private receivers); a refused
    target is a failed attempt that names why, and nothing is sent. Redirects are not
    followed: a 3xx is a failure with its status. The ``webhook-timestamp`` is the wall
    clock at sending (the transport edge): receivers compare it with their own clock to
    refuse replays, so it cannot be the billing clock. Every socket wait is bounded by
    ``WEBHOOK_TIMEOUT_SECONDS``.
    """
    timeout = _setting("WEBHOOK_TIMEOUT_SECONDS", 5)
    started = time.monotonic()
    try:
        signed_at = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "user-agent": "usage-billing-webhooks/1.0",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(signed_at.timestamp())),
            "webhook-signature": Webhook(secret).sign(
                msg_id=message_id, timestamp=signed_at, data=body
            ),
        }
    except Exception as exc:  # a malformed secret: nothing can be sent until it is fixed
        return Answer(
            status=None,
            body="",
            error=f"Cannot sign with the endpoint's secret: {exc}",
            duration_ms=0,
        )
    try:
        with outbound_post(
            url,
            data=body.encode(),
            headers=headers,
            timeout=timeout,
            allow_private=bool(_setting("NOTIFICATION_WEBHOOKS_ALLOW_PRIVATE", False)),
            verify=_setting("WEBHOOK_CA_BUNDLE", "") or True,
        ) as response:
            text = _excerpt(response.raw.read(RESPONSE_KEEP * 4, decode_content=True))
            status = response.status_code
    except OutboundRefused as exc:
        return Answer(
            status=None,
            body="",
            error=refusal_text(exc, allow_private_setting="NOTIFICATION_WEBHOOKS_ALLOW_PRIVATE")
            + " Nothing was sent.",
            duration_ms=int((time.monotonic() - started) * 1000),
        )
    except requests.RequestException as exc:
        elapsed = int((time.monotonic() - started) * 1000)
        return Answer(
            status=None,
            body="",
            error=f"{exc.__class__.__name__}: {exc}"[:2000],
            duration_ms=elapsed,
        )
    elapsed = int((time.monotonic() - started) * 1000)
    if 200 <= status < 300:
        error = ""
    elif 300 <= status < 400:
        error = f"HTTP {status}: a redirect, not followed (give the endpoint its final URL)"
    else:
        error = f"HTTP {status}"
    return Answer(status=status, body=text, error=error, duration_ms=elapsed)


def _due(delivery: WebhookDelivery, now: datetime) -> bool:
    if delivery.state == DeliveryState.PENDING and delivery.attempts == 0:
        return True  # a new (or redelivered) delivery goes out at once
    if delivery.state in (DeliveryState.PENDING, DeliveryState.FAILED):
        return delivery.next_attempt_at is None or delivery.next_attempt_at <= now
    return False


def delivery_send(*, delivery_id: int, now: datetime) -> WebhookDelivery | None:
    """Make one attempt of a delivery if it is due; record the answer and what is next:
    delivered on a 2xx; otherwise retried after ``retry_delay`` until
    ``WEBHOOK_MAX_ATTEMPTS`` attempts, then given up.

    Returns the delivery as left, or None when another worker holds it right now.
    """
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("event", "endpoint")
            .filter(pk=delivery_id)
            .first()
        )
        if delivery is None or not _due(delivery, now):
            return delivery
        endpoint, event = delivery.endpoint, delivery.event
        if not endpoint.enabled:
            delivery.state, delivery.next_attempt_at = DeliveryState.GIVEN_UP, None
            delivery.last_error = f"Endpoint {endpoint.key} is disabled."
            delivery.save(update_fields=["state", "next_attempt_at", "last_error", "updated_at"])
            return delivery
        delivery.attempts += 1
        delivery.next_attempt_at = now + SEND_LEASE
        delivery.save(update_fields=["attempts", "next_attempt_at", "updated_at"])
    body = json.dumps(event.payload, separators=(",", ":"))
    answer = webhook_post(
        url=endpoint.url, secret=endpoint.secret, message_id=str(event.pk), body=body
    )
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery_id)
        WebhookAttempt.objects.create(
            delivery=delivery,
            at=now,
            status=answer.status,
            duration_ms=answer.duration_ms,
            error=answer.error,
        )
        delivery.last_status_code, delivery.last_error = answer.status, answer.error
        delivery.response_body = answer.body
        if answer.ok:
            delivery.state, delivery.delivered_at, delivery.next_attempt_at = (
                DeliveryState.DELIVERED,
                now,
                None,
            )
        elif delivery.attempts >= _setting("WEBHOOK_MAX_ATTEMPTS", 8):
            delivery.state, delivery.next_attempt_at = DeliveryState.GIVEN_UP, None
        else:
            delivery.state = DeliveryState.FAILED
            delivery.next_attempt_at = now + retry_delay(delivery.attempts)
        delivery.save()
    if not answer.ok:
        logger.info(
            "Webhook delivery %s to %s failed (attempt %s): %s",
            delivery.pk,
            endpoint.url,
            delivery.attempts,
            answer.error,
        )
    return delivery


def deliveries_send_due(*, now: datetime, limit: int = 200) -> dict:
    """Attempt every delivery that is due by ``now`` (oldest first, at most ``limit``)."""
    due = (
        WebhookDelivery.objects.filter(
            Q(state=DeliveryState.PENDING, attempts=0)
            | Q(state__in=[DeliveryState.PENDING, DeliveryState.FAILED], next_attempt_at__lte=now)
        )
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    counts = {
        "attempted": 0,
        DeliveryState.DELIVERED.value: 0,
        DeliveryState.FAILED.value: 0,
        DeliveryState.GIVEN_UP.value: 0,
    }
    for pk in list(due):
        before = WebhookDelivery.objects.filter(pk=pk).values_list("attempts", flat=True).first()
        delivery = delivery_send(delivery_id=pk, now=now)
        if delivery is None or delivery.attempts == before:
            continue
        counts["attempted"] += 1
        if delivery.state in counts:
            counts[delivery.state] += 1
    return counts


def redeliver(*, delivery: WebhookDelivery, now: datetime) -> WebhookDelivery:
    """Send a delivery again, whatever its state, with a fresh budget of attempts (the
    attempt log keeps the earlier ones). Sending is enqueued on commit."""
    with transaction.atomic():
        locked = WebhookDelivery.objects.select_for_update().get(pk=delivery.pk)
        locked.state, locked.attempts, locked.next_attempt_at = DeliveryState.PENDING, 0, now
        locked.delivered_at = None
        locked.save(
            update_fields=["state", "attempts", "next_attempt_at", "delivered_at", "updated_at"]
        )
        transaction.on_commit(lambda: _enqueue([locked.pk]), robust=True)
    return locked


# ---------------------------------------------------------------- thresholds


def thresholds_validate(*, kind: str, thresholds) -> list[dict]:
    """Check a rule's thresholds and return them normalised; raises ``ValidationError``.

    Entitlement rules take ``{"percent": n}`` (of the allowance) or ``{"usage": n}``;
    spend rules take ``{"amount": "500.00"}``. Every value is positive.
    """
    allowed = ("percent", "usage") if kind == RuleKind.ENTITLEMENT_THRESHOLD else ("amount",)
    example = (
        '[{"percent": 80}, {"usage": 1000}]'
        if allowed[0] == "percent"
        else '[{"amount": "500.00"}]'
    )
    if not isinstance(thresholds, list) or not thresholds:
        raise ValidationError(f"A list of thresholds, e.g. {example}.")
    out = []
    for i, item in enumerate(thresholds):
        if not isinstance(item, dict) or len(item) != 1 or next(iter(item)) not in allowed:
            raise ValidationError(f"thresholds[{i}]: one of {', '.join(allowed)}, e.g. {example}.")
        name, raw = next(iter(item.items()))
        try:
            value = Decimal(str(raw)) if not isinstance(raw, bool | float) else None
        except InvalidOperation:
            value = None
        if value is None or not value.is_finite() or value <= 0:
            raise ValidationError(
                f"thresholds[{i}].{name}: a positive number (money as a string), not {raw!r}."
            )
        out.append({name: str(raw) if name == "amount" else raw})
    return out


def _threshold_level(threshold: dict, allowance: Decimal | None) -> tuple[str, Decimal] | None:
    """(identity, usage level) of an entitlement threshold; None when it cannot apply."""
    if "percent" in threshold:
        if allowance is None or allowance <= 0:
            return None
        percent = Decimal(str(threshold["percent"]))
        return f"percent:{plain_decimal(percent)}", allowance * percent / 100
    usage = Decimal(str(threshold["usage"]))
    return f"usage:{plain_decimal(usage)}", usage


def _entitlement_checks(account: Customer, rules: list[NotificationRule], now: datetime) -> int:
    notified = 0
    for feature, spec in entitlements_of(account=account, at=now):
        if spec is None or spec.type != "metered":
            continue
        wanted: list[tuple[dict, list[int]]] = [({"percent": p}, []) for p in spec.thresholds]
        for rule in rules:
            if rule.feature_id in (None, feature.pk):
                ids = [e.pk for e in rule.endpoints.all()]
                wanted += [(t, ids) for t in rule.thresholds if isinstance(t, dict)]
        if not wanted:
            continue
        value = entitlement_value(account=account, feature=feature, at=now)
        if value is None or value.period is None or value.usage <= 0:
            continue
        allowance = None if value.limit is None else value.limit + value.granted
        crossed: dict[str, tuple[dict, Decimal, set[int]]] = {}
        for threshold, endpoint_ids in wanted:
            try:
                level = _threshold_level(threshold, allowance)
            except (KeyError, InvalidOperation):
                logger.warning("Skipping malformed threshold %r on %s", threshold, feature.key)
                continue
            if level is not None and value.usage >= level[1]:
                crossed.setdefault(level[0], (threshold, level[1], set()))[2].update(endpoint_ids)
        prefix = (
            f"entitlement.threshold:{account.pk}:{feature.pk}:{value.period.start.isoformat()}:"
        )
        done = set(
            NotificationEvent.objects.filter(
                dedupe_key__in=[prefix + k for k in crossed]
            ).values_list("dedupe_key", flat=True)
        )
        for identity, (threshold, level, endpoint_ids) in sorted(crossed.items()):
            if prefix + identity in done:
                continue
            name, raw = next(iter(threshold.items()))
            data = {
                "customer": account.key,
                "feature": feature.key,
                "threshold": {name: plain_decimal(Decimal(str(raw)))},
                "threshold_usage": plain_decimal(level),
                "usage": plain_decimal(value.usage),
                "limit": plain_decimal(value.limit),
                "granted": plain_decimal(value.granted),
                "balance": plain_decimal(value.balance),
                "overage": plain_decimal(value.overage),
                "hard": value.hard,
                "hasAccess": value.has_access,
                "period": {
                    "start": value.period.start.isoformat(),
                    "end": value.period.end.isoformat(),
                },
            }
            event = notify(
                type=EventType.ENTITLEMENT_THRESHOLD,
                payload=data,
                dedupe_key=prefix + identity,
                now=now,
                customer=account,
                endpoints=endpoint_ids,
            )
            notified += event is not None
    return notified


def _spend_checks(account: Customer, rules: list[NotificationRule], now: datetime) -> int:
    current = current_period_rate(account=account, now=now) if rules else None
    if current is None:
        return 0
    spend, period = current.rated.total, current.period
    notified = 0
    for rule in rules:
        ids = [e.pk for e in rule.endpoints.all()]
        for threshold in rule.thresholds:
            amount = quantize(Decimal(str(threshold.get("amount", 0))), account.currency)
            if amount <= 0 or spend < amount:
                continue
            data = {
                "customer": account.key,
                "currency": account.currency,
                "threshold": {"amount": money_text(amount, account.currency)},
                "amount": money_text(spend, account.currency),
                "period": {"start": period.start.isoformat(), "end": period.end.isoformat()},
            }
            event = notify(
                type=EventType.SPEND_THRESHOLD,
                payload=data,
                now=now,
                customer=account,
                endpoints=ids,
                dedupe_key=f"spend.threshold:{account.pk}:{period.start.isoformat()}:{amount}",
            )
            notified += event is not None
    return notified


def account_thresholds_check(
    *, account: Customer, now: datetime, rules: list[NotificationRule] | None = None
) -> int:
    """Notify every entitlement and spend threshold of a billing account crossed in its
    current period; returns the number of new events (each threshold once per period)."""
    if rules is None:
        rules = list(NotificationRule.objects.filter(enabled=True).prefetch_related("endpoints"))
    mine = [r for r in rules if r.customer_id in (None, account.pk)]
    return _entitlement_checks(
        account, [r for r in mine if r.kind == RuleKind.ENTITLEMENT_THRESHOLD], now
    ) + _spend_checks(account, [r for r in mine if r.kind == RuleKind.SPEND_THRESHOLD], now)


def thresholds_check(*, now: datetime) -> dict:
    """Check the thresholds of every billing account whose rolled-up usage changed since
    the last check. Safe to run concurrently and to repeat: the cursor only moves
    forward, and an event's dedupe key makes each crossing notify once.
    """
    cursor, _ = NotificationCursor.objects.get_or_create(name=THRESHOLDS_CURSOR)
    # Every transaction below the horizon has finished, so each touch it wrote is
    # visible to the read below; touches at or above it are read again next time.
    horizon = current_xmin()
    touched = customers_with_usage_changed_since(xid=cursor.xid)
    account_ids = sorted(set(billing_account_ids(customer_ids=touched).values()))
    rules = list(NotificationRule.objects.filter(enabled=True).prefetch_related("endpoints"))
    notified = 0
    for account in Customer.objects.filter(pk__in=account_ids).order_by("pk"):
        notified += account_thresholds_check(account=account, now=now, rules=rules)
    NotificationCursor.objects.filter(pk=cursor.pk).update(
        xid=Greatest(F("xid"), horizon), checked_at=now
    )
    return {"accounts": len(account_ids), "notified": notified}


# ---------------------------------------------------------------- invoice and settlement events


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def invoice_data(invoice: Invoice) -> dict:
    """An invoice as webhook data: amounts are decimal strings at the currency's precision."""

    def money(amount: Decimal) -> str | None:
        return money_text(amount, invoice.currency)

    return {
        "id": str(invoice.pk), "number": invoice.number, "status": invoice.status,
        "customer": invoice.customer.key, "currency": invoice.currency,
        "period_start": _iso(invoice.period_start), "period_end": _iso(invoice.period_end),
        "subtotal": money(invoice.subtotal), "tax_total": money(invoice.tax_total),
        "total": money(invoice.total), "credits_applied": money(invoice.credits_applied),
        "amount_due": money(invoice.amount_due), "amount_paid": money(invoice.amount_paid),
        "issued_at": _iso(invoice.issued_at), "due_at": _iso(invoice.due_at),
    }  # fmt: skip


def notify_invoice_issued(*, invoice: Invoice, now: datetime) -> NotificationEvent | None:
    """``BILLING_INVOICE_ISSUED_HOOKS``: ``invoice.issued``, in the issuing transaction."""
    return notify_invoices_issued(invoices=[invoice], now=now)[0]


def notify_invoices_issued(*, invoices: list[Invoice], now: datetime) -> list:
    """``notify_invoice_issued`` for many invoices at once (a billing run's chunk)."""
    return notify_many(
        events=[
            (
                EventType.INVOICE_ISSUED,
                invoice_data(invoice),
                f"invoice.issued:{invoice.pk}",
                invoice.customer,
            )
            for invoice in invoices
        ],
        now=now,
    )


notify_invoice_issued.many = notify_invoices_issued


def notify_invoice_status(
    *, invoice: Invoice, status: str, now: datetime
) -> NotificationEvent | None:
    """``invoice.paid`` or ``invoice.payment_failed`` for a payment state change (other
    states notify nothing). Call it after the change's ``InvoiceEvent`` is written: each
    change notifies once (an invoice paid, returned, then paid again notifies twice)."""
    types = {"paid": EventType.INVOICE_PAID, "payment_failed": EventType.INVOICE_PAYMENT_FAILED}
    if status not in types:
        return None
    change = (
        InvoiceEvent.objects.filter(invoice_id=invoice.pk, to_status=status)
        .order_by("-at", "-pk")
        .first()
    )
    marker = change.pk if change else now.isoformat()
    data = {**invoice_data(invoice), "status": status}
    return notify(
        type=types[status],
        payload=data,
        now=now,
        dedupe_key=f"invoice.{status}:{invoice.pk}:{marker}",
        customer=invoice.customer,
    )


def notify_settlement_failed(*, settlement, now: datetime) -> NotificationEvent | None:
    """``settlement.failed``, for a settlement that failed for good (rails calls this)."""
    invoice = settlement.invoice
    data = {
        "settlement": {
            "id": settlement.pk,
            "rail": settlement.rail,
            "state": settlement.state,
            "attempts": settlement.attempts,
            "error": (settlement.last_error or "")[:2000],
            "sandbox": bool(getattr(settlement, "sandbox", False)),
        },
        "invoice": invoice_data(invoice),
    }
    return notify(
        type=EventType.SETTLEMENT_FAILED,
        payload=data,
        now=now,
        customer=invoice.customer,
        dedupe_key=f"settlement.failed:{settlement.pk}:{settlement.attempts}",
    )


__all__ = [
    "account_thresholds_check", "deliveries_send_due", "delivery_send", "invoice_data", "notify",
    "notify_invoice_issued", "notify_invoice_status", "notify_settlement_failed", "redeliver",
    "retry_delay", "thresholds_check", "thresholds_validate", "webhook_post"
]  # fmt: skip
