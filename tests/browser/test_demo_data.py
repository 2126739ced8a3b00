"""The demo data set that bin/demo loads and the screenshots show: every state the
browser journeys and a newcomer look for is there, its links open, and loading it again
changes nothing. (Not a browser test: it lives here because the journeys and the
screenshots depend on it. One test, because each load takes a while.)"""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

pytestmark = pytest.mark.django_db(transaction=True)


def run(command: str, *args, **options) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out, **options)
    return out.getvalue()


def data_seconds_as_bin_demo_reads_them(output: str) -> str:
    """The figure bin/demo prints as "the demo data took N s", read from demo_load's
    output with bin/demo's own expression."""
    script = (Path(settings.BASE_DIR) / "bin" / "demo").read_text()
    expression = re.search(r"sed -n '([^']+)'", script).group(1)
    read = subprocess.run(
        ["sed", "-n", expression], input=output, capture_output=True, text=True, check=True
    )
    return read.stdout.strip()


def test_the_demo_has_every_state_an_operator_meets_and_loads_only_once(api, client):
    from billing.models import Invoice, InvoiceStatus
    from rails.models import Settlement, SettlementEvent
    from rails.models_ach import AchFile

    report = run("demo_load", events=3000)
    # bin/demo's "the demo data took N s" is demo_load's own "Demo data ready in N s."
    seconds = data_seconds_as_bin_demo_reads_them(report)
    assert float(seconds) > 0 and report.splitlines()[-1] == f"Demo data ready in {seconds} s."

    now = timezone.now()
    states = {(s.invoice.customer.key, s.rail, s.state) for s in Settlement.objects.all()}
    assert ("globex-apac", "netsuite", "failed") in states  # the one to retry
    assert ("initech", "ach", "returned") in states  # R01, insufficient funds
    assert {("hooli-dev", "stripe", "paid"), ("hooli-dev", "stripe", "submitted")} <= states
    assert Invoice.objects.get(settlement__state="returned").status == InvoiceStatus.PAYMENT_FAILED
    drafts = Invoice.objects.filter(status=InvoiceStatus.DRAFT, grace_until__gt=now)
    assert set(drafts.values_list("customer__key", flat=True)) == {"pendant", "kramerica"}
    assert "2 draft(s) in their grace period" in report
    assert "{" not in report and "netsuite" not in report  # words and the rails' names
    issued = Invoice.objects.exclude(status=InvoiceStatus.DRAFT)
    assert issued.count() >= 10 and not issued.filter(pdf="").exists()
    assert AchFile.objects.exists()
    over = api.get("/api/v1/customers/prestige/entitlements/api_calls/value").json()
    assert over["hasAccess"] is False and over["overage"] > 0  # the Free plan's hard limit

    links = dict(
        line.split(" ", 1) for line in run("demo_links", "--base", "http://testserver").splitlines()
    )
    page = client.get(links["invoice"].removeprefix("http://testserver"))
    assert page.status_code == 200 and links["invoice_number"] in page.content.decode()
    sign_in = client.get(links["portal_sign_in"].removeprefix("http://testserver"))
    assert sign_in.status_code == 200 and links["invoice_customer"] in sign_in.content.decode()

    counts = Invoice.objects.count(), SettlementEvent.objects.count()
    again = run("demo_load", events=3000)
    assert "0 change(s)" in again and "usage events" not in again
    assert (Invoice.objects.count(), SettlementEvent.objects.count()) == counts
