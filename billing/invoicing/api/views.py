"""The Invoices API: invoices and credit notes, their PDFs, the operator's actions on them,
and the usage behind every usage line.

An invoice is addressed by its id or, once issued, by its number. ``customer=KEY``
finds the invoices that bill that customer: the ones whose billing account it is, and,
for a subsidiary billed on its parent, the parent's invoices that carry its usage lines.
State errors (issuing an issued invoice, adding a line to one, voiding a paid one,
crediting a draft) answer ``409`` problem documents; bad input answers ``400`` and
changes nothing.
"""

from __future__ import annotations

import uuid

from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet
from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from django.utils import timezone
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.documents.pdf import credit_note_pdf_store, invoice_pdf_bytes, invoice_pdf_store
from billing.invoicing.api.serializers import (
    BucketSerializer,
    CreditNoteCreateRequest,
    CreditNoteSerializer,
    InvoiceLineAddRequest,
    InvoiceLineSerializer,
    InvoiceSerializer,
    InvoiceVoidRequest,
)
from billing.invoicing.provenance import (
    NotProvable,
    is_provable,
    line_events_csv,
    line_usage,
    line_usage_buckets,
)
from billing.invoicing.services import (
    InvoiceStateError,
    credit_note_create,
    invoice_issue,
    invoice_line_add,
    invoice_void,
)
from billing.models import (
    CREDIT_NOTE_ORDERING,
    INVOICE_ORDERING,
    CreditNote,
    FrozenInvoiceError,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
)
from core.api.errors import problem_response
from core.api.pagination import Pagination
from core.api.times import InstantFilter
from core.money import plain_decimal
from customers.models import Customer
from customers.selectors import billed_customer_ids

# ---------------------------------------------------------------- helpers


class _FileRenderer(BaseRenderer):
    """Lets a client ask for the file (``Accept: application/pdf``); the file itself is a
    plain Django response, and an error is still a JSON problem document."""

    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return JSONRenderer().render(data, "application/json", renderer_context)


class PdfRenderer(_FileRenderer):
    media_type = "application/pdf"
    format = "pdf"


class CsvRenderer(_FileRenderer):
    media_type = "text/csv"
    format = "csv"


def _invoices() -> QuerySet[Invoice]:
    lines = InvoiceLine.objects.select_related("feature", "customer", "adjusts_invoice").order_by(
        "position", "pk"
    )
    return Invoice.objects.select_related("customer").prefetch_related(
        Prefetch("lines", queryset=lines),
        "taxes",
        Prefetch("credit_notes", queryset=CreditNote.objects.order_by("issued_at", "number")),
    )


def _invoice_q(value: str) -> Q:
    """An invoice by id, or by number."""
    try:
        return Q(pk=uuid.UUID(value))
    except ValueError:
        return Q(number=value)


def _invoice_get(invoice_id: str, queryset: QuerySet[Invoice] | None = None) -> Invoice:
    invoice = (
        (queryset if queryset is not None else Invoice.objects.select_related("customer"))
        .filter(_invoice_q(invoice_id))
        .first()
    )
    if invoice is None:
        raise NotFound(f"No invoice {invoice_id!r}.")
    return invoice


def _line_get(invoice_id: str, line_id: int) -> InvoiceLine:
    invoice = _invoice_get(invoice_id)
    line = (
        InvoiceLine.objects.select_related("feature__meter", "customer", "invoice")
        .filter(invoice=invoice, pk=line_id)
        .first()
    )
    if line is None:
        raise NotFound(f"Invoice {invoice} has no line {line_id}.")
    return line


def _customer_q(key: str) -> Q:
    """Invoices billed to ``key`` or carrying its usage (a subsidiary's lines)."""
    carries = InvoiceLine.objects.filter(invoice=OuterRef("pk"), customer__key=key)
    return Q(customer__key=key) | Q(Exists(carries))


def _actor(request) -> str:
    return getattr(request.user, "username", "") or "api"


def _user(request):
    user = request.user
    return user if getattr(user, "pk", None) else None


class _StateConflicts:
    """``InvoiceStateError`` (a ValidationError) and ``FrozenInvoiceError`` answer 409."""

    problem_statuses = (status.HTTP_409_CONFLICT,)  # documented by core.api.schema

    def handle_exception(self, exc):
        if isinstance(exc, InvoiceStateError | FrozenInvoiceError):
            detail = " ".join(exc.messages) if isinstance(exc, InvoiceStateError) else str(exc)
            return problem_response(status_code=status.HTTP_409_CONFLICT, detail=detail)
        return super().handle_exception(exc)


class _InvoiceContext:
    def get_serializer_context(self):
        return {**super().get_serializer_context(), "now": timezone.now()}


def _invoice_data(request, invoice: Invoice) -> dict:
    invoice = _invoices().get(pk=invoice.pk)
    return InvoiceSerializer(invoice, context={"request": request, "now": timezone.now()}).data


# ---------------------------------------------------------------- invoices


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

    class Meta:
        model = Invoice
        fields = ["customer", "status", "currency", "number", "period_start"]

    def filter_customer(self, queryset, name, value):
        return queryset.filter(_customer_q(value))

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


class InvoiceList(_InvoiceContext, generics.ListAPIView):
    """Invoices, newest first, each with its lines. Filter by customer key, status
    (comma-separated), currency, number and period."""

    serializer_class = InvoiceSerializer
    filterset_class = InvoiceFilter

    def get_queryset(self):
        return _invoices().order_by(*INVOICE_ORDERING)


class InvoiceDetail(_InvoiceContext, generics.RetrieveAPIView):
    """One invoice by id (or number), with its lines, taxes and credit notes."""

    serializer_class = InvoiceSerializer

    def get_object(self):
        return _invoice_get(self.kwargs["invoice_id"], _invoices())


class InvoicePdf(APIView):
    """The invoice as a PDF. A draft is rendered on the fly under a DRAFT watermark; an
    issued invoice answers its stored PDF (rendered and stored on first request)."""

    renderer_classes = [JSONRenderer, PdfRenderer]

    @extend_schema(responses={(200, "application/pdf"): OpenApiTypes.BINARY})
    def get(self, request, invoice_id: str):
        invoice = _invoice_get(invoice_id)
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


class InvoiceIssue(_StateConflicts, APIView):
    """Issue a draft now: rated a last time, numbered, frozen. 409 unless a draft."""

    @extend_schema(
        request=None,
        responses={200: InvoiceSerializer, 409: OpenApiResponse(description="Not a draft.")},
    )
    def post(self, request, invoice_id: str):
        invoice = _invoice_get(invoice_id)
        invoice = invoice_issue(invoice=invoice, now=timezone.now(), actor=_actor(request))
        return Response(_invoice_data(request, invoice))


class InvoiceVoid(_StateConflicts, APIView):
    """Void an unpaid issued invoice, with a reason. 409 for a draft, paid or void invoice."""

    @extend_schema(request=InvoiceVoidRequest, responses={200: InvoiceSerializer})
    def post(self, request, invoice_id: str):
        invoice = _invoice_get(invoice_id)
        body = InvoiceVoidRequest(data=request.data)
        body.is_valid(raise_exception=True)
        invoice = invoice_void(
            invoice=invoice,
            reason=body.validated_data["reason"],
            now=timezone.now(),
            actor=_actor(request),
        )
        return Response(_invoice_data(request, invoice))


class InvoiceLineAdd(_StateConflicts, APIView):
    """Add a manual line to a draft (kept when the draft is recomputed); answers the
    invoice with its new totals. 409 unless a draft."""

    @extend_schema(request=InvoiceLineAddRequest, responses={201: InvoiceSerializer})
    def post(self, request, invoice_id: str):
        invoice = _invoice_get(invoice_id)
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
            user=_user(request),
        )
        return Response(_invoice_data(request, invoice), status=status.HTTP_201_CREATED)


# ---------------------------------------------------------------- credit notes


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
        return queryset.filter(invoice__in=Invoice.objects.filter(_invoice_q(value)))

    def filter_customer(self, queryset, name, value):
        return queryset.filter(invoice__in=Invoice.objects.filter(_customer_q(value)))


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


class InvoiceCreditNotes(_StateConflicts, generics.ListAPIView):
    """GET: the invoice's credit notes. POST: credit the invoice: in full (no amount, no
    lines), some lines (``lines``: line ids) or an amount, with a reason. 409 for a draft
    or a void invoice; 400 for more than is left to credit."""

    serializer_class = CreditNoteSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the OpenAPI schema's dry run
            return CreditNote.objects.none()
        invoice = _invoice_get(self.kwargs["invoice_id"])
        return _credit_notes().filter(invoice=invoice).order_by(*CREDIT_NOTE_ORDERING)

    @extend_schema(request=CreditNoteCreateRequest, responses={201: CreditNoteSerializer})
    def post(self, request, invoice_id: str):
        invoice = _invoice_get(invoice_id)
        body = CreditNoteCreateRequest(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        note = credit_note_create(
            invoice=invoice,
            reason=data["reason"],
            amount=data.get("amount"),
            line_ids=data.get("lines"),
            now=timezone.now(),
            user=_user(request),
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


# ---------------------------------------------------------------- provenance


class InvoiceLineUsage(APIView):
    """The usage buckets behind a usage line (paginated), and totals that add up to its
    quantity: the buckets of the whole hours inside the line's period plus the raw events
    of the edge hours and those not rolled up yet."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, invoice_id: str, line_id: int):
        line = _line_get(invoice_id, line_id)
        try:
            usage = line_usage(line=line)
        except NotProvable as exc:
            raise NotFound(str(exc)) from exc
        paginator = Pagination()
        page = paginator.paginate_queryset(line_usage_buckets(line=line), request, view=self)
        bucket, raw = usage.bucket_totals, usage.raw_totals
        path = request.path.rsplit("/", 1)[0]
        return Response(
            {
                "line": InvoiceLineSerializer(line, context={"request": request}).data,
                "meter": usage.meter.key,
                "aggregation": usage.meter.aggregation,
                "feature": line.feature.key,
                "filters": line.feature.filters or {},
                "customer": line.customer.key,
                "period_start": usage.start,
                "period_end": usage.end,
                "buckets_from": usage.bucket_start,
                "buckets_to": usage.bucket_end,
                "totals": {
                    "buckets": usage.buckets,
                    "bucket_event_count": bucket.event_count,
                    "bucket_value_sum": plain_decimal(bucket.value_sum),
                    "raw_event_count": raw.event_count,
                    "raw_value_sum": plain_decimal(raw.value_sum),
                    "event_count": bucket.event_count + raw.event_count,
                    "value_sum": plain_decimal(bucket.value_sum + raw.value_sum),
                    "quantity": plain_decimal(usage.quantity),
                },
                "line_quantity": plain_decimal(usage.line_quantity),
                "agrees": usage.agrees,
                "note": usage.note,
                "events_csv_url": request.build_absolute_uri(f"{path}/events.csv"),
                "count": paginator.page.paginator.count,
                "next": paginator.get_next_link(),
                "previous": paginator.get_previous_link(),
                "results": BucketSerializer(page, many=True).data,
            }
        )


class InvoiceLineEventsCsv(APIView):
    """The raw events behind a usage line, as CSV, streamed from a server-side cursor."""

    renderer_classes = [JSONRenderer, CsvRenderer]

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    def get(self, request, invoice_id: str, line_id: int):
        line = _line_get(invoice_id, line_id)
        if not is_provable(line):
            raise NotFound(
                f"Line {line.pk} ({line.get_kind_display().lower()}) has no usage behind it."
            )
        response = StreamingHttpResponse(
            line_events_csv(line=line), content_type="text/csv; charset=utf-8"
        )
        name = f"{line.invoice.number or 'draft-' + str(line.invoice_id)[:8]}-line-{line.pk}-events.csv"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response
