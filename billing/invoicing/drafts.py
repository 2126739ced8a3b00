"""Closing periods into drafts (in chunks, already rated) and recomputing drafts whose
usage changed during their grace period."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction

from billing.catalog.periods import Period, period_containing
from billing.display import period_text
from billing.invoicing.base import InvoiceStateError, _chunk, _history
from billing.invoicing.recompute import _Context, _grace, _rated_lines, _totals, invoice_rate
from billing.models import (
    Invoice,
    InvoiceEvent,
    InvoiceLine,
    InvoiceStatus,
    InvoiceTax,
    Subscription,
)
from customers.models import Customer
from customers.selectors import billed_customer_ids_many
from metering.usage import current_xmin, usage_changed_since_many

logger = logging.getLogger("billing.invoicing")


# ---------------------------------------------------------------- closing periods


def _ended_periods(sub: Subscription, account: Customer, now: datetime) -> Iterator[Period]:
    cadence = sub.plan_version.cadence
    period = period_containing(
        anchor=sub.anchor, cadence=cadence, timezone=account.timezone, instant=sub.start
    )
    last = min(now, sub.end) if sub.end else now
    while period.end <= now and period.start < last:
        yield period
        period = period_containing(
            anchor=sub.anchor, cadence=cadence, timezone=account.timezone, instant=period.end
        )


@dataclass(frozen=True)
class CloseResult:
    created: int
    existing: int


def _drafts_create(
    pairs: list[tuple[Customer, Period]], *, now: datetime, context: _Context
) -> list[Invoice]:
    """Create and rate the drafts of ``pairs`` (none of which exists yet) in bulk, in the
    caller's transaction. Raises ``IntegrityError`` when another run created one of them
    meanwhile (the unique constraint on account, currency and period)."""
    horizon = current_xmin()
    context.rating.usage_prefetch(pairs)
    invoices, lines, taxes = [], [], []
    for account, period in pairs:
        invoice = Invoice(
            customer=account,
            currency=account.currency,
            period_start=period.start,
            period_end=period.end,
            grace_until=period.end + _grace(account, context),
            rated_at=now,
            rated_xmin=horizon,
            created_at=now,
            updated_at=now,
        )
        rated, versions = _rated_lines(invoice, account, context)
        taxes += _totals(invoice, account, rated, versions, context)
        invoices.append(invoice)
        lines += rated
    with transaction.atomic():  # a savepoint: on a conflict the caller goes one by one
        Invoice.objects.bulk_create(invoices)
    InvoiceLine.objects.bulk_create(lines)
    InvoiceTax.objects.bulk_create(taxes)
    notes = {
        invoice.pk: f"Period {period_text(invoice)} closed."  # as the invoice shows it
        for invoice in invoices
    }
    InvoiceEvent.objects.bulk_create(
        InvoiceEvent(
            invoice=invoice,
            at=now,
            from_status="",
            to_status=InvoiceStatus.DRAFT,
            actor="billing run",
            note=notes[invoice.pk],
        )
        for invoice in invoices
    )
    _history(invoices, first=True, reason=lambda i: f"new → draft by billing run: {notes[i.pk]}")
    return invoices


def invoice_draft_for(*, account: Customer, period: Period, now: datetime) -> tuple[Invoice, bool]:
    """The draft (or invoice) of ``account`` for ``period``, created and rated if missing.

    The unique constraint on (account, currency, period) makes two concurrent callers
    agree on one invoice.
    """
    lookup = dict(
        customer=account,
        currency=account.currency,
        period_start=period.start,
        period_end=period.end,
    )
    existing = Invoice.objects.filter(**lookup).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            (invoice,) = _drafts_create(
                [(account, period)],
                now=now,
                context=_Context.load([account.pk], since=period.start),
            )
    except IntegrityError:
        return Invoice.objects.get(**lookup), False
    return invoice, True


def _pairs_close(pairs: list[tuple[Customer, Period]], *, now: datetime) -> tuple[int, int]:
    """Drafts for a chunk of (account, ended period); (created, existing)."""
    accounts = {account.pk for account, _ in pairs}
    have = set(
        Invoice.objects.filter(customer_id__in=accounts, period_start__isnull=False).values_list(
            "customer_id", "currency", "period_start", "period_end"
        )
    )
    missing = [(a, p) for a, p in pairs if (a.pk, a.currency, p.start, p.end) not in have]
    if not missing:
        return 0, len(pairs)
    try:
        with transaction.atomic():
            since = min(p.start for _, p in missing)
            _drafts_create(missing, now=now, context=_Context.load(accounts, since=since))
        return len(missing), len(pairs) - len(missing)
    except Exception as exc:  # noqa: BLE001 - the chunk is redone one account at a time
        # Another run closing the same periods (the unique constraint), or one account
        # that cannot be rated: one by one, so that one account never holds up the others.
        if not isinstance(exc, IntegrityError):
            logger.warning("closing a chunk of %d periods failed; one by one", len(missing))
        made = had = 0
        for account, period in missing:
            try:
                created = invoice_draft_for(account=account, period=period, now=now)[1]
            except Exception:  # noqa: BLE001 - logged; the next run tries again
                logger.exception("no draft for %s, %s: left for the next run", account, period)
                continue
            made, had = made + created, had + (not created)
        return made, len(pairs) - len(missing) + had


def periods_close(*, now: datetime) -> CloseResult:
    """Make a draft for every subscription period that has ended by ``now``."""
    created = existing = 0
    subs = Subscription.objects.select_related("plan_version", "customer").order_by(
        "customer_id", "start"
    )
    seen: set[tuple] = set()
    pairs: list[tuple[Customer, Period]] = []
    for sub in subs.iterator(chunk_size=2000):
        for period in _ended_periods(sub, sub.customer, now):
            key = (sub.customer_id, period.start, period.end)
            if key in seen:
                continue
            seen.add(key)
            pairs.append((sub.customer, period))
        if len(pairs) >= _chunk():
            made, had = _pairs_close(pairs, now=now)
            created, existing, pairs = created + made, existing + had, []
    if pairs:
        made, had = _pairs_close(pairs, now=now)
        created, existing = created + made, existing + had
    return CloseResult(created=created, existing=existing)


def drafts_refresh(*, now: datetime) -> int:
    """Recompute drafts whose usage may have changed since they were rated (their own
    period's, or, for late usage, that of an issued period within the lookback)."""
    refreshed = 0
    lookback = timedelta(days=settings.BILLING_LATE_USAGE_LOOKBACK_DAYS)
    rows = list(
        Invoice.objects.filter(status=InvoiceStatus.DRAFT, period_start__isnull=False)
        .order_by("pk")
        .values_list("pk", "customer_id", "period_start", "period_end", "rated_xmin")
    )
    for i in range(0, len(rows), _chunk()):
        chunk = rows[i : i + _chunk()]
        accounts = {row[1] for row in chunk}
        trees = billed_customer_ids_many(account_ids=accounts)
        issued: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
        for account_id, start, end in (
            Invoice.objects.filter(customer_id__in=accounts, period_start__isnull=False)
            .exclude(status__in=[InvoiceStatus.DRAFT, InvoiceStatus.VOID])
            .values_list("customer_id", "period_start", "period_end")
        ):
            issued[account_id].append((start, end))
        changed = usage_changed_since_many(
            checks=[
                (
                    trees.get(account_id, [account_id]),
                    min(
                        [
                            start,
                            *(s for s, e in issued[account_id] if start - lookback < e <= start),
                        ]
                    ),
                    end,
                    xid,
                )
                for _, account_id, start, end, xid in chunk
            ]
        )
        stale = [chunk[i][0] for i in sorted(changed)]
        for pk in stale:
            try:
                invoice_rate(invoice=Invoice(pk=pk), now=now)
            except InvoiceStateError:  # issued meanwhile by another run or an operator
                continue
            refreshed += 1
    return refreshed
