"""``GET /api/v1/receivables/aging``: the accounts-receivable aging report, the figures
of the admin page, as of now (or ``as_of``), money as decimal strings per currency."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.invoicing.receivables import BUCKETS, AgingReport, receivables_aging
from core.api.times import instant_query_param
from core.money import UnknownCurrency, currency_validate, money_text


def _buckets_serializer(name: str) -> type[serializers.Serializer]:
    fields = {key: serializers.CharField(help_text=label) for key, label, *_ in BUCKETS}
    fields["total"] = serializers.CharField()
    fields["overdue"] = serializers.CharField(help_text="Everything past due.")
    return type(name, (serializers.Serializer,), fields)


AgingAmounts = _buckets_serializer("AgingAmounts")


class AgingCustomer(serializers.Serializer):
    customer = serializers.CharField(help_text="The billing account's key.")
    name = serializers.CharField()
    amounts = AgingAmounts()
    invoices = serializers.IntegerField(help_text="Open invoices.")
    overdue_invoices = serializers.IntegerField()
    invoices_url = serializers.CharField(help_text="Its overdue invoices in the Invoices API.")


class AgingTable(serializers.Serializer):
    currency = serializers.CharField()
    customers = AgingCustomer(many=True)
    totals = AgingAmounts()


class AgingBucket(serializers.Serializer):
    key = serializers.CharField()
    label = serializers.CharField()
    from_days = serializers.IntegerField(allow_null=True)
    to_days = serializers.IntegerField(allow_null=True)


class AgingResponse(serializers.Serializer):
    as_of = serializers.DateTimeField()
    buckets = AgingBucket(many=True)
    currencies = AgingTable(many=True)


def _amounts(buckets: dict, total, overdue, currency: str) -> dict[str, str | None]:
    return {
        **{key: money_text(value, currency) for key, value in buckets.items()},
        "total": money_text(total, currency),
        "overdue": money_text(overdue, currency),
    }


def aging_data(report: AgingReport, *, absolute=lambda path: path) -> dict:
    """The report as the API answers it."""
    return {
        "as_of": report.as_of.isoformat().replace("+00:00", "Z"),
        "buckets": [
            {"key": key, "label": label, "from_days": first, "to_days": last}
            for key, label, first, last in BUCKETS
        ],
        "currencies": [
            {
                "currency": table.currency,
                "customers": [
                    {
                        "customer": row.customer_key,
                        "name": row.customer_name,
                        "amounts": _amounts(row.buckets, row.total, row.overdue, table.currency),
                        "invoices": row.invoices,
                        "overdue_invoices": row.overdue_invoices,
                        "invoices_url": absolute(
                            f"/api/v1/invoices?customer={row.customer_key}"
                            f"&currency={table.currency}&overdue=true"
                        ),
                    }
                    for row in table.rows
                ],
                "totals": _amounts(table.totals, table.total, table.overdue, table.currency),
            }
            for table in report.currencies
        ],
    }


class ReceivablesAging(APIView):
    """Open balances of issued, unpaid invoices by billing account, in buckets of days
    past due (current, 1–30, 31–60, 61–90, over 90), per currency, with totals. Days past
    due are started days since the due instant."""

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "currency", OpenApiTypes.STR, description="Only this currency (ISO 4217)."
            ),
            OpenApiParameter(
                "as_of",
                OpenApiTypes.DATETIME,
                description="The instant the report is as of (default: now).",
            ),
        ],
        responses={200: AgingResponse},
    )
    def get(self, request):
        now = instant_query_param(request.query_params, "as_of", default=timezone.now())
        currency = request.query_params.get("currency") or None
        if currency is not None:
            try:
                currency = currency_validate(currency)
            except UnknownCurrency as exc:
                raise serializers.ValidationError({"currency": [str(exc)]}) from exc
        report = receivables_aging(now=now, currency=currency)
        return Response(aging_data(report, absolute=request.build_absolute_uri))
