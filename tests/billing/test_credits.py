"""Credits: granted with who and why, applied at issue by priority then expiry, never
beyond the total, voided and expired through an append-only ledger."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.test import override_settings
from django.urls import NoReverseMatch, clear_url_caches, reverse
from django.utils import timezone

import billing.credits.admin  # noqa: F401  registers the admin pages under test
from billing.catalog.periods import Period
from billing.credits.models import LedgerImmutableError
from billing.credits.services import (
    credit_balance,
    credit_expire_due,
    credit_grant,
    credit_grant_remaining,
    credit_void,
    credits_apply_on_issue,
)
from billing.invoicing.services import (
    InvoiceStateError,
    invoice_draft_for,
    invoice_issue,
    invoice_line_add,
)
from billing.models import CreditGrant, CreditLedgerEntry, Invoice
from tests.factories import CustomerFactory, SubscriptionFactory

OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
ISSUE = NOV + timedelta(days=2)
WITH_CREDITS = override_settings(
    BILLING_INVOICE_ISSUING_HOOKS=["billing.credits.services.credits_apply_on_issue"]
)


@pytest.fixture
def acme(db):
    acme = CustomerFactory(key="acme")
    SubscriptionFactory(customer=acme, start=OCT)
    return acme


@pytest.fixture
def operator(django_user_model):
    return django_user_model.objects.create_user(username="maria", password="x")


def grant(
    account,
    amount,
    *,
    priority=1,
    expires_at=None,
    kind="promotional",
    user=None,
    at=OCT,
    reason="goodwill",
):
    return credit_grant(
        account=account,
        currency="USD",
        amount=Decimal(amount),
        kind=kind,
        priority=priority,
        expires_at=expires_at,
        reason=reason,
        user=user,
        now=at,
    )


def october_invoice(account, extra: str | None = None) -> Invoice:
    draft, _ = invoice_draft_for(account=account, period=Period(OCT, NOV), now=NOV)
    if extra:
        invoice_line_add(invoice=draft, description="Workshop", amount=Decimal(extra), now=NOV)
    with WITH_CREDITS:
        invoice = invoice_issue(invoice=draft, now=ISSUE)
    invoice.refresh_from_db()
    return invoice


def applications(invoice: Invoice) -> list[tuple[int, Decimal]]:
    return [
        (e.grant_id, e.amount)
        for e in CreditLedgerEntry.objects.filter(invoice=invoice).order_by("pk")
    ]


def test_credits_are_applied_at_issue_by_priority_then_soonest_expiry(acme, operator):
    later = grant(acme, "20", priority=2, user=operator)
    never_expires = grant(acme, "10", priority=1)
    expires_soon = grant(acme, "15", priority=1, expires_at=NOV + timedelta(days=30))
    invoice = october_invoice(acme)
    assert (invoice.total, invoice.credits_applied, invoice.amount_due) == (
        Decimal("49.00"),
        Decimal("45.00"),
        Decimal("4.00"),
    )
    assert applications(invoice) == [
        (expires_soon.pk, Decimal("-15")),
        (never_expires.pk, Decimal("-10")),
        (later.pk, Decimal("-20")),
    ]
    assert credit_balance(account=acme, currency="USD", at=ISSUE) == 0
    entry = CreditLedgerEntry.objects.filter(invoice=invoice).first()
    assert (entry.kind, entry.at, entry.actor) == ("apply", ISSUE, "invoice issue")
    assert invoice.number in entry.note


def test_credits_never_exceed_the_invoice_total_and_the_rest_stays_in_the_balance(acme):
    first = grant(acme, "30")
    second = grant(acme, "40")
    invoice = october_invoice(acme)
    assert (invoice.credits_applied, invoice.amount_due) == (Decimal("49.00"), Decimal("0.00"))
    assert applications(invoice) == [(first.pk, Decimal("-30")), (second.pk, Decimal("-19"))]
    assert credit_grant_remaining(grant=second) == Decimal("21")
    assert credit_balance(account=acme, currency="USD", at=ISSUE) == Decimal("21")
    assert credit_balance(account=acme, currency="USD", at=ISSUE - timedelta(seconds=1)) == Decimal(
        "70"
    )
    assert credit_balance(account=acme, currency="EUR", at=ISSUE) == 0


def test_an_invoice_without_credit_is_due_in_full(acme):
    invoice = october_invoice(acme, extra="100")
    assert (invoice.total, invoice.credits_applied, invoice.amount_due) == (
        Decimal("149.00"),
        Decimal("0.00"),
        Decimal("149.00"),
    )


def test_voiding_removes_the_unused_remainder_and_keeps_the_history(acme, operator):
    credit = grant(acme, "100", user=operator, reason="Outage credit, ticket 4411")
    october_invoice(acme)
    voided = credit_void(
        grant=credit,
        reason="Granted to the wrong account",
        user=operator,
        now=ISSUE + timedelta(days=1),
    )
    assert (voided.voided_by, voided.void_reason) == (operator, "Granted to the wrong account")
    assert [(e.kind, e.amount, e.actor) for e in credit.ledger_entries.order_by("at", "pk")] == [
        ("grant", Decimal("100"), "maria"),
        ("apply", Decimal("-49"), "invoice issue"),
        ("void", Decimal("-51"), "maria"),
    ]
    assert credit.ledger_entries.get(kind="grant").note == "Outage credit, ticket 4411"
    assert credit_balance(account=acme, currency="USD", at=ISSUE + timedelta(days=2)) == 0
    with pytest.raises(ValidationError):
        credit_void(grant=credit, reason="again", user=operator, now=ISSUE + timedelta(days=2))


def test_a_voided_grant_is_not_applied(acme, operator):
    credit = grant(acme, "100")
    credit_void(grant=credit, reason="mistake", user=operator, now=OCT + timedelta(days=1))
    assert october_invoice(acme).credits_applied == 0


def test_expired_grants_are_not_applied_and_their_remainder_expires_once(acme):
    expired = grant(acme, "30", expires_at=OCT + timedelta(days=20))
    live = grant(acme, "5", priority=9)
    invoice = october_invoice(acme)
    assert applications(invoice) == [(live.pk, Decimal("-5"))]
    assert credit_expire_due(now=ISSUE) == {"grants": 1, "amount": {"USD": "30.0000"}}
    assert credit_expire_due(now=ISSUE + timedelta(days=1)) == {"grants": 0, "amount": {}}
    entry = expired.ledger_entries.get(kind="expire")
    assert (entry.amount, entry.at) == (Decimal("-30"), expired.expires_at)  # dated at the expiry
    assert credit_balance(account=acme, currency="USD", at=OCT + timedelta(days=19)) == Decimal(
        "35"
    )
    assert credit_balance(account=acme, currency="USD", at=OCT + timedelta(days=21)) == Decimal("5")


def test_issuing_again_never_applies_credit_twice(acme):
    credit = grant(acme, "100")
    invoice = october_invoice(acme)
    with WITH_CREDITS, pytest.raises(InvoiceStateError):
        invoice_issue(invoice=invoice, now=ISSUE + timedelta(hours=1))
    # the hook itself is idempotent: a retry reports what was applied and writes nothing
    assert credits_apply_on_issue(invoice=invoice, now=ISSUE + timedelta(hours=2)) == Decimal("49")
    assert applications(invoice) == [(credit.pk, Decimal("-49"))]
    # and the database refuses a second application of a grant to an invoice
    with pytest.raises(IntegrityError), transaction.atomic():
        CreditLedgerEntry.objects.create(
            account=acme,
            currency="USD",
            grant=credit,
            invoice=invoice,
            kind="apply",
            amount=Decimal("-1"),
            at=ISSUE,
        )


def test_the_ledger_is_append_only(acme):
    entry = grant(acme, "10").ledger_entries.get()
    entry.amount = Decimal("1000")
    with pytest.raises(LedgerImmutableError):
        entry.save()
    with pytest.raises(LedgerImmutableError):
        entry.delete()
    with pytest.raises(LedgerImmutableError):
        CreditLedgerEntry.objects.filter(pk=entry.pk).update(amount=Decimal("1000"))
    for sql in (
        "UPDATE billing_creditledgerentry SET amount = 1000",
        "DELETE FROM billing_creditledgerentry",
    ):
        with (
            pytest.raises(IntegrityError, match="append_only"),
            transaction.atomic(),
            connection.cursor() as c,
        ):
            c.execute(sql)
    assert credit_balance(account=acme, currency="USD", at=NOV) == Decimal("10")


def test_a_grant_needs_a_reason_a_positive_amount_and_the_billing_account(acme):
    child = CustomerFactory(key="acme-eu", parent=acme, bill_to_parent=True)
    with pytest.raises(ValidationError) as error:
        credit_grant(
            account=child,
            currency="USD",
            amount=Decimal("-5"),
            kind="paid",
            priority=1,
            expires_at=OCT,
            reason=" ",
            user=None,
            now=OCT,
        )
    assert set(error.value.message_dict) == {"account", "amount", "reason", "expires_at"}
    assert CreditGrant.objects.count() == 0


# ---------------------------------------------------------------- admin


@pytest.fixture
def admin_urls():
    try:
        reverse("admin:billing_creditgrant_changelist")
    except NoReverseMatch:  # the URLconf was built before this module registered its admins
        import config.urls

        importlib.reload(config.urls)
        clear_url_caches()


def test_operators_grant_credit_with_a_reason_and_it_records_who(
    admin_client, admin_user, acme, admin_urls
):
    add = reverse("admin:billing_creditgrant_add")
    assert admin_client.get(add).status_code == 200
    refused = admin_client.post(
        add, {"account": acme.pk, "amount": "25", "kind": "paid", "priority": "1", "reason": ""}
    )
    assert refused.status_code == 200 and CreditGrant.objects.count() == 0
    response = admin_client.post(
        add,
        {
            "account": acme.pk,
            "amount": "25",
            "kind": "paid",
            "priority": "1",
            "reason": "Prepaid top-up, PO 981",
        },
    )
    credit = CreditGrant.objects.get()
    assert response.status_code == 302
    assert (credit.created_by, credit.currency, credit.amount, credit.reason) == (
        admin_user,
        "USD",
        Decimal("25"),
        "Prepaid top-up, PO 981",
    )
    page = admin_client.get(
        reverse("admin:billing_creditgrant_change", args=[credit.pk])
    ).content.decode()
    assert "25.00 USD" in page and "Prepaid top-up, PO 981" in page and "credit-void" in page
    assert admin_client.get(reverse("admin:billing_creditgrant_changelist")).status_code == 200
    assert (
        admin_client.get(reverse("admin:billing_creditledgerentry_changelist")).status_code == 200
    )


def test_operators_void_a_grant_with_a_reason(admin_client, admin_user, acme, admin_urls):
    credit = grant(acme, "40")
    void = reverse("admin:billing_creditgrant_void", args=[credit.pk])
    assert admin_client.get(void).status_code == 200
    assert admin_client.post(void, {"reason": ""}).status_code == 200  # a reason is required
    credit.refresh_from_db()
    assert credit.voided_at is None
    assert admin_client.post(void, {"reason": "Customer churned"}).status_code == 302
    credit.refresh_from_db()
    assert (credit.voided_by, credit.void_reason) == (admin_user, "Customer churned")
    other = grant(acme, "15")
    listing = reverse("admin:billing_creditgrant_changelist")
    confirm = admin_client.post(
        listing, {"action": "void_selected", "_selected_action": [other.pk]}
    )
    assert confirm.status_code == 200 and b"Void credit" in confirm.content
    admin_client.post(
        listing,
        {
            "action": "void_selected",
            "_selected_action": [other.pk],
            "post": "yes",
            "reason": "Duplicate",
        },
    )
    other.refresh_from_db()
    assert other.void_reason == "Duplicate"
    # the admin voids at the wall clock: the balance is 55 before and 0 after
    assert credit_balance(account=acme, currency="USD", at=NOV) == Decimal("55")
    assert credit_balance(account=acme, currency="USD", at=timezone.now()) == 0
