"""An invoice's documents and proofs in the admin: its PDF (a draft's rendered now, with
its watermark), the usage buckets behind a usage line, and that line's raw events as CSV
(``billing.invoicing.provenance``).

A mixin of ``InvoiceAdmin`` (``billing.invoicing.admin.invoices``), which owns the
permissions, the URLs and ``_page``.
"""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone

from billing.documents.pdf import invoice_pdf_bytes, invoice_pdf_store
from billing.invoicing.provenance import (
    bucket_value,
    is_provable,
    line_events_csv,
    line_usage,
    line_usage_buckets,
)
from billing.models import Invoice, InvoiceLine


class InvoiceDocuments:
    """The invoice admin's PDF, line usage and line events pages."""

    def pdf_view(self, request, pk):
        self._view(request)
        invoice = get_object_or_404(Invoice, pk=pk)
        if invoice.is_draft:
            response = HttpResponse(
                invoice_pdf_bytes(invoice=invoice), content_type="application/pdf"
            )
            response["Content-Disposition"] = f'inline; filename="draft-{invoice.pk}.pdf"'
            return response
        if not invoice.pdf:
            invoice = invoice_pdf_store(invoice=invoice, now=timezone.now())
        return FileResponse(
            invoice.pdf.open("rb"), content_type="application/pdf", filename=f"{invoice.number}.pdf"
        )

    def _line(self, request, pk, line_id) -> InvoiceLine:
        self._view(request)
        line = get_object_or_404(
            InvoiceLine.objects.select_related("invoice", "customer", "feature__meter"),
            invoice_id=pk,
            pk=line_id,
        )
        if not is_provable(line):
            raise Http404(f"Line {line.pk} has no usage behind it.")
        return line

    def line_usage_view(self, request, pk, line_id):
        line = self._line(request, pk, line_id)
        usage = line_usage(line=line)
        page = Paginator(line_usage_buckets(line=line), 200).get_page(request.GET.get("page"))
        rows = [(b, bucket_value(b, usage.meter.aggregation)) for b in page]
        return self._page(
            request,
            line.invoice,
            title=f"Usage behind “{line.description}” on {line.invoice}",
            template="line_usage.html",
            line=line,
            usage=usage,
            page=page,
            rows=rows,
        )

    def line_events_view(self, request, pk, line_id):
        line = self._line(request, pk, line_id)
        response = StreamingHttpResponse(
            line_events_csv(line=line), content_type="text/csv; charset=utf-8"
        )
        name = f"{line.invoice.number or 'draft'}-line-{line.pk}-events.csv"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response
