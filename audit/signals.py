"""History rows for the writes that bypass ``save()``, so the trail has no gaps.

- Issuing an invoice is an ``UPDATE`` (billing.invoicing), followed in the same
  transaction by an ``InvoiceEvent``: on that event, the invoice's state is recorded when
  its last history row does not already show it, with the event's actor and note.
- A plan version's rate cards are bulk-created (billing.catalog.services): when the version is
  saved, its rate cards are compared with their history once the transaction commits,
  and every card added or changed gets its row (deleted ones get theirs from the delete).
"""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.utils import timezone

from billing.models import Invoice, InvoiceEvent, PlanVersion, RateCard
from core.current_request import request_api_key_name, request_user


def _values(obj, model) -> dict:
    return {f.attname: getattr(obj, f.attname) for f in model.tracked_fields}


@receiver(post_save, sender=InvoiceEvent, dispatch_uid="audit_invoice_event")
def invoice_state_recorded(sender, instance: InvoiceEvent, created: bool, raw=False, **kwargs):
    if not created or raw:
        return
    history = Invoice.history.model
    last = (
        history.objects.filter(id=instance.invoice_id)
        .order_by("-history_date", "-history_id")
        .first()
    )
    if last is not None and last.status == instance.to_status:
        return  # the save that moved it wrote the row already
    invoice = Invoice.objects.filter(pk=instance.invoice_id).first()
    if invoice is None:
        return
    note = f": {instance.note}" if instance.note else ""
    actor = f" by {instance.actor}" if instance.actor else ""
    history.objects.create(
        **_values(invoice, history),
        history_date=timezone.now(),
        history_type="~" if last is not None else "+",
        history_user=request_user(),
        history_change_reason=(
            f"{instance.from_status or 'new'} → {instance.to_status}{actor}{note}"
        )[:100],
    )


def rate_cards_snapshot(*, plan_version_id: int, user=None, reason: str = "") -> int:
    """Write a history row for each rate card of the version that its history does not
    show as it is now (added, or changed); returns how many were written."""
    history = RateCard.history.model
    latest: dict[int, object] = {}
    for row in history.objects.filter(plan_version_id=plan_version_id).order_by(
        "id", "-history_date", "-history_id"
    ):
        latest.setdefault(row.id, row)
    rows = []
    now = timezone.now()
    for card in RateCard.objects.filter(plan_version_id=plan_version_id):
        values = _values(card, history)
        last = latest.get(card.pk)
        if last is not None and last.history_type != "-" and _values(last, history) == values:
            continue
        rows.append(
            history(
                **values,
                history_date=now,
                history_type="+" if last is None else "~",
                history_user=user,
                history_change_reason=reason,
            )
        )
    history.objects.bulk_create(rows)
    return len(rows)


@receiver(post_save, sender=PlanVersion, dispatch_uid="audit_plan_version_prices")
def plan_version_prices_recorded(sender, instance: PlanVersion, raw=False, **kwargs):
    if raw:
        return
    user, reason, pk = request_user(), request_api_key_name(), instance.pk
    transaction.on_commit(lambda: rate_cards_snapshot(plan_version_id=pk, user=user, reason=reason))
