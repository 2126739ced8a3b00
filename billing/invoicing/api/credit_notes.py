"""The Invoices API's credit notes: the list and one note, its PDF, and an invoice's
notes, which is also where an invoice is credited (in full, some lines or an amount)."""

from __future__ import annotations

import uuid

from django.db.models import Q, QuerySet
from django.http import FileResponse
from django.utils import timezone
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import NotFound
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.documents.pdf import credit_note_pdf_store
from billing.invoicing.api.base import (
    PdfRenderer,
    StateConflicts,
    customer_q,
    invoice_get,
    invoice_q,
    user_of,
)
from billing.invoicing.api.serializers import CreditNoteCreateRequest, CreditNoteSerializer
from billing.invoicing.services import credit_note_create
from billing.models import CREDIT_NOTE_ORDERING, CreditNote, Invoice


def _credit_notes() -> QuerySet[CreditNote]:
    return CreditNote.objects.select_related("invoice__customer").prefetch_related("lines")


class CreditNoteFilter(filters.FilterSet):
    invoice = filters.CharFilter(method="filter_invoice", help_text="An invoice id or number.")
    customer = filters.CharFilter(
        method="filter_customer", help_text="A customer key, with the same meaning as on invoices."
    )

    class Meta:
        model = CreditNote
        fields = ["invoice", "customer"]

    def filter_invoice(self, queryset, name, value):
        return queryset.filter(invoice__in=Invoice.objects.filter(invoice_q(value)))

    def filter_customer(self, queryset, name, value):
        return queryset.filter(invoice__in=Invoice.objects.filter(customer_q(value)))


class CreditNoteList(generics.ListAPIView):
    """Credit notes, newest first; filter by invoice (id or number) or customer key."""

    serializer_class = CreditNoteSerializer
    filterset_class = CreditNoteFilter

    def get_queryset(self):
        return _credit_notes().order_by(*CREDIT_NOTE_ORDERING)


class CreditNoteDetail(generics.RetrieveAPIView):
    serializer_class = CreditNoteSerializer

    def get_object(self):
        value = self.kwargs["credit_note_id"]
        try:
            q = Q(pk=uuid.UUID(value))
        except ValueError:
            q = Q(number=value)
        note = _credit_notes().filter(q).first()
        if note is None:
            raise NotFound(f"No credit note {value!r}.")
        return note


class InvoiceCreditNotes(StateConflicts, generics.ListAPIView):
    """GET: the invoice's credit notes. POST: credit the invoice: in full (no amount, no
    lines), some lines (``lines``: line ids) or an amount, with a reason. 409 for a draft
    or a void invoice; 400 for more than is left to credit."""

    serializer_class = CreditNoteSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the OpenAPI schema's dry run
            return CreditNote.objects.none()
        invoice = invoice_get(self.kwargs["invoice_id"])
        return _credit_notes().filter(invoice=invoice).order_by(*CREDIT_NOTE_ORDERING)

    @extend_schema(request=CreditNoteCreateRequest, responses={201: CreditNoteSerializer})
    def post(self, request, invoice_id: str):
        invoice = invoice_get(invoice_id)
        body = CreditNoteCreateRequest(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        note = credit_note_create(
            invoice=invoice,
            reason=data["reason"],
            amount=data.get("amount"),
            line_ids=data.get("lines"),
            now=timezone.now(),
            user=user_of(request),
        )
        note = _credit_notes().get(pk=note.pk)
        return Response(
            CreditNoteSerializer(note, context=self.get_serializer_context()).data,
            status=status.HTTP_201_CREATED,
        )


class CreditNotePdf(APIView):
    renderer_classes = [JSONRenderer, PdfRenderer]

    @extend_schema(responses={(200, "application/pdf"): OpenApiTypes.BINARY})
    def get(self, request, credit_note_id: str):
        note = CreditNoteDetail(kwargs={"credit_note_id": credit_note_id}).get_object()
        if not note.pdf:
            note = credit_note_pdf_store(credit_note=note, now=timezone.now())
        return FileResponse(
            note.pdf.open("rb"), content_type="application/pdf", filename=f"{note.number}.pdf"
        )
