"""Celery tasks that render and store PDFs: thin edges that read the clock and make one
service call; a retry finds what is already rendered."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from billing.documents.pdf import invoice_pdf_store
from billing.models import Invoice


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
