"""Inbound Stripe webhooks: verified on the raw body, stored raw, processed once.

The ``Stripe-Signature`` header is checked against ``STRIPE_WEBHOOK_SECRET`` over the
exact bytes received (a parsed and re-serialised body would not match), with Stripe's
300-second tolerance against replays. A verified event is stored in ``InboundWebhook``
before anything else (unique per rail and event id, so a redelivery is acknowledged and
not processed again), then processed in a transaction that records ``processed_at``; a
processing error is recorded on the row and answered 500 so Stripe delivers it again.

Payment results go through ``settlement_report``, which only ever moves a settlement
forward: events delivered out of order (``invoice.paid`` then an older
``invoice.payment_failed``) leave it paid.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import stripe
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from rails.base import redact
from rails.models import InboundWebhook, Settlement
from rails.outcomes import settlement_report

logger = logging.getLogger(__name__)

RAIL = "stripe"
TOLERANCE_SECONDS = 300
ACTOR = "stripe webhook"
#: Stripe event type → settlement outcome. Enable these in the Stripe dashboard.
OUTCOMES = {
    "invoice.paid": "paid",
    "invoice.payment_failed": "failed",
    "invoice.voided": "voided",
    "invoice.marked_uncollectible": "uncollectible",
    "charge.refunded": "refunded",
}
_KEPT_HEADERS = ("Content-Type", "User-Agent", "Stripe-Signature")
# Stripe's ids and types are short printable ASCII ("evt_1N...", "invoice.paid"); the row
# keeps an id up to InboundWebhook.event_id's 200 characters, a type up to 100.
_EVENT_ID = re.compile(r"[\x21-\x7e]{1,200}")
_EVENT_TYPE = re.compile(r"[\x21-\x7e]{1,100}")


class NotAnEvent(ValueError):
    """A verified body that is not a Stripe event this endpoint can store and apply."""


def stripe_event_parse(payload: bytes) -> dict:
    """The event in a verified body: a JSON object (UTF-8) with a text ``id`` and
    ``type`` and, as every Stripe event has, ``data.object`` an object.

    Raises ``NotAnEvent`` saying what is wrong: the sender (Stripe, or whoever holds the
    secret) is answered 400 and nothing is stored, where a missing id used to be stored
    as the event "None" and a malformed ``data`` failed in processing (a 500 redelivered
    for days)."""
    try:
        event = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise NotAnEvent("Not a Stripe event: the body is not JSON text.") from None
    if not isinstance(event, dict):
        raise NotAnEvent("Not a Stripe event: the body is not a JSON object.")
    event_id, event_type = event.get("id"), event.get("type")
    if event_id in (None, ""):
        raise NotAnEvent("Not a Stripe event: it has no id.")
    if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
        raise NotAnEvent("Not a Stripe event: its id is not an event id (evt_...).")
    if not isinstance(event_type, str) or not _EVENT_TYPE.fullmatch(event_type):
        raise NotAnEvent("Not a Stripe event: it has no type.")
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise NotAnEvent("Not a Stripe event: its data.object is not an object.")
    return event


@dataclass(frozen=True)
class WebhookAnswer:
    status: int
    detail: str


def _settlement_by_invoice_id(value) -> Settlement | None:
    try:
        invoice_id = uuid.UUID(str(value))
    except (TypeError, ValueError):
        return None
    return Settlement.objects.filter(rail=RAIL, invoice_id=invoice_id).first()


def _settlement_by_external(key: str, value) -> Settlement | None:
    if isinstance(value, dict):  # an expanded object
        value = value.get("id")
    if not value:
        return None
    return Settlement.objects.filter(rail=RAIL, **{f"external_ids__{key}": value}).first()


def _settlement_for(event_type: str, obj: dict) -> Settlement | None:
    """Ours by the ``invoice_id`` metadata we set, else by the Stripe ids we recorded."""
    found = _settlement_by_invoice_id((obj.get("metadata") or {}).get("invoice_id"))
    if found:
        return found
    if event_type.startswith("invoice."):
        return _settlement_by_external("stripe_invoice_id", obj.get("id"))
    # A charge: its invoice (API versions before 2025-03-31) or its payment intent.
    return _settlement_by_external(
        "stripe_invoice_id", obj.get("invoice")
    ) or _settlement_by_external("stripe_payment_intent_id", obj.get("payment_intent"))


def _note(event: dict, obj: dict) -> str:
    note = f"Stripe {event['type']} ({event['id']})"
    if event["type"] == "invoice.payment_failed":
        note += f": payment attempt {obj.get('attempt_count') or '?'} failed"
        if obj.get("next_payment_attempt"):
            when = datetime.fromtimestamp(obj["next_payment_attempt"], tz=UTC)
            note += f"; Stripe retries at {when:%Y-%m-%d %H:%M} UTC"
    return note + "."


def stripe_event_apply(*, event: dict, now: datetime) -> str:
    """Apply one verified Stripe event; returns a remark when it was ignored."""
    outcome = OUTCOMES.get(event.get("type", ""))
    if outcome is None:
        return ""
    obj = (event.get("data") or {}).get("object") or {}
    if event["type"] == "charge.refunded" and not obj.get("refunded"):
        return ""  # a partial refund: the invoice stays paid (a credit note says how much)
    settlement = _settlement_for(event["type"], obj)
    if settlement is None:
        return (
            f"Ignored: no Stripe settlement for {obj.get('object', 'object')} {obj.get('id', '?')}."
        )
    external = (
        {"stripe_invoice_id": obj["id"]}
        if event["type"].startswith("invoice.") and obj.get("id")
        else {}
    )
    settlement_report(
        settlement=settlement,
        outcome=outcome,
        now=now,
        actor=ACTOR,
        note=_note(event, obj),
        external_ids=external,
    )
    return ""


def stripe_webhook_receive(
    *, payload: bytes, signature: str, headers: dict, now: datetime
) -> WebhookAnswer:
    """Verify, store and process one delivery. Answers what Stripe should be told:
    400 for a bad signature or a body that is not an event (``stripe_event_parse``;
    nothing stored), 200 once stored and processed (or
    already processed), 500 when processing failed (recorded; Stripe will redeliver)."""
    secret = getattr(settings, "STRIPE_WEBHOOK_SECRET", "") or ""
    if not secret:
        # 503 rather than 400: Stripe keeps redelivering until the secret is configured.
        return WebhookAnswer(
            503, "Stripe webhooks are not configured (STRIPE_WEBHOOK_SECRET is unset)."
        )
    try:
        stripe.WebhookSignature.verify_header(
            payload, signature, secret, tolerance=TOLERANCE_SECONDS
        )
    except stripe.SignatureVerificationError:
        return WebhookAnswer(400, "Invalid Stripe-Signature.")
    except UnicodeDecodeError:  # the library decodes the body before checking anything
        return WebhookAnswer(400, "Not a Stripe event: the body is not UTF-8 text.")
    try:
        event = stripe_event_parse(payload)
    except NotAnEvent as exc:
        return WebhookAnswer(400, str(exc))
    event_id, event_type = event["id"], event["type"]

    row, created = InboundWebhook.objects.get_or_create(
        rail=RAIL,
        event_id=event_id,
        defaults={
            "event_type": event_type,
            "payload": payload.decode("utf-8"),
            "received_at": now,
            "headers": redact({k: v for k, v in headers.items() if k in _KEPT_HEADERS}),
        },
    )
    if not created and row.processed_at is not None:
        return WebhookAnswer(200, "Already processed.")
    try:
        with transaction.atomic():
            row = InboundWebhook.objects.select_for_update().get(pk=row.pk)
            if row.processed_at is not None:  # a concurrent delivery got there first
                return WebhookAnswer(200, "Already processed.")
            remark = stripe_event_apply(event=event, now=now)
            row.processed_at, row.error = now, remark
            row.save(update_fields=["processed_at", "error"])
    except Exception as exc:
        logger.exception("Stripe event %s (%s) failed", event_id, event_type)
        InboundWebhook.objects.filter(pk=row.pk).update(error=f"{type(exc).__name__}: {exc}"[:5000])
        return WebhookAnswer(500, "Processing failed; recorded for redelivery.")
    return WebhookAnswer(200, remark or "Processed.")


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    """``POST /webhooks/stripe``: a plain view, because the signature covers the raw body."""
    answer = stripe_webhook_receive(
        payload=request.body,
        signature=request.headers.get("Stripe-Signature", ""),
        headers=dict(request.headers),
        now=timezone.now(),
    )
    return JsonResponse({"detail": answer.detail}, status=answer.status)
