"""The Invoices API's overdue filter and fields, and ``GET /api/v1/receivables/aging``,
with the API's clock moved explicitly."""

from __future__ import annotations

from datetime import timedelta

import pytest

from billing.invoicing.services import invoice_mark
from tests.clock import clock_move
from tests.factories import CustomerFactory, IssuedInvoiceFactory

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


@pytest.fixture
def clock(monkeypatch):
    """Moves the clock the API views read."""
    modules = (
        "billing.invoicing.api.invoices",
        "billing.invoicing.api.base",
        "billing.invoicing.api.receivables",
    )

    def move(now):
        clock_move(monkeypatch, modules, now)

    return move


@pytest.fixture
def world():
    acme = CustomerFactory(key="acme")
    late = IssuedInvoiceFactory(customer=acme, lines=(("Late", "100.00"),))
    paid = IssuedInvoiceFactory(customer=acme, lines=(("Paid", "40.00"),))
    invoice_mark(invoice=paid, status="paid", now=paid.issued_at, actor="t")
    yen = IssuedInvoiceFactory(
        customer=CustomerFactory(key="kyoto", currency="JPY"), lines=(("Yen", "5000"),)
    )
    return {"late": late, "paid": paid, "yen": yen}


def test_the_invoice_says_whether_it_is_overdue_and_for_how_many_days(api, clock, world):
    late = world["late"]
    clock(late.due_at + 3 * DAY)

    body = api.get(f"/api/v1/invoices/{late.pk}").json()
    paid = api.get(f"/api/v1/invoices/{world['paid'].pk}").json()

    assert (body["overdue"], body["days_past_due"]) == (True, 3)
    assert body["status"] == "issued"  # the stored status is untouched
    assert (paid["overdue"], paid["days_past_due"]) == (False, 0)


def test_the_overdue_filter_lists_only_overdue_invoices(api, clock, world):
    clock(world["late"].due_at + DAY)

    overdue = api.get("/api/v1/invoices?overdue=true").json()["results"]
    others = api.get("/api/v1/invoices?overdue=false").json()["results"]

    assert {i["number"] for i in overdue} == {world["late"].number, world["yen"].number}
    assert world["paid"].number in {i["number"] for i in others}
    assert not {i["number"] for i in overdue} & {i["number"] for i in others}
    clock(world["late"].due_at)  # due exactly now: not yet overdue
    assert api.get("/api/v1/invoices?overdue=true").json()["results"] == []


def test_the_aging_report_answers_buckets_per_currency_as_decimal_strings(api, clock, world):
    clock(world["late"].due_at + 31 * DAY)

    body = api.get("/api/v1/receivables/aging").json()

    assert [b["key"] for b in body["buckets"]] == [
        "current", "days_1_30", "days_31_60", "days_61_90", "over_90",
    ]  # fmt: skip
    jpy, usd = body["currencies"]
    assert jpy["currency"] == "JPY" and jpy["totals"]["days_31_60"] == "5000"
    (acme,) = usd["customers"]
    assert acme["customer"] == "acme"
    assert acme["amounts"] == {
        "current": "0.00", "days_1_30": "0.00", "days_31_60": "100.00", "days_61_90": "0.00",
        "over_90": "0.00", "total": "100.00", "overdue": "100.00",
    }  # fmt: skip
    assert acme["invoices_url"].endswith("/api/v1/invoices?customer=acme&currency=USD&overdue=true")
    assert usd["totals"]["total"] == "100.00"


def test_the_aging_report_takes_an_instant_and_a_currency_and_refuses_bad_ones(api, world):
    as_of = (world["late"].due_at - DAY).isoformat().replace("+00:00", "Z")

    body = api.get(f"/api/v1/receivables/aging?as_of={as_of}&currency=usd").json()

    (usd,) = body["currencies"]
    assert usd["totals"]["current"] == "100.00"
    bad = api.get("/api/v1/receivables/aging?currency=XXY")
    assert bad.status_code == 400 and "currency" in bad.json()["errors"]
    assert api.get("/api/v1/receivables/aging?as_of=yesterday").status_code == 400


def test_the_aging_report_needs_the_read_scope(api_client_for):
    assert api_client_for("ingest").get("/api/v1/receivables/aging").status_code == 403
