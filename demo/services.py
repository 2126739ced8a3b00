"""The demo's steps: the catalog and customers, the usage, and a billing history that
leaves settlements in every state an operator meets (paid, returned, failed, waiting).

Each step takes the instant it acts at, as every service of the product does. The
history replays the billing clock over the demo's months (``billing_run`` at each period
end plus grace), the daily ACH export on each day a debit fell due and the bank's return
file, and reports what the rails would have answered: Stripe's ``invoice.paid`` webhooks
and one invoice NetSuite refused. The sandbox rails never send anything, so nothing here
leaves the machine.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import transaction

from backoffice.configuration.apply import config_apply
from backoffice.configuration.report import ApplyReport
from billing.catalog.periods import period_iter
from billing.documents.links import invoice_hosted_url
from billing.models import BillingProfile, Invoice, InvoiceStatus, Subscription
from billing.run import billing_run
from customers.models import Customer, rail_label
from demo.data import (
    OVER_LIMIT_BURST,
    OVER_LIMIT_EVENTS,
    OVER_LIMIT_SUBJECT,
    demo_catalog,
    demo_events,
    demo_self_service,
    demo_start,
)
from metering.models import RollupState
from metering.selectors import events_newest_xid
from metering.services import usage_rollup
from rails.ach.export import ach_export, ach_file_content
from rails.ach.nacha import NachaEntry, NachaFile
from rails.ach.returns_apply import ach_returns_apply
from rails.ach.returns_build import AchReturnInstruction, nacha_return_file_build
from rails.adapters.ach import ach_originator
from rails.adapters.netsuite import netsuite_base_url
from rails.base import Exchange, RailResult
from rails.models import Settlement, SettlementState
from rails.models_ach import AchFile
from rails.outcomes import settlement_apply_result, settlement_report

ACH_CUSTOMER = "initech"
ACH_NET_TERMS_DAYS = 15  # Initech pays on Net 15: its debits fall inside the demo's months
NETSUITE_REFUSED_CUSTOMER = "globex-apac"  # its NetSuite entity id is refused by the ERP
STRIPE_WEBHOOK_ACTOR = "stripe webhook"
HOSTED_INVOICE_CUSTOMER = "hooli-dev"


def demo_document(*, reference: datetime, keys: set[str] | None = None) -> dict:
    """The demo's configuration file: the example catalog moved so that ``reference``
    falls on its day, and the self-service accounts; only the customers in ``keys`` (top
    level) when given."""
    document = demo_catalog(now=reference)
    document["customers"] += demo_self_service(now=reference)
    if keys is not None:
        document["customers"] = [c for c in document["customers"] if c["key"] in keys]
    return document


def demo_catalog_apply(*, reference: datetime, keys: set[str] | None = None) -> ApplyReport:
    """Apply the demo's configuration (``billing_apply`` does the same with a file), and
    put the ACH customer on Net 15."""
    with transaction.atomic():
        report = config_apply(document=demo_document(reference=reference, keys=keys), dry_run=False)
        ach = Customer.objects.filter(key=ACH_CUSTOMER).first()
        if ach is not None:
            BillingProfile.objects.get_or_create(
                customer=ach, defaults={"net_terms_days": ACH_NET_TERMS_DAYS}
            )
    return report


def demo_usage_generate(*, reference: datetime, total: int) -> int:
    """About ``total`` events from the demo's first day to ``reference``, and the burst
    of the Free account that goes over its hard limit in the period under way."""
    first = demo_start(reference)
    made = demo_events(
        start=datetime(first.year, first.month, first.day, tzinfo=UTC), end=reference, total=total
    )
    made += demo_events(
        start=reference - OVER_LIMIT_BURST,
        end=reference,
        total=OVER_LIMIT_EVENTS,
        subjects={OVER_LIMIT_SUBJECT: (1.0, 0.0)},
    )
    return made


@dataclass(frozen=True)
class RollupCatchUp:
    events: int
    waited_seconds: float
    complete: bool


def usage_rollup_complete(*, now: datetime, timeout: float = 300) -> RollupCatchUp:
    """Roll up every stored event. The rollup only moves below the oldest running
    transaction on the server (of any database), so while one is open this waits, up to
    ``timeout`` seconds: the billing history must not rate periods whose usage is not in
    the buckets yet."""
    newest = events_newest_xid()
    events, waited, started = 0, 0.0, time.monotonic()
    while True:
        events += usage_rollup(now=now).events
        behind = newest is not None and RollupState.objects.filter(watermark__lte=newest).exists()
        if not behind or time.monotonic() - started > timeout:
            return RollupCatchUp(events=events, waited_seconds=waited, complete=not behind)
        time.sleep(1)
        waited += 1


def billing_history(*, until: datetime) -> int:
    """Run the billing clock as the beat would have up to ``until``: half an hour after
    each period's grace ended, so invoices carry the dates they would really have (numbers
    in order, due dates, PDFs rendered then). Returns how many instants it ran at."""
    instants = set()
    for sub in Subscription.objects.select_related("plan_version", "customer"):
        profile = BillingProfile.objects.filter(customer=sub.customer).first()
        hours = (
            profile.grace_period_hours
            if profile and profile.grace_period_hours is not None
            else settings.BILLING_GRACE_PERIOD_HOURS
        )
        for period in period_iter(
            anchor=sub.anchor,
            cadence=sub.plan_version.cadence,
            timezone=sub.customer.timezone,
            until=until,
        ):
            at = period.end + timedelta(hours=hours, minutes=30)
            if at < until:
                instants.add(at)
    for at in sorted(instants):
        billing_run(now=at)
    return len(instants)


# ---------------------------------------------------------------------- ACH


def ach_file_as_sent(ach_file: AchFile) -> NachaFile:
    """An exported file as its bank reads it (the entry detail records' fixed columns):
    enough to build the return file that bank would send back."""
    content = ach_file_content(ach_file)
    invoices = dict(ach_file.entries.values_list("trace_number", "invoice_number"))
    entries, sec_code, batch = [], "", 0
    for line in content.splitlines():
        if line.startswith("5"):
            sec_code, batch = line[50:53], int(line[87:94])
        elif line.startswith("6"):
            trace = line[79:94]
            entries.append(
                NachaEntry(
                    invoice_number=invoices.get(trace, ""),
                    trace_number=trace,
                    batch_number=batch,
                    sec_code=sec_code,
                    transaction_code=line[1:3],
                    amount_minor=int(line[29:39]),
                    receiver_id=line[39:54].rstrip(),
                    receiver_name=line[54:76].rstrip(),
                    routing_number=line[3:12],
                    account_number=line[12:29].rstrip(),
                )
            )
    return NachaFile(
        content=content,
        entries=tuple(entries),
        originator=ach_originator(sandbox=ach_file.sandbox),
        created_at=ach_file.created_at,
        effective_date=ach_file.effective_date,
        file_id_modifier=ach_file.file_id_modifier,
        company_entry_description="INVOICE",
        batch_count=batch,
        block_count=0,
        entry_addenda_count=len(entries),
        entry_hash=0,
        total_debit_minor=ach_file.total_debit_minor,
        total_credit_minor=0,
    )


def ach_history(*, now: datetime) -> list[str]:
    """The daily ACH export (13:00 UTC, before a bank's morning cut-off) on the day before
    each scheduled debit, up to ``now``; then the bank returns the first file's first
    debit for insufficient funds (R01), a day after it was due. Returns what happened."""
    lines = []
    scheduled = Settlement.objects.filter(rail="ach", state=SettlementState.SUBMITTED)
    debit_dates = sorted(
        {
            date.fromisoformat(s.external_ids["ach_effective_date"])
            for s in scheduled
            if s.external_ids.get("ach_effective_date")
        }
    )
    for debit_date in debit_dates:
        export_at = datetime.combine(debit_date - timedelta(days=1), datetime.min.time(), UTC)
        export_at += timedelta(hours=13)
        if export_at >= now:
            continue
        result = ach_export(now=export_at, actor="ach export (daily)")
        if result is not None:
            lines.append(
                f"ACH file {result.file_name}: {result.entry_count} debit(s), "
                f"effective {result.effective_date}"
            )
    first_file = AchFile.objects.order_by("created_at").first()
    if first_file is None or first_file.entries.filter(returned_at__isnull=False).exists():
        return lines
    entry = first_file.entries.order_by("trace_sequence").first()
    returned_at = datetime.combine(first_file.effective_date, datetime.min.time(), UTC)
    returned_at = min(returned_at + timedelta(days=1, hours=15), now)
    content = nacha_return_file_build(
        original=ach_file_as_sent(first_file),
        returns=[AchReturnInstruction(original_trace_number=entry.trace_number, return_code="R01")],
        created_at=returned_at.replace(tzinfo=None),
    )
    report = ach_returns_apply(
        content=content,
        now=returned_at,
        file_name=f"returns-{returned_at:%Y%m%d}.ach",
        actor="ach return file",
    )
    lines.append(f"ACH return file: {report.summary}")
    return lines


# ---------------------------------------------------------------------- Stripe and NetSuite


def stripe_paid_history(*, now: datetime) -> int:
    """Stripe charges the card when an invoice is finalized and says so by webhook
    (``invoice.paid``). The sandbox hears nothing back, so report for each Stripe invoice
    but every customer's latest what the webhook would have, an hour after issue.
    Returns how many were paid."""
    settlements = list(
        Settlement.objects.filter(rail="stripe", state=SettlementState.SUBMITTED)
        .select_related("invoice")
        .order_by("invoice__customer_id", "invoice__issued_at")
    )
    latest = {s.invoice.customer_id: s.pk for s in settlements}
    paid = 0
    for s in settlements:
        if latest[s.invoice.customer_id] == s.pk:
            continue
        suffix = s.invoice_id.hex[:20]
        settlement_report(
            settlement=s,
            outcome="paid",
            now=min(s.invoice.issued_at + timedelta(minutes=55), now),
            actor=STRIPE_WEBHOOK_ACTOR,
            note=f"Stripe invoice.paid (evt_demo{suffix}) (demo: what the webhook would say).",
            external_ids={"stripe_invoice_id": f"in_demo{suffix}"},
        )
        paid += 1
    return paid


def netsuite_refusal(*, settlement: Settlement, now: datetime) -> Settlement:
    """Record NetSuite refusing the invoice because the customer's entity id names no
    customer there (its answer as SuiteTalk REST gives it): a failure that no retry by
    itself fixes, left for an operator to correct and retry."""
    entity = settlement.invoice.customer.rail_settings.get("netsuite_entity_id", "")
    detail = f"Invalid Field Value {entity} for the following field: entity"
    body = {
        "type": "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.1",
        "title": "Bad Request",
        "status": 400,
        "o:errorDetails": [
            {"detail": detail, "o:errorPath": "entity", "o:errorCode": "INVALID_KEY_OR_REF"}
        ],
    }
    base = netsuite_base_url()
    key = f"netsuite-{settlement.invoice_id}-{settlement.attempts}-submit-invoice"
    return settlement_apply_result(
        settlement_id=settlement.pk,
        result=RailResult(
            outcome="failed",
            error=f"Bad Request (400): INVALID_KEY_OR_REF: {detail}",
            retryable=False,
            exchanges=(
                Exchange(
                    step="invoice",
                    method="PUT",
                    url=f"{base}/record/v1/invoice/eid:{settlement.invoice_id}",
                    request_headers={"Content-Type": "application/json"},
                    status_code=400,
                    response_body=json.dumps(body),
                    idempotency_key=key,
                    sent=False,
                ),
            ),
        ),
        attempt=settlement.attempts,
        now=now,
        actor="worker (demo: NetSuite's answer simulated)",
    )


def netsuite_refusal_history(*, now: datetime) -> list[str]:
    """NetSuite refuses the latest invoice of ``NETSUITE_REFUSED_CUSTOMER``, two
    minutes after it was issued."""
    s = (
        Settlement.objects.filter(
            rail="netsuite",
            state=SettlementState.SUBMITTED,
            invoice__customer__key=NETSUITE_REFUSED_CUSTOMER,
        )
        .select_related("invoice__customer")
        .order_by("-invoice__issued_at")
        .first()
    )
    if s is None:
        return []
    netsuite_refusal(settlement=s, now=min(s.invoice.issued_at + timedelta(minutes=2), now))
    return [f"NetSuite refused {s.invoice.number}: left failed for an operator to retry"]


# ---------------------------------------------------------------------- reads


def demo_summary(*, now: datetime) -> list[str]:
    """Counts per invoice status and settlement state, for the command's last lines."""
    invoices = Counter(Invoice.objects.values_list("status", flat=True))
    settlements = Counter(Settlement.objects.values_list("state", flat=True))
    by_rail = Counter(Settlement.objects.values_list("rail", "state"))
    in_grace = Invoice.objects.filter(status=InvoiceStatus.DRAFT, grace_until__gt=now).count()
    return [
        "invoices: "
        + ", ".join(f"{n} {status}" for status, n in sorted(invoices.items()))
        + f" ({in_grace} draft(s) in their grace period)",
        "settlements: " + ", ".join(f"{n} {state}" for state, n in sorted(settlements.items())),
        "  by rail: "
        + "; ".join(
            f"{rail_label(rail)} {n} {state}" for (rail, state), n in sorted(by_rail.items())
        ),
        f"customers: {Customer.objects.count()}, ACH files: {AchFile.objects.count()}",
    ]


def demo_hosted_invoice(*, now: datetime) -> tuple[Invoice, str] | None:
    """An issued invoice a customer would open from its email (the latest of
    ``HOSTED_INVOICE_CUSTOMER``, else any), and its signed link's path."""
    issued = Invoice.objects.exclude(status=InvoiceStatus.DRAFT).select_related("customer")
    invoice = (
        issued.filter(customer__key=HOSTED_INVOICE_CUSTOMER).order_by("-issued_at").first()
        or issued.order_by("-issued_at").first()
    )
    if invoice is None:
        return None
    return invoice, invoice_hosted_url(invoice=invoice, now=now)
