"""What people read: one rendering of a billing period on the admin, the PDF, the hosted
page and the portal, tier breakdowns never below a cent, counts with separators; and
what machines read: the API's decimals exact and without padding."""

from __future__ import annotations

import re
import shutil
import subprocess
import zoneinfo
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib import admin
from django.template import Context, Template
from django.urls import include, path, reverse
from django.utils import timezone

import billing.invoicing.admin  # noqa: F401  (registers the invoice admin)
from billing.catalog.prices import price_parse
from billing.catalog.pricing.usage import usage_price
from billing.catalog.rating import _breakdown  # what rating stores as a line's tier breakdown
from billing.display import format_period, period_text
from billing.documents.links import invoice_hosted_url
from billing.documents.pdf import invoice_pdf_bytes
from billing.invoicing.services import invoice_issue
from billing.models import Invoice, InvoiceLine, LineKind
from config.urls import urlpatterns as project_urlpatterns
from tests.billing.test_customer_access import sign_in
from tests.factories import CustomerFactory

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("billing.documents.portal_urls")),
    *project_urlpatterns,
]
pytestmark = pytest.mark.urls(__name__)

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
# A monthly period anchored on Oct 15, midnight in New York: [Oct 15, Nov 15) there,
# which is 04:00 UTC (EDT) to 05:00 UTC (EST) across the end of daylight saving time.
OCT_15 = datetime(2026, 10, 15, tzinfo=NEW_YORK)
NOV_15 = datetime(2026, 11, 15, tzinfo=NEW_YORK)
ISSUED = datetime(2026, 11, 16, 14, 0, tzinfo=UTC)
PERIOD = "Oct 15 – Nov 14, 2026"

# Per-token prices, as an LLM provider charges them: the third tier's 3 units cost
# 0.000012, an amount no customer can be asked for.
TOKEN_PRICE = {
    "model": "graduated",
    "tiers": [
        {"up_to": 1000000, "unit_price": "0.00001234"},
        {"up_to": 1234564, "unit_price": "0.00000411"},
        {"up_to": None, "unit_price": "0.000004"},
    ],
}
TOKENS = Decimal("1234567.000000000000")  # a quantity as the buckets hold it (scale 12)


@pytest.fixture(autouse=True)
def _isolated(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.BILLING_INVOICE_ISSUED_HOOKS = []  # settlement is not what these tests are about
    settings.BILLING_CREDIT_NOTE_HOOKS = []
    from django.core.cache import cache

    cache.clear()


def hosted_url(invoice: Invoice) -> str:
    """The signed link, made now: links expire, and tests hold on any date."""
    return invoice_hosted_url(invoice=invoice, now=timezone.now())


def readable(text: str) -> str:
    """Dates keep their parts together with no-break spaces; read them as spaces."""
    return text.replace("\u00a0", " ")


def pdf_text(pdf: bytes, tmp_path) -> str:
    if not shutil.which("pdftotext"):
        pytest.skip("pdftotext (poppler-utils) is not installed")
    path = tmp_path / "doc.pdf"
    path.write_bytes(pdf)
    return readable(
        subprocess.run(
            ["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True
        ).stdout
    )


def token_invoice(**customer) -> Invoice:
    """An issued invoice of a New York customer: a platform fee and 1,234,567 output
    tokens on graduated per-token prices, its breakdown exactly as rating stores it."""
    account = CustomerFactory(
        key="hooli",
        name="Hooli",
        email="ap@hooli.example",
        timezone="America/New_York",
        **customer,
    )
    draft = Invoice.objects.create(
        customer=account, currency="USD", period_start=OCT_15, period_end=NOV_15
    )
    charge = usage_price(price=price_parse(TOKEN_PRICE), quantity=TOKENS, currency="USD")
    common = dict(invoice=draft, customer=account, manual=True, period_start=OCT_15)
    InvoiceLine.objects.create(
        **common,
        period_end=NOV_15,
        position=0,
        kind=LineKind.FLAT_FEE,
        description="Platform fee",
        quantity=Decimal(1),
        unit_price=Decimal("49.0000000000000000"),
        amount=Decimal("49.00"),
        unrounded_amount=Decimal("49"),
    )
    InvoiceLine.objects.create(
        **common,
        period_end=NOV_15,
        position=1,
        kind=LineKind.USAGE,
        description="Output tokens",
        quantity=TOKENS,
        group_quantity=TOKENS,
        group_amount=charge.amount,
        amount=charge.amount,
        unrounded_amount=charge.unrounded_amount,
        tier_breakdown=list(_breakdown(charge)),
    )
    return invoice_issue(invoice=draft, now=ISSUED)


# ---------------------------------------------------------------- periods, pure


@pytest.mark.parametrize(
    ("start", "end", "zone", "text"),
    [
        (OCT_15, NOV_15, NEW_YORK, PERIOD),
        (  # the same instants read in UTC start at 04:00 on Oct 15 and end at 05:00 Nov 15
            OCT_15,
            NOV_15,
            UTC,
            "Oct 15 – Nov 15, 2026",
        ),
        (
            datetime(2026, 12, 15, tzinfo=NEW_YORK),
            datetime(2027, 1, 15, tzinfo=NEW_YORK),
            NEW_YORK,
            "Dec 15, 2026 – Jan 14, 2027",
        ),
        (
            datetime(2026, 10, 15, tzinfo=NEW_YORK),
            datetime(2026, 10, 16, tzinfo=NEW_YORK),
            NEW_YORK,
            "Oct 15, 2026",
        ),
        (None, NOV_15, NEW_YORK, ""),
    ],
)
def test_a_half_open_period_reads_as_the_days_it_covers(start, end, zone, text):
    assert readable(format_period(start, end, zone)) == text


@pytest.mark.django_db
def test_a_subsidiarys_line_is_read_in_its_billing_accounts_time_zone():
    account = CustomerFactory(timezone="America/New_York")
    tokyo = CustomerFactory(timezone="Asia/Tokyo", parent=account)
    invoice = Invoice(customer=account, currency="USD", period_start=OCT_15, period_end=NOV_15)
    line = InvoiceLine(invoice=invoice, customer=tokyo, period_start=OCT_15, period_end=NOV_15)
    assert readable(period_text(invoice)) == readable(period_text(line)) == PERIOD
    rendered = Template("{% load billing_format %}{{ line|period }}").render(
        Context({"line": line})
    )
    assert readable(rendered) == PERIOD


# ---------------------------------------------------------------- periods on every surface


@pytest.mark.django_db
def test_the_admin_the_pdf_the_hosted_page_and_the_portal_show_the_same_period(
    admin_client, client, tmp_path
):
    invoice = token_invoice()

    changelist = readable(
        admin_client.get(reverse("admin:billing_invoice_changelist")).content.decode()
    )
    change = readable(
        admin_client.get(
            reverse("admin:billing_invoice_change", args=[invoice.pk])
        ).content.decode()
    )
    confirm = readable(
        admin_client.get(reverse("admin:billing_invoice_void", args=[invoice.pk])).content.decode()
    )
    pdf = pdf_text(invoice_pdf_bytes(invoice=invoice), tmp_path)
    hosted = readable(client.get(hosted_url(invoice)).content.decode())
    sign_in(client, "ap@hooli.example")
    portal = readable(client.get("/portal/").content.decode())

    for surface in (changelist, change, confirm, pdf, hosted, portal):
        assert PERIOD in surface
        assert "2026-10-15 – 2026-11-15" not in surface  # the admin's old, UTC reading
    # the admin keeps the exact instants at hand, as a tooltip
    assert 'title="[2026-10-15 04:00, 2026-11-15 05:00) UTC"' in change


@pytest.mark.django_db
def test_the_admin_writes_its_dates_one_way(admin_client):
    invoice = token_invoice()
    listing = admin_client.get(reverse("admin:billing_invoice_changelist")).content.decode()
    change = admin_client.get(
        reverse("admin:billing_invoice_change", args=[invoice.pk])
    ).content.decode()
    for page in (listing, change):
        assert "2026-11-16 14:00" in page  # issued, as the admin's own pages write it
        assert "Nov. 16, 2026" not in page and "p.m." not in page


# ---------------------------------------------------------------- amounts and counts


def tier_rows(html: str) -> list[list[str]]:
    """The cells of the tier rows of the hosted page (label, quantity, price, amount)."""
    rows = re.findall(r'<tr class="tier[^"]*">(.*?)</tr>', html, re.S)
    return [
        [
            re.sub(r"<[^>]+>", "", cell).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        for row in rows
    ]


@pytest.mark.django_db
def test_customers_see_tier_amounts_rounded_to_the_cent_and_prices_unpadded(client, tmp_path):
    invoice = token_invoice()
    html = readable(client.get(hosted_url(invoice)).content.decode())

    rows = tier_rows(html)
    assert [(label, quantity, price, amount) for label, quantity, price, amount in rows] == [
        ("Tier 1: 1 – 1,000,000", "1,000,000", "$0.00001234", "$12.34"),
        ("Tier 2: 1,000,001 – 1,234,564", "234,564", "$0.00000411", "$0.96"),
        ("Tier 3: 1,234,565 – 1,234,567", "3", "$0.000004", "$0.00"),
    ]
    for amount in (row[3] for row in rows):
        assert re.fullmatch(r"\$[\d,]+\.\d\d", amount)
    assert "1,234,567" in html and "$13.30" in html and "$49.00" in html
    assert not re.search(r"0\.000012(?!\d)|0\.96405804", html)  # the exact amounts

    pdf = pdf_text(invoice_pdf_bytes(invoice=invoice), tmp_path)
    assert "$12.34" in pdf and "$0.96" in pdf and "$0.000004" in pdf and "1,234,567" in pdf
    assert not re.search(r"0\.000012(?!\d)|0\.96405804", pdf)
    assert "00000000" not in pdf  # no padded decimals anywhere


@pytest.mark.django_db
def test_the_admin_writes_counts_with_thousands_separators(admin_client):
    invoice = token_invoice()
    change = admin_client.get(reverse("admin:billing_invoice_change", args=[invoice.pk]))
    html = change.content.decode()
    assert ">1,234,567<" in html and "13.30 USD" in html
    assert "1234567" not in html.replace(str(invoice.pk), "")


# ---------------------------------------------------------------- the API


MONEY_KEYS = {
    "subtotal", "tax_total", "total", "credits_applied", "amount_due", "amount_paid", "amount",
    "group_amount", "base",
}  # fmt: skip


def decimal_strings(data, path=()):
    """Every (path of keys, string) of ``data`` that is a decimal written with a point."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from decimal_strings(value, (*path, key))
    elif isinstance(data, list):
        for value in data:
            yield from decimal_strings(value, path)
    elif isinstance(data, str) and re.fullmatch(r"-?\d+\.\d+", data):
        yield path, data


@pytest.mark.django_db
def test_the_api_writes_exact_decimals_without_padding(api):
    invoice = token_invoice()
    body = api.get(f"/api/v1/invoices/{invoice.pk}").json()

    lines = {line["description"]: line for line in body["lines"]}
    tokens, fee = lines["Output tokens"], lines["Platform fee"]
    assert (tokens["quantity"], tokens["amount"], tokens["group_quantity"]) == (
        "1234567",
        "13.30",
        "1234567",
    )
    assert (fee["quantity"], fee["unit_price"], fee["amount"]) == ("1", "49", "49.00")
    assert [
        (t["from"], t["to"], t["quantity"], t["unit_price"], t["amount"])
        for t in tokens["tier_breakdown"]
    ] == [
        ("0", "1000000", "1000000", "0.00001234", "12.34"),
        ("1000000", "1234564", "234564", "0.00000411", "0.96405804"),
        ("1234564", "1234567", "3", "0.000004", "0.000012"),  # exact: the API's to show
    ]
    assert (body["subtotal"], body["total"], body["amount_due"]) == ("62.30", "62.30", "62.30")
    for keys, text in decimal_strings(body):
        if keys[-1] in MONEY_KEYS and "tier_breakdown" not in keys:  # amounts in currency
            assert len(text.partition(".")[2]) == 2, (keys, text)
        else:  # prices, quantities and a tier's exact amount
            assert not text.endswith("0"), (keys, text)


@pytest.mark.django_db
def test_grants_and_overrides_answer_their_units_without_padding(api):
    from metering.services import feature_create, meter_create

    CustomerFactory(key="acme")
    meter = meter_create(key="api_requests", event_type="request", aggregation="COUNT")
    feature_create(key="api_calls", name="API calls", meter=meter)

    grant = api.post(
        "/api/v1/customers/acme/grants",
        {"feature": "api_calls", "amount": "500", "effective_at": "2026-10-01T00:00:00Z"},
        format="json",
    )
    assert grant.status_code == 201, grant.content
    assert grant.json()["amount"] == "500"
    override = api.put(
        "/api/v1/customers/acme/entitlements/override",
        {"feature": "api_calls", "type": "metered", "limit": "1000.5", "period": "monthly"},
        format="json",
    )
    assert override.status_code == 200, override.content
    assert override.json()["limit"] == "1000.5"
    value = api.get(
        "/api/v1/customers/acme/entitlements/api_calls/value",
        {"time": "2026-10-02T00:00:00Z"},
    )
    assert value.content == b'{"hasAccess":true,"balance":1500.5,"usage":0,"overage":0}'


@pytest.mark.django_db
def test_the_openapi_schema_still_says_money_is_a_string(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    components = schema["components"]["schemas"]
    invoice, line = components["Invoice"]["properties"], components["InvoiceLine"]["properties"]
    for field in ("subtotal", "total", "amount_due"):
        assert invoice[field]["type"] == "string", field
    for field in ("quantity", "unit_price", "amount"):
        assert line[field]["type"] == "string", field
    assert components["Grant"]["properties"]["amount"]["type"] == "string"
