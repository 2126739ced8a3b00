"""The Invoices API: shape and values, filters, scopes, PDFs, the operator's actions, and
the usage behind every usage line adding up to its quantity."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.urls import include, path

from billing.catalog.periods import Period
from billing.invoicing.services import invoice_draft_for, invoice_issue, invoice_line_add
from billing.models import CreditNote, Invoice, InvoiceLine, InvoiceStatus, LineKind
from config.urls import urlpatterns as project_urlpatterns
from metering.services import usage_rollup
from tests.factories import (
    ConsumerMappingFactory,
    CustomerFactory,
    FeatureFactory,
    MeterFactory,
    PlanVersionFactory,
    SubscriptionFactory,
    flat_fee,
    unit_price,
)
from tests.metering.conftest import cloud_event


def _mounted(module: str) -> bool:
    return any(
        getattr(getattr(p, "urlconf_name", None), "__name__", None) == module
        for p in project_urlpatterns
    )


# The project's URLs, plus the invoices API and the hosted pages where config/urls.py
# mounts them, until it does.
urlpatterns = [
    *(
        []
        if _mounted("billing.invoicing.api.urls")
        else [path("api/v1/", include("billing.invoicing.api.urls"))]
    ),
    *(
        []
        if _mounted("billing.documents.portal_urls")
        else [path("", include("billing.documents.portal_urls"))]
    ),
    *project_urlpatterns,
]
pytestmark = pytest.mark.urls(__name__)

OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
DESIGN_FIELDS = {
    "id", "number", "status", "customer", "currency", "period_start", "period_end", "subtotal",
    "total", "amount_due", "hosted_url", "lines",
}  # fmt: skip
DESIGN_LINE_FIELDS = {
    "kind", "description", "feature", "customer", "period_start", "period_end", "quantity",
    "unit_price", "amount",
}  # fmt: skip


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path


@pytest.fixture
def catalog(db):
    """Flights API calls (only route /flights with status 200) at 0.01 each, output LLM
    tokens at 0.0001 each, and a 49.00 platform fee."""
    requests = MeterFactory(group_by={"route": "$.route", "status": "$.status"})
    tokens = MeterFactory(
        key="llm_tokens",
        event_type="llm",
        aggregation="SUM",
        value_property="$.tokens",
        group_by={"direction": "$.direction"},
    )
    flights = FeatureFactory(
        key="flights",
        name="Flights API calls",
        meter=requests,
        filters={"route": ["/flights"], "status": ["200"]},
    )
    output = FeatureFactory(
        key="output_tokens", name="Output tokens", meter=tokens, filters={"direction": ["output"]}
    )
    return PlanVersionFactory(
        rate_cards=(
            flat_fee("49.00"),
            unit_price(flights, "0.01", key="flights"),
            unit_price(output, "0.0001", key="tokens"),
        )
    )


def _account(catalog, key="acme", timezone="UTC", start=OCT):
    account = CustomerFactory(key=key, name=key.title(), timezone=timezone)
    subsidiary = CustomerFactory(key=f"{key}-eu", name=f"{key.title()} EU", parent=account)
    SubscriptionFactory(customer=account, plan_version=catalog, start=start)
    ConsumerMappingFactory(
        consumer_key=f"{key}-gw", customer=account, valid_from=start - timedelta(days=30)
    )
    ConsumerMappingFactory(
        consumer_key=f"{key}-eu-gw", customer=subsidiary, valid_from=start - timedelta(days=30)
    )
    return account


@pytest.fixture
def acme(catalog):
    return _account(catalog)


def draft_for(account, start=OCT, end=NOV) -> Invoice:
    return invoice_draft_for(account=account, period=Period(start, end), now=end)[0]


def issued_for(account, start=OCT, end=NOV) -> Invoice:
    return invoice_issue(invoice=draft_for(account, start, end), now=end + timedelta(days=1))


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["detail"]
    return body


# ---------------------------------------------------------------- reading invoices


def test_an_invoice_answers_the_designed_shape_with_money_as_strings(api, acme):
    draft = draft_for(acme)
    invoice_line_add(
        invoice=draft, description="Onboarding workshop", amount=Decimal("500"), now=NOV
    )
    invoice = issued_for(acme)

    body = api.get(f"/api/v1/invoices/{invoice.pk}").json()

    assert set(body) >= DESIGN_FIELDS
    assert body["id"] == str(invoice.pk)
    assert (body["number"], body["status"], body["customer"], body["currency"]) == (
        "INV-2026-000001",
        "issued",
        "acme",
        "USD",
    )
    assert (body["period_start"], body["period_end"]) == (
        "2026-10-01T00:00:00Z",
        "2026-11-01T00:00:00Z",
    )
    assert (body["subtotal"], body["total"], body["amount_due"]) == ("549.00", "549.00", "549.00")
    assert body["hosted_url"].startswith("http://testserver/")
    for line in body["lines"]:
        assert set(line) >= DESIGN_LINE_FIELDS
    by_kind = {(line["kind"], line["description"]): line for line in body["lines"]}
    fee = by_kind[("flat_fee", "Platform fee")]
    # an amount keeps its currency's minor digits; a unit price is exact, without padding
    assert (fee["amount"], fee["unit_price"], fee["quantity"], fee["customer"]) == (
        "49.00",
        "49",
        "1",
        "acme",
    )
    flights = by_kind[("usage", "Flights API calls")]
    assert (flights["feature"], flights["quantity"], flights["unit_price"], flights["amount"]) == (
        "flights",
        "0",
        "0.01",
        "0.00",
    )
    assert flights["usage_url"].endswith(
        f"/api/v1/invoices/{invoice.pk}/lines/{flights['id']}/usage"
    )
    manual = by_kind[("manual", "Onboarding workshop")]
    assert (manual["amount"], manual["feature"], manual["usage_url"]) == ("500.00", None, None)


def test_a_draft_has_no_hosted_link_and_can_be_read_by_number_once_issued(api, acme):
    draft = draft_for(acme)
    assert api.get(f"/api/v1/invoices/{draft.pk}").json()["hosted_url"] is None
    invoice = invoice_issue(invoice=draft, now=NOV)
    assert api.get(f"/api/v1/invoices/{invoice.number}").json()["id"] == str(invoice.pk)


def test_the_list_filters_by_customer_status_period_and_number(api, catalog, acme):
    october = issued_for(acme)
    november = draft_for(acme, NOV, DEC)
    globex = draft_for(_account(catalog, key="globex"))
    eu = acme.subsidiaries.get()
    invoice_line_add(
        invoice=november, description="EU workshop", amount=Decimal("10"), now=DEC, customer=eu
    )

    def ids(**params) -> list[str]:
        response = api.get("/api/v1/invoices", params)
        assert response.status_code == 200, response.content
        return [invoice["id"] for invoice in response.json()["results"]]

    assert set(ids()) == {str(october.pk), str(november.pk), str(globex.pk)}
    assert set(ids(customer="acme")) == {str(october.pk), str(november.pk)}
    assert ids(customer="acme-eu") == [str(november.pk)]  # the parent's invoice carrying its line
    assert ids(customer="nobody") == []
    assert set(ids(status="draft")) == {str(november.pk), str(globex.pk)}
    assert ids(customer="acme", status="issued,paid") == [str(october.pk)]
    assert ids(number=october.number) == [str(october.pk)]
    assert ids(customer="acme", period_start="2026-11-01T00:00:00Z") == [str(november.pk)]
    assert set(ids(period_after="2026-10-15T00:00:00Z")) == {str(november.pk)}
    assert set(ids(period_before="2026-11-01T00:00:00Z")) == {str(october.pk), str(globex.pk)}
    problem(api.get("/api/v1/invoices", {"status": "sent"}), 400)


def test_the_list_is_paginated(api, catalog, acme):
    draft_for(acme)
    draft_for(acme, NOV, DEC)
    page = api.get("/api/v1/invoices", {"page_size": 1}).json()
    assert page["count"] == 2 and len(page["results"]) == 1 and page["next"]
    assert len(api.get(page["next"]).json()["results"]) == 1


def test_the_list_shows_drafts_first_then_invoices_by_number_newest_first(api, catalog, acme):
    october = issued_for(acme)
    november = issued_for(acme, NOV, DEC)
    december = draft_for(acme, DEC, DEC + timedelta(days=31))
    one_off = Invoice.objects.create(customer=acme, currency="USD")  # no period
    listed = api.get("/api/v1/invoices").json()["results"]
    assert [i["id"] for i in listed] == [str(i.pk) for i in (december, one_off, november, october)]
    assert [i["number"] for i in listed[2:]] == [november.number, october.number]


def test_listing_costs_the_same_queries_for_one_invoice_or_many(api, catalog, acme):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    issued_for(acme)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert api.get("/api/v1/invoices").status_code == 200
        return len(captured)

    queries()  # the API key's first use of the minute also records it
    one = queries()
    draft_for(acme, NOV, DEC)
    issued_for(_account(catalog, key="globex"))
    assert queries() == one


def test_unknown_invoices_answer_404_problem_documents(api, acme):
    problem(api.get("/api/v1/invoices/3f1c2b9e-0000-4000-8000-000000000000"), 404)
    problem(api.get("/api/v1/invoices/INV-1999-000001"), 404)
    problem(api.get("/api/v1/credit-notes/CN-1999-000001"), 404)
    draft = draft_for(acme)
    problem(api.get(f"/api/v1/invoices/{draft.pk}/lines/999999/usage"), 404)
    fee = draft.lines.get(kind=LineKind.FLAT_FEE)
    body = problem(api.get(f"/api/v1/invoices/{draft.pk}/lines/{fee.pk}/usage"), 404)
    assert "no usage behind it" in body["detail"]


def test_reads_need_the_read_scope_and_writes_the_write_scope(api_client_for, acme):
    draft = draft_for(acme)
    assert api_client_for("read").get("/api/v1/invoices").status_code == 200
    assert api_client_for("ingest").get("/api/v1/invoices").status_code == 403
    from rest_framework.test import APIClient

    assert APIClient().get("/api/v1/invoices").status_code == 401
    problem(api_client_for("read").post(f"/api/v1/invoices/{draft.pk}/issue"), 403)
    assert Invoice.objects.get(pk=draft.pk).status == InvoiceStatus.DRAFT


def test_the_pdf_of_a_draft_is_rendered_and_an_issued_one_is_stored(api, acme):
    draft = draft_for(acme)
    response = api.get(f"/api/v1/invoices/{draft.pk}/pdf", HTTP_ACCEPT="application/pdf")
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")
    assert not Invoice.objects.get(pk=draft.pk).pdf

    invoice = invoice_issue(invoice=draft, now=NOV)
    response = api.get(f"/api/v1/invoices/{invoice.pk}/pdf")
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert b"".join(response.streaming_content).startswith(b"%PDF")
    assert Invoice.objects.get(pk=invoice.pk).pdf.name.endswith(f"{invoice.number}.pdf")


# ---------------------------------------------------------------- acting on invoices


def test_issuing_numbers_a_draft_once_and_then_conflicts(api, acme):
    draft = draft_for(acme)
    response = api.post(f"/api/v1/invoices/{draft.pk}/issue")
    assert response.status_code == 200, response.content
    year = Invoice.objects.get(pk=draft.pk).issued_at.year  # numbered in the year it is issued
    assert (response.json()["status"], response.json()["number"]) == (
        "issued",
        f"INV-{year}-000001",
    )
    body = problem(api.post(f"/api/v1/invoices/{draft.pk}/issue"), 409)
    assert "already issued" in body["detail"]
    assert Invoice.objects.get(pk=draft.pk).events.count() == 2  # draft, issued: nothing more


def test_voiding_needs_a_reason_and_an_unpaid_issued_invoice(api, acme):
    draft = draft_for(acme)
    problem(
        api.post(f"/api/v1/invoices/{draft.pk}/void", {"reason": "duplicate"}, format="json"), 409
    )
    invoice = invoice_issue(invoice=draft, now=NOV)

    body = problem(api.post(f"/api/v1/invoices/{invoice.pk}/void", {}, format="json"), 400)
    assert "reason" in body["errors"]
    assert Invoice.objects.get(pk=invoice.pk).status == InvoiceStatus.ISSUED

    response = api.post(
        f"/api/v1/invoices/{invoice.pk}/void", {"reason": "Billed twice"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert (response.json()["status"], response.json()["void_reason"]) == ("void", "Billed twice")
    problem(
        api.post(f"/api/v1/invoices/{invoice.pk}/void", {"reason": "again"}, format="json"), 409
    )


def test_manual_lines_go_on_drafts_only_and_bad_input_changes_nothing(api, catalog, acme):
    draft = draft_for(acme)
    url = f"/api/v1/invoices/{draft.pk}/lines"
    response = api.post(
        url,
        {"description": "EU setup", "amount": "120.505", "quantity": "2", "customer": "acme-eu"},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    line = next(line for line in body["lines"] if line["kind"] == "manual")
    assert (line["amount"], line["quantity"], line["customer"]) == ("120.51", "2", "acme-eu")
    assert body["total"] == "169.51"

    before = list(InvoiceLine.objects.filter(invoice=draft).values_list("pk", flat=True))
    problem(api.post(url, {"description": "x", "amount": "lots"}, format="json"), 400)
    problem(api.post(url, {"amount": "1.00"}, format="json"), 400)
    other = _account(catalog, key="globex")
    body = problem(
        api.post(url, {"description": "x", "amount": "1", "customer": other.key}, format="json"),
        400,
    )
    assert "customer" in body["errors"]
    assert list(InvoiceLine.objects.filter(invoice=draft).values_list("pk", flat=True)) == before
    assert Invoice.objects.get(pk=draft.pk).total == Decimal("169.51")

    invoice_issue(invoice=draft, now=NOV)
    problem(api.post(url, {"description": "Late fee", "amount": "5"}, format="json"), 409)


def test_credit_notes_credit_issued_invoices_by_lines_amount_or_in_full(api, acme):
    draft = draft_for(acme)
    invoice_line_add(invoice=draft, description="Workshop", amount=Decimal("100"), now=NOV)
    url = f"/api/v1/invoices/{draft.pk}/credit-notes"
    problem(api.post(url, {"reason": "early"}, format="json"), 409)
    invoice = invoice_issue(invoice=draft, now=NOV)
    workshop = invoice.lines.get(kind=LineKind.MANUAL)

    problem(api.post(url, {"reason": "too much", "amount": "1000"}, format="json"), 400)
    problem(
        api.post(url, {"reason": "both", "amount": "1", "lines": [workshop.pk]}, format="json"), 400
    )
    problem(api.post(url, {"reason": "not ours", "lines": [999999]}, format="json"), 400)
    problem(api.post(url, {"amount": "1"}, format="json"), 400)
    assert not CreditNote.objects.exists()

    by_line = api.post(url, {"reason": "Workshop cancelled", "lines": [workshop.pk]}, format="json")
    assert by_line.status_code == 201, by_line.content
    note = by_line.json()
    year = CreditNote.objects.get().issued_at.year  # numbered in the year it is issued
    assert (note["number"], note["amount"], note["invoice_number"], note["customer"]) == (
        f"CN-{year}-000001",
        "100.00",
        invoice.number,
        "acme",
    )
    assert note["lines"] == [
        {"invoice_line": workshop.pk, "description": "Credit: Workshop", "amount": "100.00"}
    ]
    by_amount = api.post(url, {"reason": "Goodwill", "amount": "9.5"}, format="json").json()
    assert by_amount["amount"] == "9.50"
    rest = api.post(url, {"reason": "Closing the account"}, format="json").json()
    assert rest["amount"] == "39.50"  # 149.00 - 100.00 - 9.50
    problem(api.post(url, {"reason": "nothing left", "amount": "0.01"}, format="json"), 400)

    listed = api.get("/api/v1/credit-notes", {"invoice": invoice.number}).json()
    assert [n["number"] for n in listed["results"]] == [
        f"CN-{year}-000003",
        f"CN-{year}-000002",
        f"CN-{year}-000001",
    ]
    assert api.get("/api/v1/credit-notes", {"customer": "acme"}).json()["count"] == 3
    assert api.get("/api/v1/credit-notes", {"customer": "globex"}).json()["count"] == 0
    assert api.get(url).json()["count"] == 3
    assert api.get(f"/api/v1/credit-notes/{note['id']}").json()["amount"] == "100.00"
    detail = api.get(f"/api/v1/invoices/{invoice.pk}").json()
    assert [n["number"] for n in detail["credit_notes"]] == [
        f"CN-{year}-000001",
        f"CN-{year}-000002",
        f"CN-{year}-000003",
    ]
    pdf = api.get(f"/api/v1/credit-notes/{note['id']}/pdf")
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert b"".join(pdf.streaming_content).startswith(b"%PDF")


# ---------------------------------------------------------------- the usage behind a line


def _usage(ingest, key: str, *, at: datetime = OCT + timedelta(days=3)) -> None:
    """5 flights/200 from the account and 4 from its subsidiary, plus calls the feature
    leaves out (another route, another status); output tokens 100 + 250 and 40, input
    tokens left out."""
    t = lambda minutes: (at + timedelta(minutes=minutes)).isoformat()  # noqa: E731
    ingest(
        *[
            cloud_event(
                f"{key}-f{i}", subject=f"{key}-gw", time=t(i * 37), route="/flights", status=200
            )
            for i in range(5)
        ],
        *[
            cloud_event(
                f"{key}-e{i}", subject=f"{key}-eu-gw", time=t(i * 61), route="/flights", status=200
            )
            for i in range(4)
        ],
        cloud_event(f"{key}-x1", subject=f"{key}-gw", time=t(3), route="/flights", status=500),
        cloud_event(f"{key}-x2", subject=f"{key}-gw", time=t(4), route="/hotels", status=200),
        cloud_event(
            f"{key}-t1", type="llm", subject=f"{key}-gw", time=t(5), direction="output", tokens=100
        ),
        cloud_event(
            f"{key}-t2", type="llm", subject=f"{key}-gw", time=t(95), direction="output", tokens=250
        ),
        cloud_event(
            f"{key}-t3", type="llm", subject=f"{key}-gw", time=t(6), direction="input", tokens=999
        ),
        cloud_event(
            f"{key}-t4",
            type="llm",
            subject=f"{key}-eu-gw",
            time=t(7),
            direction="output",
            tokens=40,
        ),
    )


def _csv(api, url: str) -> list[dict]:
    response = api.get(url, HTTP_ACCEPT="text/csv")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/csv")
    assert response.streaming
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def _proof(api, invoice: Invoice, line: InvoiceLine) -> tuple[dict, list[dict]]:
    usage = api.get(f"/api/v1/invoices/{invoice.pk}/lines/{line.pk}/usage")
    assert usage.status_code == 200, usage.content
    return usage.json(), _csv(api, usage.json()["events_csv_url"])


@pytest.mark.django_db(transaction=True)
def test_every_usage_line_is_proven_by_its_buckets_and_raw_events(api, ingest, catalog):
    acme = _account(catalog)
    _usage(ingest, "acme")
    usage_rollup(now=NOV)
    invoice = issued_for(acme)
    lines = {
        (line.feature.key, line.customer.key): line
        for line in invoice.lines.filter(kind=LineKind.USAGE)
    }
    expected = {
        ("flights", "acme"): 5,
        ("flights", "acme-eu"): 4,
        ("output_tokens", "acme"): 350,
        ("output_tokens", "acme-eu"): 40,
    }
    assert {k: line.quantity for k, line in lines.items()} == expected

    for (feature, customer), line in lines.items():
        body, events = _proof(api, invoice, line)
        totals = body["totals"]
        assert (body["agrees"], body["line_quantity"], totals["quantity"]) == (
            True,
            str(expected[feature, customer]),
            str(expected[feature, customer]),
        )
        # Buckets plus the events not rolled up yet (another transaction on the server may
        # hold the rollup's horizon back) add up to the quantity.
        assert {b["customer"] for b in body["results"]} <= {customer}
        assert totals["bucket_event_count"] == sum(b["event_count"] for b in body["results"])
        assert totals["bucket_event_count"] + totals["raw_event_count"] == totals["event_count"]
        if feature == "flights":
            assert totals["event_count"] == expected[feature, customer]
            assert len(events) == expected[feature, customer]
            assert {(e["dims"], e["customer"]) for e in events} == {
                ('{"route": "/flights", "status": "200"}', customer)
            }
        else:
            bucket_sum = sum((Decimal(b["value"]) for b in body["results"]), Decimal(0))
            assert Decimal(totals["bucket_value_sum"]) == bucket_sum
            assert (
                bucket_sum + Decimal(totals["raw_value_sum"])
                == Decimal(totals["value_sum"])
                == expected[feature, customer]
            )
            assert sum(Decimal(e["value"]) for e in events) == expected[feature, customer]
        assert [e["time"] for e in events] == sorted(e["time"] for e in events)


@pytest.mark.django_db(transaction=True)
def test_edge_hours_and_events_not_rolled_up_are_counted_from_raw_events(api, ingest, catalog):
    # Midnight in Kolkata is 18:30 UTC: the period's first and last half hours are raw events.
    start, end = (
        datetime(2026, 9, 30, 18, 30, tzinfo=UTC),
        datetime(2026, 10, 31, 18, 30, tzinfo=UTC),
    )
    acme = _account(catalog, timezone="Asia/Kolkata", start=start)

    def call(i, at):
        return cloud_event(
            f"k{i}", subject="acme-gw", time=at.isoformat(), route="/flights", status=200
        )

    ingest(
        call(1, start - timedelta(minutes=15)),  # same UTC hour, before the period
        call(2, start + timedelta(minutes=15)),  # edge hour, inside
        call(3, start + timedelta(days=2)),
        call(4, end - timedelta(minutes=20)),  # edge hour, inside
        call(5, end + timedelta(minutes=10)),  # same UTC hour, after the period
    )
    usage_rollup(now=end)
    ingest(call(6, start + timedelta(days=3)))  # stored, not rolled up yet
    draft = invoice_draft_for(account=acme, period=Period(start, end), now=end)[0]
    line = draft.lines.get(kind=LineKind.USAGE, feature__key="flights")
    assert line.quantity == 4

    body, events = _proof(api, draft, line)
    totals = body["totals"]
    # The edge hours and the late-stored event are always raw; the one in between is in a
    # bucket once the rollup's horizon passes it.
    assert totals["raw_event_count"] >= 3 and totals["bucket_event_count"] <= 1
    assert totals["bucket_event_count"] + totals["raw_event_count"] == totals["event_count"] == 4
    assert (body["buckets_from"], body["buckets_to"]) == (
        "2026-09-30T19:00:00Z",
        "2026-10-31T18:00:00Z",
    )
    assert (body["agrees"], totals["quantity"], body["line_quantity"]) == (True, "4", "4")
    assert sorted(e["id"] for e in events) == ["k2", "k3", "k4", "k6"]


@pytest.mark.django_db(transaction=True)
def test_late_usage_shows_beside_an_issued_line_that_keeps_its_quantity(api, ingest, catalog):
    acme = _account(catalog)
    _usage(ingest, "acme")
    usage_rollup(now=NOV)
    invoice = issued_for(acme)
    line = invoice.lines.get(kind=LineKind.USAGE, feature__key="flights", customer=acme)

    ingest(
        cloud_event(
            "late",
            subject="acme-gw",
            time=(OCT + timedelta(days=9)).isoformat(),
            route="/flights",
            status=200,
        )
    )
    usage_rollup(now=NOV + timedelta(days=3))

    body, events = _proof(api, invoice, line)
    assert (body["agrees"], body["line_quantity"], body["totals"]["quantity"]) == (False, "5", "6")
    assert "prior-period adjustment" in body["note"]
    assert len(events) == 6
