"""Issuing drafts: rated a last time, numbered in order, credits applied, frozen, handed
to the issue hooks (settlement, notifications); a billing run issues them a chunk per
transaction."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction

from billing.catalog.rating import amount_due
from billing.documents.tasks import invoice_pdf_render_task, invoice_pdfs_render_task
from billing.invoicing.base import (
    InvoiceStateError,
    _chunk,
    _history,
    _hooks,
    _invoices_update,
    sequence_take,
)
from billing.invoicing.recompute import _Context, _drafts_rate
from billing.models import (
    Invoice,
    InvoiceEvent,
    InvoiceStatus,
)

logger = logging.getLogger("billing.invoicing")


# ---------------------------------------------------------------- issuing


def _hooks_run(setting: str, invoices: list[Invoice], now: datetime) -> None:
    """Each hook of ``setting`` for every invoice: at once where the hook offers a
    ``many(invoices=, now=)`` doing the same for a list, else one by one."""
    for hook in _hooks(setting):
        many = getattr(hook, "many", None)
        if many is not None:
            many(invoices=invoices, now=now)
        else:
            for invoice in invoices:
                hook(invoice=invoice, now=now)


def _drafts_issue(
    drafts: list[Invoice], *, now: datetime, actor: str, context: _Context
) -> list[Invoice]:
    """Issue locked drafts: rate them a last time, number them in order, set their due
    dates, apply credits, freeze them, run the issue hooks. In the caller's transaction."""
    _drafts_rate(drafts, now=now, context=context)
    numbers = sequence_take(
        prefix=settings.BILLING_INVOICE_PREFIX, year=now.year, count=len(drafts)
    )
    for invoice, number in zip(drafts, numbers, strict=True):
        profile = context.profile(invoice.customer_id)
        net_terms = profile.net_terms_days if profile else settings.BILLING_NET_TERMS_DAYS
        invoice.number = number
        invoice.status = InvoiceStatus.ISSUED
        invoice.issued_at = now
        invoice.due_at = now + timedelta(days=net_terms)
    _hooks_run("BILLING_INVOICE_ISSUING_HOOKS", drafts, now)  # e.g. credits, before the freeze
    for invoice in drafts:
        invoice.amount_due = amount_due(
            total=invoice.total, credits_applied=invoice.credits_applied, currency=invoice.currency
        )
        invoice.updated_at = now
    _invoices_update(
        drafts,
        ["number", "status", "issued_at", "due_at", "credits_applied", "amount_due", "updated_at"],
    )
    events = [
        InvoiceEvent(
            invoice=invoice,
            at=now,
            from_status=InvoiceStatus.DRAFT,
            to_status=InvoiceStatus.ISSUED,
            actor=actor,
            note=f"Numbered {invoice.number}, due {invoice.due_at:%Y-%m-%d}.",
        )
        for invoice in drafts
    ]
    InvoiceEvent.objects.bulk_create(events)
    _history(
        drafts,
        first=False,
        reason=lambda i: (
            f"draft → issued by {actor}: Numbered {i.number}, due {i.due_at:%Y-%m-%d}."
        ),
    )
    _hooks_run("BILLING_INVOICE_ISSUED_HOOKS", drafts, now)
    ids = [invoice.pk for invoice in drafts]
    transaction.on_commit(lambda: _enqueue_pdfs(ids))
    return drafts


def invoice_issue(*, invoice: Invoice, now: datetime, actor: str = "billing run") -> Invoice:
    """Issue a draft: rate it a last time, number it, set its due date, freeze it.

    Issue hooks (``BILLING_INVOICE_ISSUED_HOOKS``, e.g. the settlement outbox) run in the
    same transaction. Issuing an invoice that is no longer a draft raises
    ``InvoiceStateError``.
    """
    with transaction.atomic():
        locked = Invoice.objects.select_for_update().select_related("customer").get(pk=invoice.pk)
        if not locked.is_draft:
            raise InvoiceStateError(f"{locked} is already {locked.status}.")
        _drafts_issue([locked], now=now, actor=actor, context=_Context.for_invoices([locked]))
    return locked


# Issued invoices per PDF task: few enough for the workers to share a run's PDFs out,
# enough to spare the broker a message per invoice.
PDFS_PER_TASK = 10


def _enqueue_pdfs(invoice_ids: list) -> None:
    ids = [str(pk) for pk in invoice_ids]
    if len(ids) == 1:
        invoice_pdf_render_task.delay(invoice_id=ids[0])
        return
    with invoice_pdfs_render_task.app.producer_or_acquire() as producer:
        for i in range(0, len(ids), PDFS_PER_TASK):
            invoice_pdfs_render_task.apply_async(
                kwargs={"invoice_ids": ids[i : i + PDFS_PER_TASK]}, producer=producer
            )


def invoices_issue_due(*, now: datetime) -> int:
    """Issue every draft whose grace period has ended by ``now``, a chunk per transaction.

    Drafts another run (or an operator) holds are skipped (``SKIP LOCKED``): that run
    issues them. Numbers follow the order of the drafts' grace periods. A chunk that
    fails is issued again one draft at a time; a draft that cannot be issued is logged
    and stays a draft (the dashboard lists drafts past their grace) for the next run.
    """
    issued, failed = 0, set()
    while True:
        chunk: list[Invoice] = []
        try:
            with transaction.atomic():
                chunk = list(
                    Invoice.objects.select_for_update(skip_locked=True, of=("self",))
                    .select_related("customer")
                    .filter(status=InvoiceStatus.DRAFT, grace_until__lte=now)
                    .exclude(pk__in=failed)
                    .order_by("grace_until", "created_at", "pk")[: _chunk()]
                )
                if not chunk:
                    return issued
                context = _Context.for_invoices(chunk)
                _drafts_issue(chunk, now=now, actor="billing run", context=context)
                issued += len(chunk)
        except Exception:  # noqa: BLE001 - the chunk is redone one draft at a time
            if not chunk:  # finding the drafts failed: nothing to redo
                raise
            logger.warning("issuing a chunk of %d drafts failed; one by one", len(chunk))
            for draft in chunk:
                try:
                    invoice_issue(invoice=draft, now=now)
                    issued += 1
                except InvoiceStateError:  # issued meanwhile by another run or an operator
                    continue
                except Exception:  # noqa: BLE001 - logged; the next run tries again
                    logger.exception("draft %s not issued: left for the next run", draft.pk)
                    failed.add(draft.pk)
