"""Credits: grant, void, expire and apply a billing account's prepaid balance.

Every movement is a ledger entry; balances are sums over the ledger. Credits are applied
to an invoice inside its issuing transaction (``credits_apply_on_issue``, registered in
``BILLING_INVOICE_ISSUING_HOOKS``): the account's grants are locked, used by priority
(lower number first), then soonest expiry, never beyond the invoice's total, and each
grant is applied at most once per invoice (a unique constraint, not only a lock).
Services take ``now``; only the edges read the clock.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q, Sum

from billing.credits.models import CreditKind, LedgerKind
from billing.models import CreditGrant, CreditLedgerEntry, Invoice
from core.money import UnknownCurrency, currency_validate, quantize, zero
from customers.models import Customer
from customers.selectors import customer_billing_account

ZERO = Decimal(0)


def _actor(user) -> str:
    return (user.get_username() if user is not None else "") or "system"


def _remaining(grant_ids: list[int], *, at: datetime | None = None) -> dict[int, Decimal]:
    """What is left on each grant according to the ledger (entries up to ``at``)."""
    entries = CreditLedgerEntry.objects.filter(grant_id__in=grant_ids)
    if at is not None:
        entries = entries.filter(at__lte=at)
    sums = dict(entries.values("grant_id").annotate(s=Sum("amount")).values_list("grant_id", "s"))
    return {pk: sums.get(pk) or ZERO for pk in grant_ids}


def credit_grant_remaining(*, grant: CreditGrant) -> Decimal:
    """The unused amount of one grant, from the ledger."""
    return _remaining([grant.pk])[grant.pk]


def credit_grant(
    *,
    account: Customer,
    currency: str,
    amount: Decimal,
    kind: str,
    priority: int = 1,
    expires_at: datetime | None,
    reason: str,
    user,
    now: datetime,
) -> CreditGrant:
    """Give ``amount`` of credit to a billing account, and write its ledger entry.

    Raises ``ValidationError`` when the customer is billed on another account, the
    currency is unknown, the amount is not positive, the expiry is not in the future or
    no reason is given.
    """
    errors: dict[str, str] = {}
    if not (reason or "").strip():
        errors["reason"] = "Say why the credit is granted."
    try:
        currency = currency_validate(currency)
    except UnknownCurrency as exc:
        raise ValidationError({"currency": str(exc)}) from exc
    amount = quantize(Decimal(amount), currency)
    if amount <= 0:
        errors["amount"] = f"A credit is a positive amount of {currency}."
    if kind not in CreditKind.values:
        errors["kind"] = f"Kind is one of {', '.join(CreditKind.values)}."
    if expires_at is not None and expires_at <= now:
        errors["expires_at"] = "The expiry must be in the future."
    billed_on = customer_billing_account(customer=account)
    if billed_on.pk != account.pk:
        errors["account"] = (
            f"{account.key} is billed on {billed_on.key}; grant credit to {billed_on.key}."
        )
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        grant = CreditGrant.objects.create(
            account=account,
            currency=currency,
            amount=amount,
            kind=kind,
            priority=priority,
            expires_at=expires_at,
            reason=reason.strip(),
            created_by=user,
            created_at=now,
        )
        CreditLedgerEntry.objects.create(
            account=account,
            currency=currency,
            grant=grant,
            kind=LedgerKind.GRANT,
            amount=amount,
            at=now,
            actor=_actor(user),
            note=reason.strip()[:500],
        )
    return grant


def credit_void(*, grant: CreditGrant, reason: str, user, now: datetime) -> CreditGrant:
    """Void a grant: its unused remainder leaves the balance (a ``void`` entry); what it
    already paid stays paid, and its history stays in the ledger.

    Raises ``ValidationError`` without a reason or when the grant is already voided.
    """
    if not (reason or "").strip():
        raise ValidationError({"reason": "Say why the credit is voided."})
    with transaction.atomic():
        locked = CreditGrant.objects.select_for_update().get(pk=grant.pk)
        if locked.voided_at is not None:
            raise ValidationError(f"This credit was already voided on {locked.voided_at:%Y-%m-%d}.")
        left = _remaining([locked.pk])[locked.pk]
        if left > 0:
            CreditLedgerEntry.objects.create(
                account_id=locked.account_id,
                currency=locked.currency,
                grant=locked,
                kind=LedgerKind.VOID,
                amount=-left,
                at=now,
                actor=_actor(user),
                note=reason.strip()[:500],
            )
        locked.voided_at, locked.voided_by, locked.void_reason = now, user, reason.strip()
        locked.save(update_fields=["voided_at", "voided_by", "void_reason"])
    return locked


def credit_balance(*, account: Customer, currency: str, at: datetime) -> Decimal:
    """The account's credit balance in ``currency`` at ``at``, from the ledger.

    A grant that has expired by ``at`` counts nothing, whether or not its ``expire``
    entry has been written yet (expiry entries are dated at the grant's expiry).
    """
    rows = (
        CreditLedgerEntry.objects.filter(account=account, currency=currency.upper(), at__lte=at)
        .exclude(grant__expires_at__lte=at)
        .aggregate(s=Sum("amount"))
    )
    return rows["s"] or zero(currency.upper())


def credit_balances(*, account: Customer, at: datetime) -> dict[str, Decimal]:
    """The account's balance in every currency it has credit in."""
    currencies = (
        CreditGrant.objects.filter(account=account)
        .values_list("currency", flat=True)
        .distinct()
        .order_by()
    )
    return {c: credit_balance(account=account, currency=c, at=at) for c in sorted(currencies)}


def _usable_grants(account_id: int, currency: str, now: datetime):
    """The account's live grants in ``currency``, in the order they are used, locked."""
    return list(
        CreditGrant.objects.select_for_update()
        .filter(
            account_id=account_id, currency=currency, voided_at__isnull=True, created_at__lte=now
        )
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by("priority", F("expires_at").asc(nulls_last=True), "created_at", "pk")
    )


def credits_apply_on_issue(*, invoice: Invoice, now: datetime) -> Decimal:
    """Apply the account's credit to ``invoice`` as it is issued; sets
    ``invoice.credits_applied`` (the issuing code then computes the amount due and
    freezes both). Returns the amount applied.

    Runs inside the issuing transaction. Idempotent: when the invoice already has
    applications (a retried hook), they are reported again and nothing is applied twice.
    """
    existing = CreditLedgerEntry.objects.filter(invoice=invoice, kind=LedgerKind.APPLY).aggregate(
        s=Sum("amount")
    )
    if existing["s"] is not None:
        invoice.credits_applied = -existing["s"]
        return invoice.credits_applied
    applied = zero(invoice.currency)
    left = invoice.total
    if left > 0:
        grants = _usable_grants(invoice.customer_id, invoice.currency, now)
        remaining = _remaining([g.pk for g in grants])
        entries = []
        for grant in grants:
            take = min(remaining[grant.pk], left)
            if take <= 0:
                continue
            entries.append(CreditLedgerEntry(
                account_id=invoice.customer_id, currency=invoice.currency, grant=grant, invoice=invoice,
                kind=LedgerKind.APPLY, amount=-take, at=now, actor="invoice issue",
                note=f"Applied to {invoice.number or invoice.pk}",
            ))  # fmt: skip
            left -= take
            applied += take
            if left <= 0:
                break
        CreditLedgerEntry.objects.bulk_create(entries)
    invoice.credits_applied = applied
    return applied


def credits_apply_on_issue_many(*, invoices: list[Invoice], now: datetime) -> None:
    """``credits_apply_on_issue`` for many invoices (a billing run's chunk): an invoice
    whose account holds no grant in its currency (nor an earlier application) gets none
    without a query of its own."""
    holders = set(
        CreditGrant.objects.filter(
            account_id__in={i.customer_id for i in invoices}, voided_at__isnull=True
        ).values_list("account_id", "currency")
    )
    applied = set(
        CreditLedgerEntry.objects.filter(
            invoice__in=[i.pk for i in invoices], kind=LedgerKind.APPLY
        ).values_list("invoice_id", flat=True)
    )
    for invoice in invoices:
        if (invoice.customer_id, invoice.currency) in holders or invoice.pk in applied:
            credits_apply_on_issue(invoice=invoice, now=now)
        else:
            invoice.credits_applied = zero(invoice.currency)


credits_apply_on_issue.many = credits_apply_on_issue_many


def credit_expire_due(*, now: datetime) -> dict:
    """Write an ``expire`` entry (dated at the expiry) for the unused remainder of every
    grant that has expired by ``now``. Safe to repeat: one expiry per grant (a unique
    constraint), and grants with nothing left are skipped."""
    due = (
        CreditGrant.objects.filter(expires_at__lte=now, voided_at__isnull=True)
        .annotate(left=Sum("ledger_entries__amount"))
        .filter(left__gt=0)
        .values_list("pk", flat=True)
    )
    expired = 0
    totals: dict[str, Decimal] = {}
    for pk in list(due):
        with transaction.atomic():
            grant = CreditGrant.objects.select_for_update().get(pk=pk)
            left = _remaining([pk])[pk]
            if grant.voided_at is not None or left <= 0:
                continue
            if grant.ledger_entries.filter(kind=LedgerKind.EXPIRE).exists():
                continue
            CreditLedgerEntry.objects.create(
                account_id=grant.account_id,
                currency=grant.currency,
                grant=grant,
                kind=LedgerKind.EXPIRE,
                amount=-left,
                at=grant.expires_at,
                actor="billing run",
                note=f"Expired {grant.expires_at:%Y-%m-%d %H:%M} UTC",
            )
        expired += 1
        totals[grant.currency] = totals.get(grant.currency, ZERO) + left
    return {"grants": expired, "amount": {c: str(a) for c, a in sorted(totals.items())}}


__all__ = [
    "credit_balance",
    "credit_balances",
    "credit_expire_due",
    "credit_grant",
    "credit_grant_remaining",
    "credit_void",
    "credits_apply_on_issue",
]
