"""The billing clock end to end: ``manage.py billing_run`` closes a month of usage into
drafts, waits out the grace period, issues, renders and settles; and it stays correct
when two runs race each other or a run is killed in the middle and started again.

These tests commit (the rollup and the runs in other processes only see committed
data), so they are ``transaction=True``; the runs in other processes use the test
database through ``DATABASE_URL``.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.db import connection

from billing.catalog.periods import Period
from billing.catalog.rating import rate_period
from billing.catalog.services import PlanVersionSpec, RateCardSpec, plan_save, subscription_create
from billing.models import Invoice, InvoiceEvent, InvoiceStatus, LineKind
from billing.run import BillingRunResult
from customers.models import Customer
from customers.services import consumer_mapping_create, customer_create
from metering.services import feature_create, meter_create
from rails.models import Settlement, SettlementState
from tests.metering.conftest import cloud_event

OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
GRACE = timedelta(hours=settings.BILLING_GRACE_PERIOD_HOURS)
# The invoices are numbered in the year of the billing clock that issues them.
PREFIX = f"{settings.BILLING_INVOICE_PREFIX}-{NOV.year}-"


# ---------------------------------------------------------------- arrange


def catalog_create() -> dict:
    """Two meters, their features and three plans priced three ways."""
    requests = meter_create(key="api_requests", event_type="request", aggregation="COUNT")
    tokens = meter_create(
        key="llm_tokens", event_type="llm", aggregation="SUM", value_property="$.tokens"
    )
    calls = feature_create(key="api_calls", name="API calls", meter=requests)
    llm = feature_create(key="tokens", name="LLM tokens", meter=tokens)

    def plan(key: str, cards: tuple[RateCardSpec, ...], minimum: str = "0"):
        spec = PlanVersionSpec(
            currency="USD", cadence="monthly", minimum_commitment=Decimal(minimum), rate_cards=cards
        )
        return plan_save(key=key, name=key.title(), spec=spec)[1]

    return {
        # $49 a month, then $0.01 a call past the first 100.
        "starter": plan(
            "starter",
            (
                RateCardSpec(
                    key="platform",
                    name="Platform fee",
                    price={"model": "flat", "amount": "49.00", "timing": "in_arrears"},
                ),
                RateCardSpec(
                    key="calls",
                    feature=calls,
                    price={"model": "unit", "unit_price": "0.01", "included": 100},
                ),
            ),
        ),
        # $20 a month; tokens at $0.01 up to 1,000, then $0.005.
        "growth": plan(
            "growth",
            (
                RateCardSpec(
                    key="platform",
                    name="Platform fee",
                    price={"model": "flat", "amount": "20.00", "timing": "in_arrears"},
                ),
                RateCardSpec(
                    key="tokens",
                    feature=llm,
                    price={
                        "model": "graduated",
                        "tiers": [
                            {"up_to": 1000, "unit_price": "0.01"},
                            {"up_to": None, "unit_price": "0.005"},
                        ],
                    },
                ),
            ),
        ),
        # $2.50 per started 1,000 tokens, at least $25 a month.
        "scale": plan(
            "scale",
            (
                RateCardSpec(
                    key="tokens",
                    feature=llm,
                    price={"model": "package", "package_size": 1000, "package_price": "2.50"},
                ),
            ),
            minimum="25",
        ),
    }


def account_create(
    plans: dict, *, key: str, plan: str, rail: str = "manual", parent: Customer | None = None
) -> Customer:
    """A customer mapped to the gateway consumer ``{key}-gw`` since September; subscribed
    to ``plan`` from October 1st unless it is a subsidiary (billed to its parent)."""
    customer = customer_create(
        key=key, name=key.replace("-", " ").title(), currency="USD", rail=rail, parent=parent
    )
    consumer_mapping_create(
        consumer_key=f"{key}-gw", customer=customer, valid_from=OCT - timedelta(days=30)
    )
    if parent is None:
        subscription_create(customer=customer, plan_version=plans[plan], start=OCT)
    return customer


def month_of(
    key: str, n: int, *, type: str = "request", start: datetime = OCT, days: int = 31, **data
) -> list[dict]:
    """``n`` events of consumer ``{key}-gw`` spread evenly over ``days`` from ``start``."""
    step = timedelta(days=days) / n
    return [
        cloud_event(
            f"{key}-{type}-{start:%m%d}-{i}",
            type=type,
            subject=f"{key}-gw",
            time=(start + step * i).isoformat(),
            **data,
        )
        for i in range(n)
    ]


def horizon_wait(timeout: float = 120) -> None:
    """Wait until every transaction that stored events has finished, server-wide: the
    rollup only takes events below ``pg_snapshot_xmin``, and a transaction left open
    anywhere on the server (another test run) holds that horizon back."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(xid), 0) FROM metering_event")
        newest = cursor.fetchone()[0]
        while True:
            cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            if cursor.fetchone()[0] > newest:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"an older transaction on the server held the horizon for {timeout} s")
            time.sleep(0.1)


def run_report(output: str) -> dict[str, str]:
    """``billing_run``'s report (``name: value`` lines) as a dict."""
    return dict(line.split(": ", 1) for line in output.splitlines())


def billing_run(now: datetime) -> dict[str, str]:
    """``manage.py billing_run --now``, in this process; its report as a dict."""
    out = io.StringIO()
    call_command("billing_run", "--now", now.isoformat(), stdout=out)
    return run_report(out.getvalue())


def database_url() -> str:
    """The test database as a URL, for ``manage.py`` in another process."""
    db = connection.settings_dict
    host = db["HOST"] or ""
    user = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    if host.startswith("/"):
        return f"postgres://{user}@/{db['NAME']}?host={host}"
    return f"postgres://{user}@{host}:{db['PORT'] or 5432}/{db['NAME']}"


def billing_run_process(
    now: datetime, *, media: Path, settings_module: str = "config.settings", **env: str
) -> subprocess.Popen:
    """``python manage.py billing_run --now`` in its own process on the test database,
    its tasks run in that process (no broker), its PDFs stored under ``media``."""
    return subprocess.Popen(
        [sys.executable, "manage.py", "billing_run", "--now", now.isoformat()],
        cwd=settings.BASE_DIR,
        env={
            **os.environ,
            "DATABASE_URL": database_url(),
            "DJANGO_SETTINGS_MODULE": settings_module,
            "CELERY_TASK_ALWAYS_EAGER": "true",
            "MEDIA_ROOT": str(media),
            "LOG_LEVEL": "WARNING",
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(process: subprocess.Popen, timeout: float = 240) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"billing_run exited {process.returncode}:\n{out}\n{err}"
    return out


def numbers_issued() -> list[int]:
    """The sequence part of every issued invoice number, sorted."""
    return sorted(
        int(number.removeprefix(PREFIX))
        for number in Invoice.objects.exclude(number=None).values_list("number", flat=True)
    )


def assert_billed_once_each(accounts: list[Customer]) -> None:
    """Exactly one issued invoice per account for October, numbered 1..N without a gap or
    a duplicate, each priced as rating the account's period prices it, issued once, with
    one settlement."""
    invoices = list(Invoice.objects.select_related("customer").order_by("number"))
    assert sorted(i.customer.key for i in invoices) == sorted(a.key for a in accounts)
    assert {(i.period_start, i.period_end) for i in invoices} == {(OCT, NOV)}
    assert {i.status for i in invoices} == {InvoiceStatus.ISSUED}
    assert numbers_issued() == list(range(1, len(accounts) + 1))
    for invoice in invoices:
        rated = rate_period(account=invoice.customer, period=Period(OCT, NOV))
        assert (invoice.subtotal, invoice.total) == (rated.subtotal, rated.total), invoice.number
        assert invoice.lines.count() == len(rated.lines), invoice.number
    issued_events = InvoiceEvent.objects.filter(to_status=InvoiceStatus.ISSUED)
    assert sorted(issued_events.values_list("invoice_id", flat=True)) == sorted(
        i.pk for i in invoices
    )
    assert Settlement.objects.count() == len(invoices)
    assert not Invoice.objects.filter(settlement=None).exists()


@pytest.fixture
def plans(transactional_db):
    return catalog_create()


# ---------------------------------------------------------------- the clock, end to end


@pytest.mark.django_db(transaction=True)
def test_a_month_of_usage_is_drafted_at_period_end_held_for_grace_then_issued_and_settled(
    plans, ingest
):
    account_create(plans, key="acme", plan="starter", rail="stripe")
    account_create(plans, key="initech", plan="growth", rail="netsuite")
    globex = account_create(plans, key="globex", plan="scale", rail="manual")
    account_create(plans, key="globex-eu", plan="scale", parent=globex)
    events = [
        *month_of("acme", 300),  # 300 calls, 100 included: 200 × $0.01
        *month_of("acme", 5, start=NOV + timedelta(hours=12), days=1),  # November's
        *month_of("initech", 30, type="llm", tokens=100),  # 3,000 tokens
        *month_of("globex", 30, type="llm", tokens=150),  # 4,500 tokens
        *month_of("globex-eu", 10, type="llm", tokens=150),  # 1,500 more for the group
    ]
    ingest(*events)
    horizon_wait()

    mid_month = billing_run(OCT + timedelta(days=20))
    assert mid_month["events rolled up"] == str(len(events))
    assert mid_month["drafts created"] == "0"
    assert not Invoice.objects.exists()

    at_period_end = billing_run(NOV + timedelta(hours=1))
    assert (at_period_end["drafts created"], at_period_end["invoices issued"]) == ("3", "0")
    drafts = {i.customer.key: i for i in Invoice.objects.select_related("customer")}
    assert {k: (d.status, d.number, d.total) for k, d in drafts.items()} == {
        "acme": (InvoiceStatus.DRAFT, None, Decimal("51.00")),  # $49 + $2.00
        "initech": (InvoiceStatus.DRAFT, None, Decimal("40.00")),  # $20 + $10 + $10
        # 6,000 tokens of the group: 6 packages, $15.00, trued up to the $25 minimum.
        "globex": (InvoiceStatus.DRAFT, None, Decimal("25.00")),
    }
    globex_lines = {
        (line.kind, line.customer.key): line.amount for line in drafts["globex"].lines.all()
    }
    assert globex_lines == {
        (LineKind.USAGE, "globex"): Decimal("11.25"),  # 4,500 of 6,000 tokens
        (LineKind.USAGE, "globex-eu"): Decimal("3.75"),
        (LineKind.MINIMUM_TRUE_UP, "globex"): Decimal("10.00"),
    }
    assert all(d.grace_until == NOV + GRACE for d in drafts.values())

    still_in_grace = billing_run(NOV + GRACE - timedelta(minutes=1))
    assert still_in_grace["invoices issued"] == "0"
    assert set(Invoice.objects.values_list("status", flat=True)) == {InvoiceStatus.DRAFT}

    after_grace = billing_run(NOV + GRACE + timedelta(hours=1))
    assert after_grace["invoices issued"] == "3"
    issued = {i.customer.key: i for i in Invoice.objects.select_related("customer", "settlement")}
    assert sorted(i.number for i in issued.values()) == [f"{PREFIX}{n:06d}" for n in (1, 2, 3)]
    assert {k: (i.status, i.total) for k, i in issued.items()} == {
        "acme": (InvoiceStatus.ISSUED, Decimal("51.00")),
        "initech": (InvoiceStatus.ISSUED, Decimal("40.00")),
        "globex": (InvoiceStatus.ISSUED, Decimal("25.00")),
    }
    for invoice in issued.values():
        assert default_storage.open(invoice.pdf.name).read().startswith(b"%PDF"), invoice.number
    settlements = {k: i.settlement for k, i in issued.items()}
    assert {k: (s.rail, s.sandbox) for k, s in settlements.items()} == {
        "acme": ("stripe", True),
        "initech": ("netsuite", True),
        "globex": ("manual", False),
    }
    for key, settlement in settlements.items():  # each was driven: submitted on its rail
        assert settlement.attempts == 1, key
        assert settlement.state == SettlementState.SUBMITTED, (key, settlement.state)
        assert issued[key].settlement_state == settlement.state
    for key in ("acme", "initech"):  # sandbox: the requests are built and kept, none sent
        exchanges = list(settlements[key].exchanges.all())
        assert exchanges and not any(e.sent for e in exchanges), key

    def state() -> list[tuple]:
        return [
            *Invoice.objects.order_by("pk").values_list(
                "pk", "status", "number", "total", "pdf", "settlement_state", "updated_at"
            ),
            *Settlement.objects.order_by("pk").values_list(
                "pk", "state", "attempts", "next_action_at", "updated_at"
            ),
            (InvoiceEvent.objects.count(),),
        ]

    before = state()
    again = billing_run(NOV + GRACE + timedelta(hours=1))
    assert {k: again[k] for k in ("drafts created", "invoices issued", "PDFs rendered")} == {
        "drafts created": "0",
        "invoices issued": "0",
        "PDFs rendered": "0",
    }
    assert state() == before


# ---------------------------------------------------------------- races and crashes


def accounts_with_usage(plans: dict, ingest, n: int) -> list[Customer]:
    """``n`` accounts on the three plans and rails, each with a month of usage."""
    rails = ["manual", "stripe", "netsuite"]
    names = ["starter", "growth", "scale"]
    accounts, events = [], []
    for i in range(n):
        key = f"account-{i:03d}"
        plan = names[i % 3]
        accounts.append(account_create(plans, key=key, plan=plan, rail=rails[i % 3]))
        if plan == "starter":
            events += month_of(key, 100 + 7 * i)
        else:
            events += month_of(key, 20, type="llm", tokens=50 + 13 * i)
    ingest(*events)
    return accounts


@pytest.mark.django_db(transaction=True)
def test_two_billing_runs_at_once_issue_the_same_invoices_as_one(plans, ingest, tmp_path):
    accounts = accounts_with_usage(plans, ingest, 30)
    after_grace = NOV + GRACE + timedelta(hours=1)

    runs = [billing_run_process(after_grace, media=tmp_path / "media") for _ in range(2)]
    reports = [finished(run) for run in runs]

    assert_billed_once_each(accounts)
    issued = [int(run_report(report)["invoices issued"]) for report in reports]
    assert sum(issued) == len(accounts)  # each invoice was issued by exactly one of them
    assert InvoiceEvent.objects.filter(to_status=InvoiceStatus.DRAFT).count() == len(accounts)
    for invoice in Invoice.objects.all():
        assert default_storage.open(invoice.pdf.name).read().startswith(b"%PDF")


@pytest.mark.django_db(transaction=True)
def test_a_run_killed_while_issuing_leaves_no_gap_and_no_duplicate_when_run_again(
    plans, ingest, tmp_path
):
    accounts = accounts_with_usage(plans, ingest, 12)
    after_grace = NOV + GRACE + timedelta(hours=1)
    log = tmp_path / "issuing.log"
    stall_at = 5

    run = billing_run_process(
        after_grace,
        media=tmp_path / "media",
        settings_module="tests.billing.slow_settings",
        SLOW_HOOK_LOG=str(log),
        SLOW_HOOK_SECONDS="0.2",
        SLOW_HOOK_STALL_AT=str(stall_at),
    )
    try:
        # Kill it while it holds the fifth number in an open issuing transaction (the
        # hook stalls there), the first four invoices committed.
        deadline = time.monotonic() + 120
        while not (log.exists() and len(log.read_text().split()) == stall_at):
            assert run.poll() is None, f"the run ended before it was killed:\n{run.communicate()}"
            assert time.monotonic() < deadline, "the run never got to its fifth invoice"
            time.sleep(0.05)
        run.send_signal(signal.SIGKILL)
        run.wait(30)
    finally:
        if run.poll() is None:
            run.kill()
        run.communicate()
    assert run.returncode == -signal.SIGKILL
    taken = log.read_text().split()
    assert taken == [f"{PREFIX}{n:06d}" for n in range(1, stall_at + 1)]
    assert numbers_issued() == list(range(1, stall_at))  # the fifth was never committed
    assert Invoice.objects.filter(status=InvoiceStatus.DRAFT).count() == len(accounts) - (
        stall_at - 1
    )

    report = billing_run(after_grace)

    assert int(report["invoices issued"]) == len(accounts) - (stall_at - 1)
    assert_billed_once_each(accounts)  # numbers 1..12: the fifth was reused, not skipped
    for invoice in Invoice.objects.all():  # the killed run's missing PDFs are made up for
        assert default_storage.open(invoice.pdf.name).read().startswith(b"%PDF")


# ---------------------------------------------------------------- the races, one at a time
#
# Two runs at once (above) only meet these interleavings by chance: the other run issues
# a draft in the instant between this run reading it and rating it, or makes the drafts
# this one is about to make. These tests replay each one deterministically: the other run
# is another thread, on its own database connection, acting at exactly that instant.


def in_another_connection(work) -> None:
    """Run ``work()`` in another thread, so on another connection, and wait for it."""
    import threading

    from django.db import connections

    errors: list[BaseException] = []

    def target():
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(60)
    if errors:
        raise errors[0]


@pytest.mark.django_db(transaction=True)
def test_a_draft_another_run_issues_while_this_one_refreshes_drafts_is_left_to_it(
    plans, monkeypatch
):
    from billing.invoicing import drafts
    from billing.invoicing import services as invoicing

    account = account_create(plans, key="acme", plan="starter")
    invoicing.invoice_draft_for(account=account, period=Period(OCT, NOV), now=NOV)
    after_grace = NOV + GRACE + timedelta(hours=1)

    def changed_and_meanwhile_issued(*, checks) -> set[int]:
        # This run has read the draft; the other run issues it now. And usage did change
        # (a late event), which is when a refresh rates the draft again.
        draft = Invoice.objects.get(customer=account)
        in_another_connection(lambda: invoicing.invoice_issue(invoice=draft, now=after_grace))
        return set(range(len(checks)))

    monkeypatch.setattr(drafts, "usage_changed_since_many", changed_and_meanwhile_issued)
    assert invoicing.drafts_refresh(now=after_grace) == 0
    assert Invoice.objects.get(customer=account).status == InvoiceStatus.ISSUED


@pytest.mark.django_db(transaction=True)
def test_drafts_another_run_makes_while_this_one_rates_them_are_left_to_it(plans, monkeypatch):
    # A draft is created already rated, in one transaction with its lines, so no other
    # run can issue it half-made. The interleaving left: the other run makes the same
    # drafts between this run finding them missing and inserting its own. This run's
    # bulk insert then meets the unique constraint, and it goes one by one, finding them.
    from billing.invoicing import recompute
    from billing.invoicing import services as invoicing

    accounts = [account_create(plans, key=f"acme-{i}", plan="starter") for i in range(3)]
    load, calls = recompute._Context.load, []

    def the_other_run_closes_first(*args, **kwargs):
        if not calls:
            calls.append(1)
            in_another_connection(lambda: invoicing.periods_close(now=NOV + timedelta(hours=1)))
        return load(*args, **kwargs)

    monkeypatch.setattr(recompute._Context, "load", the_other_run_closes_first)
    result = invoicing.periods_close(now=NOV + timedelta(hours=1))

    assert (result.created, result.existing) == (0, 3)
    assert Invoice.objects.filter(customer__in=accounts).count() == 3
    assert InvoiceEvent.objects.filter(to_status=InvoiceStatus.DRAFT).count() == 3
    assert all(invoice.lines.exists() for invoice in Invoice.objects.all())


# ---------------------------------------------------------------- one bad account


@pytest.mark.django_db(transaction=True)
def test_an_account_that_cannot_be_issued_holds_up_no_other_and_stays_a_draft(
    plans, monkeypatch, caplog
):
    # Issuing works a chunk per transaction; when one draft's hook fails, the chunk is
    # redone one draft at a time: the others are issued, numbered without a gap, and the
    # failing one stays a draft, logged, for the next run.
    from billing.invoicing import services as invoicing
    from tests.billing import slow_hooks

    accounts = [account_create(plans, key=f"acme-{i}", plan="starter") for i in range(5)]
    bad = accounts[2]
    hooks = settings.BILLING_INVOICE_ISSUING_HOOKS
    monkeypatch.setattr(slow_hooks, "FAIL_FOR", {bad.pk})
    monkeypatch.setattr(
        settings,
        "BILLING_INVOICE_ISSUING_HOOKS",
        [*hooks, "tests.billing.slow_hooks.fail_for_some"],
    )
    after_grace = NOV + GRACE + timedelta(hours=1)
    invoicing.periods_close(now=NOV + timedelta(hours=1))

    assert invoicing.invoices_issue_due(now=after_grace) == 4

    assert Invoice.objects.get(customer=bad).status == InvoiceStatus.DRAFT
    numbers = sorted(Invoice.objects.exclude(number=None).values_list("number", flat=True))
    assert numbers == [f"{PREFIX}{n:06d}" for n in range(1, 5)]
    assert "not issued: left for the next run" in caplog.text
    monkeypatch.setattr(slow_hooks, "FAIL_FOR", set())
    assert invoicing.invoices_issue_due(now=after_grace) == 1  # the next run issues it
    assert Invoice.objects.get(customer=bad).number == f"{PREFIX}000005"


@pytest.mark.django_db(transaction=True)
def test_an_account_that_cannot_be_rated_holds_up_no_other_draft(plans, monkeypatch, caplog):
    from billing.invoicing import recompute
    from billing.invoicing import services as invoicing

    accounts = [account_create(plans, key=f"acme-{i}", plan="starter") for i in range(4)]
    rate = recompute.rate_period

    def fails_for_one(*, account, **kwargs):
        if account.pk == accounts[1].pk:
            raise ValueError("a price that cannot be parsed")
        return rate(account=account, **kwargs)

    monkeypatch.setattr(recompute, "rate_period", fails_for_one)
    result = invoicing.periods_close(now=NOV + timedelta(hours=1))

    assert (result.created, result.existing) == (3, 0)  # the fourth is left for next time
    assert not Invoice.objects.filter(customer=accounts[1]).exists()
    assert "no draft for" in caplog.text
    monkeypatch.setattr(recompute, "rate_period", rate)
    assert invoicing.periods_close(now=NOV + timedelta(hours=2)).created == 1


def test_the_report_says_what_each_step_did_in_words_not_python_dicts():
    result = BillingRunResult(
        events_rolled_up=990_000,
        drafts_created=3,
        invoices_issued=2,
        pdfs_rendered=2,
        extra={
            "settlements_drive_due": {"submitted": 3, "failed": 1},
            "thresholds_check": {"accounts": 12, "notified": 0},
            "deliveries_send_due": {"attempted": 2, "delivered": 1, "failed": 0, "given_up": 1},
            "credit_expire_due": {"grants": 2, "amount": {"EUR": "5.00", "USD": "10.00"}},
            "reconcile_ledgers": {},
        },
    )
    assert result.report_lines() == [
        "events rolled up: 990,000",
        "drafts created: 3",
        "drafts refreshed: 0",
        "invoices issued: 2",
        "PDFs rendered: 2",
        "settlements driven: 3 submitted, 1 failed",
        "thresholds checked: 12 accounts",
        "webhook deliveries: 2 attempted, 1 delivered, 1 given up",
        "credits expired: 2 grants, 5.00 EUR, 10.00 USD",
        "reconcile ledgers: none",
    ]


@pytest.mark.django_db
def test_the_command_prints_the_report_of_a_run_with_nothing_to_do():
    out = io.StringIO()
    call_command("billing_run", "--now", "2026-12-02T00:00:00Z", stdout=out)
    assert out.getvalue().splitlines() == [
        "events rolled up: 0",
        "drafts created: 0",
        "drafts refreshed: 0",
        "invoices issued: 0",
        "PDFs rendered: 0",
        "settlements driven: none",
        "thresholds checked: none",
        "webhook deliveries: none",
        "credits expired: none",
    ]
