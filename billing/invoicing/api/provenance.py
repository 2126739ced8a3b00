"""The Invoices API's proofs: the usage buckets behind a usage line, with totals that
add up to its quantity, and the line's raw events as CSV (``billing.invoicing.provenance``)."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.invoicing.api.base import CsvRenderer, line_get
from billing.invoicing.api.serializers import BucketSerializer, InvoiceLineSerializer
from billing.invoicing.provenance import (
    NotProvable,
    is_provable,
    line_events_csv,
    line_usage,
    line_usage_buckets,
)
from core.api.pagination import Pagination
from core.money import plain_decimal


class InvoiceLineUsage(APIView):
    """The usage buckets behind a usage line (paginated), and totals that add up to its
    quantity: the buckets of the whole hours inside the line's period plus the raw events
    of the edge hours and those not rolled up yet."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, invoice_id: str, line_id: int):
        line = line_get(invoice_id, line_id)
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
        line = line_get(invoice_id, line_id)
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
