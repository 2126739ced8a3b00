"""The admin's accounts-receivable aging page and its CSV: ``receivables_aging`` as of
now, a table per currency, each customer linking to its overdue invoices in the invoice
list. Registered on the admin site by ``backoffice.sites``; visible to every role that
views invoices."""

from __future__ import annotations

import io
from urllib.parse import urlencode

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from billing.invoicing.receivables import BUCKETS, AgingReport, receivables_aging
from billing.models import Invoice
from core.money import UnknownCurrency, currency_validate, money_text
from core.safe_csv import csv_safe_writer

PAGE = "admin/billing/invoice/aging.html"


def _allowed(request) -> None:
    if not request.user.has_perm("billing.view_invoice"):
        raise PermissionDenied


def _currency(request) -> str | None:
    try:
        return currency_validate(request.GET["currency"]) if request.GET.get("currency") else None
    except UnknownCurrency:
        return None  # an unknown code shows every currency rather than an error page


def invoices_url(*, customer_id: int, currency: str, overdue: bool = True) -> str:
    """The invoice list filtered to one account's (overdue) invoices in one currency."""
    query = {"customer": customer_id, "currency": currency}
    if overdue:
        query["overdue"] = "yes"
    return reverse("admin:billing_invoice_changelist") + "?" + urlencode(query)


def aging_view(request):
    _allowed(request)
    currency = _currency(request)
    report = receivables_aging(now=timezone.now(), currency=currency)
    tables = [
        {
            "table": table,
            "rows": [
                {
                    "row": row,
                    "amounts": [row.buckets[key] for key, *_ in BUCKETS],
                    "overdue_url": invoices_url(
                        customer_id=row.customer_id, currency=table.currency
                    ),
                    "open_url": invoices_url(
                        customer_id=row.customer_id, currency=table.currency, overdue=False
                    ),
                }
                for row in table.rows
            ],
            "totals": [table.totals[key] for key, *_ in BUCKETS],
        }
        for table in report.currencies
    ]
    csv_query = urlencode({"currency": currency}) if currency else ""
    context = {
        **admin.site.each_context(request),
        "title": "Accounts receivable aging",
        "opts": Invoice._meta,
        "as_of": report.as_of,
        "labels": [label for _key, label, *_ in BUCKETS],
        "tables": tables,
        "currency": currency,
        "csv_url": reverse("admin:billing_receivables_aging_csv")
        + (f"?{csv_query}" if csv_query else ""),
    }
    return TemplateResponse(request, PAGE, context)


CSV_HEADER = [
    "currency", "customer", "name", *(key for key, *_ in BUCKETS), "total", "overdue",
    "open_invoices", "overdue_invoices",
]  # fmt: skip


def aging_csv(report: AgingReport) -> str:
    """The report as CSV: a row per account and currency, then the currency's totals;
    amounts as plain decimals at the currency's precision; every cell formula-safe."""
    stream = io.StringIO()
    writer = csv_safe_writer(stream)
    writer.writerow(CSV_HEADER)
    for table in report.currencies:
        code = table.currency
        for row in table.rows:
            writer.writerow([
                code, row.customer_key, row.customer_name,
                *(money_text(row.buckets[key], code) for key, *_ in BUCKETS),
                money_text(row.total, code), money_text(row.overdue, code),
                row.invoices, row.overdue_invoices,
            ])  # fmt: skip
        writer.writerow([
            code, "TOTAL", "",
            *(money_text(table.totals[key], code) for key, *_ in BUCKETS),
            money_text(table.total, code), money_text(table.overdue, code),
            sum(r.invoices for r in table.rows), sum(r.overdue_invoices for r in table.rows),
        ])  # fmt: skip
    return stream.getvalue()


def aging_csv_view(request):
    _allowed(request)
    now = timezone.now()
    report = receivables_aging(now=now, currency=_currency(request))
    response = HttpResponse(aging_csv(report), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="receivables-aging-{now:%Y-%m-%d}.csv"'
    return response
