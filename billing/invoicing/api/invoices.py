"""The Invoices API's invoices: the list and one invoice, its PDF, and the operator's
actions on it (issue, void, add a manual line).

An invoice is addressed by its id or, once issued, by its number. ``customer=KEY``
finds the invoices that bill that customer: the ones whose billing account it is, and,
for a subsidiary billed on its parent, the parent's invoices that carry its usage lines.
State errors (issuing an issued invoice, adding a line to one, voiding a paid one,
crediting a draft) answer ``409`` problem documents; bad input answers ``400`` and
changes nothing.
"""

from __future__ import annotations

from django.http import FileResponse, HttpResponse
from django.utils import timezone
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.documents.pdf import invoice_pdf_bytes, invoice_pdf_store
from billing.invoicing.api.base import (
    InvoiceContext,
    PdfRenderer,
    StateConflicts,
    actor_of,
    customer_q,
    invoice_data,
    invoice_get,
    invoices_with_lines,
    user_of,
)
from billing.invoicing.api.serializers import (
    InvoiceLineAddRequest,
    InvoiceSerializer,
    InvoiceVoidRequest,
)
from billing.invoicing.receivables import invoices_overdue
from billing.invoicing.services import (
    InvoiceStateError,
    invoice_issue,
    invoice_line_add,
    invoice_void,
)
from billing.models import INVOICE_ORDERING, Invoice, InvoiceStatus
from core.api.times import InstantFilter
from customers.models import Customer
from customers.selectors import billed_customer_ids


class _CharInFilter(filters.BaseInFilter, filters.CharFilter):
    pass


class InvoiceFilter(filters.FilterSet):
    customer = filters.CharFilter(
        method="filter_customer",
        help_text="A customer key: the invoices billed to it, and for a subsidiary billed on its "
        "parent, the parent's invoices that carry its usage.",
    )
    status = _CharInFilter(
        field_name="status",
        lookup_expr="in",
        help_text="One status or several, comma-separated: "
        + ", ".join(InvoiceStatus.values)
        + ".",
    )
    currency = filters.CharFilter(lookup_expr="iexact")
    number = filters.CharFilter()
    period_start = InstantFilter(help_text="Periods starting at exactly this instant.")
    period_after = InstantFilter(
        field_name="period_start",
        lookup_expr="gte",
        help_text="Periods starting at or after this instant.",
    )
    period_before = InstantFilter(
        field_name="period_end",
        lookup_expr="lte",
        help_text="Periods ending at or before this instant.",
    )
    issued_after = InstantFilter(field_name="issued_at", lookup_expr="gte")
    issued_before = InstantFilter(field_name="issued_at", lookup_expr="lt")
    overdue = filters.BooleanFilter(
        method="filter_overdue",
        help_text="true: the invoices overdue now (issued, unpaid, a balance left, past their "
        "due instant); false: every other invoice.",
    )

    class Meta:
        model = Invoice
        fields = ["customer", "status", "currency", "number", "period_start"]

    def filter_customer(self, queryset, name, value):
        return queryset.filter(customer_q(value))

    def filter_overdue(self, queryset, name, value):
        overdue = invoices_overdue(now=timezone.now()).values("pk")
        return queryset.filter(pk__in=overdue) if value else queryset.exclude(pk__in=overdue)

    def filter_queryset(self, queryset):
        unknown = sorted(
            set(self.form.cleaned_data.get("status") or []) - set(InvoiceStatus.values)
        )
        if unknown:
            raise ValidationError(
                {
                    "status": [
                        f"Unknown status {', '.join(unknown)}; use one of {', '.join(InvoiceStatus.values)}."
                    ]
                }
            )
        return super().filter_queryset(queryset)


class InvoiceList(InvoiceContext, generics.ListAPIView):
    """Invoices, newest first, each with its lines. Filter by customer key, status
    (comma-separated), currency, number and period."""

    serializer_class = InvoiceSerializer
    filterset_class = InvoiceFilter

    def get_queryset(self):
        return invoices_with_lines().order_by(*INVOICE_ORDERING)


class InvoiceDetail(InvoiceContext, generics.RetrieveAPIView):
    """One invoice by id (or number), with its lines, taxes and credit notes."""

    serializer_class = InvoiceSerializer

    def get_object(self):
        return invoice_get(self.kwargs["invoice_id"], invoices_with_lines())


class InvoicePdf(APIView):
    """The invoice as a PDF. A draft is rendered on the fly under a DRAFT watermark; an
    issued invoice answers its stored PDF (rendered and stored on first request)."""

    renderer_classes = [JSONRenderer, PdfRenderer]

    @extend_schema(responses={(200, "application/pdf"): OpenApiTypes.BINARY})
    def get(self, request, invoice_id: str):
        invoice = invoice_get(invoice_id)
        if invoice.is_draft:
            response = HttpResponse(
                invoice_pdf_bytes(invoice=invoice), content_type="application/pdf"
            )
            response["Content-Disposition"] = f'inline; filename="draft-{invoice.pk}.pdf"'
            response["Cache-Control"] = "no-store"
            return response
        if not invoice.pdf:
            invoice = invoice_pdf_store(invoice=invoice, now=timezone.now())
        try:
            handle = invoice.pdf.open("rb")
        except FileNotFoundError:  # the stored file went missing: render, do not fail
            response = HttpResponse(
                invoice_pdf_bytes(invoice=invoice), content_type="application/pdf"
            )
            response["Content-Disposition"] = f'inline; filename="{invoice.number}.pdf"'
            return response
        return FileResponse(
            handle, content_type="application/pdf", filename=f"{invoice.number}.pdf"
        )


class InvoiceIssue(StateConflicts, APIView):
    """Issue a draft now: rated a last time, numbered, frozen. 409 unless a draft."""

    @extend_schema(
        request=None,
        responses={200: InvoiceSerializer, 409: OpenApiResponse(description="Not a draft.")},
    )
    def post(self, request, invoice_id: str):
        invoice = invoice_get(invoice_id)
        invoice = invoice_issue(invoice=invoice, now=timezone.now(), actor=actor_of(request))
        return Response(invoice_data(request, invoice))


class InvoiceVoid(StateConflicts, APIView):
    """Void an unpaid issued invoice, with a reason. 409 for a draft, paid or void invoice."""

    @extend_schema(request=InvoiceVoidRequest, responses={200: InvoiceSerializer})
    def post(self, request, invoice_id: str):
        invoice = invoice_get(invoice_id)
        body = InvoiceVoidRequest(data=request.data)
        body.is_valid(raise_exception=True)
        invoice = invoice_void(
            invoice=invoice,
            reason=body.validated_data["reason"],
            now=timezone.now(),
            actor=actor_of(request),
        )
        return Response(invoice_data(request, invoice))


class InvoiceLineAdd(StateConflicts, APIView):
    """Add a manual line to a draft (kept when the draft is recomputed); answers the
    invoice with its new totals. 409 unless a draft."""

    @extend_schema(request=InvoiceLineAddRequest, responses={201: InvoiceSerializer})
    def post(self, request, invoice_id: str):
        invoice = invoice_get(invoice_id)
        body = InvoiceLineAddRequest(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        if not invoice.is_draft:
            raise InvoiceStateError(
                f"{invoice} is {invoice.status}; correct it with a credit note instead."
            )
        customer = None
        if data.get("customer"):
            customer = Customer.objects.filter(
                key=data["customer"], pk__in=billed_customer_ids(account=invoice.customer)
            ).first()
            if customer is None:
                raise ValidationError(
                    {
                        "customer": [
                            f"{data['customer']!r} is not billed on {invoice.customer.key}'s invoices."
                        ]
                    }
                )
        invoice_line_add(
            invoice=invoice,
            description=data["description"],
            amount=data["amount"],
            quantity=data.get("quantity"),
            customer=customer,
            now=timezone.now(),
            user=user_of(request),
        )
        return Response(invoice_data(request, invoice), status=status.HTTP_201_CREATED)
