"""The raw events behind an invoice line, downloaded as CSV from the admin and the API:
what an event's sender wrote is never a formula in the operator's spreadsheet, and the
value column stays numbers."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib import admin
from django.urls import include, path, reverse

import billing.invoicing.admin  # noqa: F401  (registers the invoice admin)
from billing.catalog.periods import Period
from billing.invoicing.services import invoice_draft_for
from billing.models import LineKind
from config.urls import urlpatterns as project_urlpatterns
from tests.factories import (
    ConsumerMappingFactory,
    CustomerFactory,
    FeatureFactory,
    MeterFactory,
    PlanVersionFactory,
    SubscriptionFactory,
)
from tests.metering.conftest import cloud_event

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("billing.invoicing.api.urls")),
    *project_urlpatterns,
]
pytestmark = pytest.mark.urls(__name__)

OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
# Subjects a gateway forwards as it got them: each mapped to the customer, as consumer keys.
SUBJECTS = ['=HYPERLINK("http://x")', "@SUM(1)", "+1", "-1+2", "\t=1"]


@pytest.fixture
def line(db, ingest):
    """A usage line whose events were sent with hostile subjects, sources and ids; half
    of their values are negative numbers."""
    acme = CustomerFactory(key="acme", name="Acme Corp")
    meter = MeterFactory(
        key="credits", event_type="credit", aggregation="SUM", value_property="$.amount"
    )
    feature = FeatureFactory(key="credits", name="Credits", meter=meter)
    plan = PlanVersionFactory(fee=None, feature=feature, unit_price="1")
    SubscriptionFactory(customer=acme, plan_version=plan, start=OCT)
    for subject in SUBJECTS:
        ConsumerMappingFactory(consumer_key=subject, customer=acme, valid_from=OCT)
    ingest(
        *[
            cloud_event(
                f"-{i}+1" if i % 2 else f"@id{i}",
                type="credit",
                subject=subject,
                source="=1+2" if i % 2 else "+gw",
                time=(OCT + timedelta(hours=i)).isoformat(),
                amount="-12.50" if i % 2 else "20",
            )
            for i, subject in enumerate(SUBJECTS)
        ]
    )
    draft = invoice_draft_for(account=acme, period=Period(OCT, NOV), now=NOV)[0]
    return draft.lines.get(kind=LineKind.USAGE)


def rows(response) -> list[dict]:
    assert response.status_code == 200
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def assert_neutralised(events: list[dict]) -> None:
    assert sorted(e["subject"] for e in events) == sorted(f"'{s}" for s in SUBJECTS)
    assert {e["source"] for e in events} == {"'=1+2", "'+gw"}
    assert {e["id"] for e in events} == {"'-1+1", "'-3+1", "'@id0", "'@id2", "'@id4"}
    # the value is the product's own number: negative, and no quote in front of it
    assert sorted(e["value"] for e in events) == ["-12.5", "-12.5", "20", "20", "20"]
    assert all(e["customer"] == "acme" and e["time"].startswith("2026-10-01") for e in events)


def test_the_admin_line_events_csv_neutralises_formulas(admin_client, line):
    url = reverse("admin:billing_invoice_line_events", args=[line.invoice_id, line.pk])
    assert_neutralised(rows(admin_client.get(url)))


def test_the_api_line_events_csv_neutralises_formulas(api, line):
    url = f"/api/v1/invoices/{line.invoice_id}/lines/{line.pk}/events.csv"
    assert_neutralised(rows(api.get(url, HTTP_ACCEPT="text/csv")))
