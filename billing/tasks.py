from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from billing.models import CreditNote, Invoice


@shared_task(name="billing.run", acks_late=True)
def billing_run_task() -> dict:
    """The billing clock's beat: roll up, close periods, issue due drafts, render PDFs."""
    from billing.run import billing_run

    return billing_run(now=timezone.now()).as_dict()


@shared_task(
    name="billing.invoice_pdf_render",
    acks_late=True,
    autoretry_for=(OSError,),
    retry_backoff=True,
    max_retries=5,
)
def invoice_pdf_render_task(*, invoice_id: str) -> str:
    """Render and store an issued invoice's PDF (once; a re-run finds it rendered)."""
    return _invoice_pdf_render(invoice_id)


def _invoice_pdf_render(invoice_id: str) -> str:
    from billing.documents.pdf import invoice_pdf_store

    invoice = invoice_pdf_store(invoice=Invoice.objects.get(pk=invoice_id), now=timezone.now())
    return invoice.pdf.name


@shared_task(
    name="billing.invoice_pdfs_render",
    acks_late=True,
    autoretry_for=(OSError,),
    retry_backoff=True,
    max_retries=5,
)
def invoice_pdfs_render_task(*, invoice_ids: list[str]) -> list[str]:
    """``invoice_pdf_render`` for a few invoices in turn (a billing run sends its issued
    invoices in small groups: one message per group, the workers share the groups out).
    A retry renders only those still without a PDF."""
    return [_invoice_pdf_render(invoice_id) for invoice_id in invoice_ids]


@shared_task(
    name="billing.credit_note_pdf_render",
    acks_late=True,
    autoretry_for=(OSError,),
    retry_backoff=True,
    max_retries=5,
)
def credit_note_pdf_render_task(*, credit_note_id: str) -> str:
    from billing.documents.pdf import credit_note_pdf_store

    note = credit_note_pdf_store(
        credit_note=CreditNote.objects.get(pk=credit_note_id), now=timezone.now()
    )
    return note.pdf.name
