"""What the Invoices API's views share: finding an invoice (by id or number) and a line,
the customer filter, who is acting, file renderers, and 409 for state conflicts.

The views: ``invoices`` (invoices and the operator's actions on them), ``credit_notes``,
``provenance`` (the usage behind a line); ``urls`` mounts them under ``/api/v1/``.
"""

from __future__ import annotations

import uuid

from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet
from django.utils import timezone
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.renderers import BaseRenderer, JSONRenderer

from billing.invoicing.api.serializers import InvoiceSerializer
from billing.invoicing.services import InvoiceStateError
from billing.models import CreditNote, FrozenInvoiceError, Invoice, InvoiceLine
from core.api.errors import problem_response


class FileRenderer(BaseRenderer):
    """Lets a client ask for the file (``Accept: application/pdf``); the file itself is a
    plain Django response, and an error is still a JSON problem document."""

    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return JSONRenderer().render(data, "application/json", renderer_context)


class PdfRenderer(FileRenderer):
    media_type = "application/pdf"
    format = "pdf"


class CsvRenderer(FileRenderer):
    media_type = "text/csv"
    format = "csv"


def invoices_with_lines() -> QuerySet[Invoice]:
    """Invoices with what their serializer reads: lines, taxes and credit notes."""
    lines = InvoiceLine.objects.select_related("feature", "customer", "adjusts_invoice").order_by(
        "position", "pk"
    )
    return Invoice.objects.select_related("customer").prefetch_related(
        Prefetch("lines", queryset=lines),
        "taxes",
        Prefetch("credit_notes", queryset=CreditNote.objects.order_by("issued_at", "number")),
    )


def invoice_q(value: str) -> Q:
    """An invoice by id, or by number."""
    try:
        return Q(pk=uuid.UUID(value))
    except ValueError:
        return Q(number=value)


def invoice_get(invoice_id: str, queryset: QuerySet[Invoice] | None = None) -> Invoice:
    """The invoice with that id or number; raises ``NotFound``."""
    invoice = (
        (queryset if queryset is not None else Invoice.objects.select_related("customer"))
        .filter(invoice_q(invoice_id))
        .first()
    )
    if invoice is None:
        raise NotFound(f"No invoice {invoice_id!r}.")
    return invoice


def line_get(invoice_id: str, line_id: int) -> InvoiceLine:
    """A line of the invoice with that id or number; raises ``NotFound``."""
    invoice = invoice_get(invoice_id)
    line = (
        InvoiceLine.objects.select_related("feature__meter", "customer", "invoice")
        .filter(invoice=invoice, pk=line_id)
        .first()
    )
    if line is None:
        raise NotFound(f"Invoice {invoice} has no line {line_id}.")
    return line


def customer_q(key: str) -> Q:
    """Invoices billed to ``key`` or carrying its usage (a subsidiary's lines)."""
    carries = InvoiceLine.objects.filter(invoice=OuterRef("pk"), customer__key=key)
    return Q(customer__key=key) | Q(Exists(carries))


def actor_of(request) -> str:
    """Who acts, for an invoice's history: the API user's name, else "api"."""
    return getattr(request.user, "username", "") or "api"


def user_of(request):
    """The acting user, when the request has one (an API key has none)."""
    user = request.user
    return user if getattr(user, "pk", None) else None


class StateConflicts:
    """``InvoiceStateError`` (a ValidationError) and ``FrozenInvoiceError`` answer 409."""

    problem_statuses = (status.HTTP_409_CONFLICT,)  # documented by core.api.schema

    def handle_exception(self, exc):
        if isinstance(exc, InvoiceStateError | FrozenInvoiceError):
            detail = " ".join(exc.messages) if isinstance(exc, InvoiceStateError) else str(exc)
            return problem_response(status_code=status.HTTP_409_CONFLICT, detail=detail)
        return super().handle_exception(exc)


class InvoiceContext:
    """Gives the invoice serializer ``now`` (for links that expire)."""

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "now": timezone.now()}


def invoice_data(request, invoice: Invoice) -> dict:
    """The invoice as the API answers it, read afresh."""
    invoice = invoices_with_lines().get(pk=invoice.pk)
    return InvoiceSerializer(invoice, context={"request": request, "now": timezone.now()}).data
