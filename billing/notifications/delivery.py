"""Webhook deliveries: signed per Standard Webhooks, retried with exponential backoff,
with every attempt logged.

Sending happens outside any transaction: a delivery is claimed (lock, check, count the
attempt, lease it), posted, then the answer recorded. A worker that dies mid-send leaves
a leased delivery that is sent again after the lease; receivers deduplicate on
``webhook-id`` (the event id, the same for every attempt and endpoint).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import requests
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from standardwebhooks import Webhook

from billing.models import (
    WebhookAttempt,
    WebhookDelivery,
)
from billing.notifications.models import DeliveryState
from billing.notifications.services import deliveries_enqueue
from core.outbound import OutboundRefused, outbound_post, refusal_text

logger = logging.getLogger(__name__)

# Characters of a response body kept on the delivery: enough for "bad signature" or a
# framework's error title; a receiver's whole page (perhaps someone else's data, if the URL
# points where it should not) is not the product's to keep or show.
RESPONSE_KEEP = 200
SEND_LEASE = timedelta(seconds=120)  # a claimed attempt whose worker died is retried after this


def _setting(name: str, default):
    return getattr(settings, name, default)


def retry_delay(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed attempt: base × 2^(attempts−1), capped."""
    base = _setting("WEBHOOK_RETRY_BASE_SECONDS", 30)
    cap = _setting("WEBHOOK_RETRY_MAX_SECONDS", 6 * 3600)
    return timedelta(seconds=min(base * 2 ** max(attempts - 1, 0), cap))


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
        transaction.on_commit(lambda: deliveries_enqueue([locked.pk]), robust=True)
    return locked
