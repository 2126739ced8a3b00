"""The invoice lifecycle: drafts at period end, recomputed during grace, issued with a
gapless number, then frozen; late usage billed on the next invoice; voids and credits.

Every state change locks the invoice row, checks its state, changes it and records an
``InvoiceEvent``, in one transaction. Services take ``now``; only the edges read the clock.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Max, Q
from django.utils import timezone
from django.utils.module_loading import import_string

from billing.models import (
    BillingProfile,
    CreditNote,
    CreditNoteLine,
    Invoice,
    InvoiceEvent,
    InvoiceLine,
    InvoiceStatus,
    InvoiceTax,
    LineKind,
    Subscription,
)
from billing.notifications import notify_invoice_status
from billing.periods import Period, period_containing
from billing.rating import RatedLine, RatingContext, rate_period, taxes_for, total_with_taxes
from core.money import quantize, zero
from customers.models import Customer
from customers.selectors import billed_customer_ids_many
from metering.usage import current_xmin, usage_changed_since, usage_changed_since_many

logger = logging.getLogger(__name__)


class InvoiceStateError(ValidationError):
    """The invoice is not in a state that allows the change."""


def _chunk() -> int:
    """A billing run works through its accounts in chunks of ``BILLING_RUN_CHUNK``: one
    context (a handful of queries) and one set of bulk writes per chunk, one transaction
    each. A run that dies loses at most the chunk it was on (rolled back, numbers
    returned)."""
    return settings.BILLING_RUN_CHUNK


# ---------------------------------------------------------------- numbering

_SEQUENCE_TAKE = """
INSERT INTO billing_documentsequence (key, next_number) VALUES (%s, %s + 1)
ON CONFLICT (key) DO UPDATE SET next_number = billing_documentsequence.next_number + EXCLUDED.next_number - 1
RETURNING next_number
"""


def sequence_take(*, prefix: str, year: int, count: int) -> list[str]:
    """Take the next ``count`` numbers of ``prefix`` for ``year`` (``INV-2026-000001``…)
    in one statement.

    Must run inside the transaction that uses the numbers: the row lock is held until it
    commits, and a rollback returns them, so numbers are never skipped or reused.
    """
    key = f"{prefix}-{year}"
    with connection.cursor() as cursor:
        cursor.execute(_SEQUENCE_TAKE, [key, count])
        after = cursor.fetchone()[0]
    return [f"{key}-{number:06d}" for number in range(after - count, after)]


def sequence_next(*, prefix: str, year: int) -> str:
    """Take the next number of ``prefix`` for ``year`` (see ``sequence_take``)."""
    return sequence_take(prefix=prefix, year=year, count=1)[0]


def _event(
    invoice: Invoice,
    *,
    at: datetime,
    from_status: str,
    to_status: str,
    actor: str = "",
    note: str = "",
) -> None:
    InvoiceEvent.objects.create(
        invoice=invoice, at=at, from_status=from_status, to_status=to_status, actor=actor, note=note
    )


def _history(invoices: list[Invoice], *, first: bool, reason) -> None:
    """History rows for invoices written in bulk (``bulk_create``/``bulk_update`` send no
    signals), as ``audit.signals`` writes them for one invoice's state change, with the
    signed-in user where there is one. ``reason``: a text, or a function of the invoice."""
    if not invoices or not hasattr(Invoice, "history"):
        return
    from audit.records import request_user

    model = Invoice.history.model
    fields = [f.attname for f in model.tracked_fields]
    when, user = timezone.now(), request_user()
    model.objects.bulk_create(
        model(
            **{name: getattr(invoice, name) for name in fields},
            history_date=when,
            history_type="+" if first else "~",
            history_user=user,
            history_change_reason=(reason(invoice) if callable(reason) else reason)[:100],
        )
        for invoice in invoices
    )


def _invoices_update(invoices: list[Invoice], fields: list[str]) -> None:
    """Write ``fields`` of many invoices in one ``UPDATE … FROM unnest(arrays)``
    (Django's ``bulk_update`` builds a ``CASE`` per row and field: slow to build and to
    run for a chunk of a billing run)."""
    if not invoices:
        return
    columns = [Invoice._meta.get_field(name) for name in fields]
    names = ", ".join(c.column for c in columns)
    sql = (
        "UPDATE billing_invoice i SET "
        + ", ".join(f"{c.column} = v.{c.column}" for c in columns)
        + " FROM unnest(%s::uuid[], "
        + ", ".join(f"%s::{c.db_type(connection)}[]" for c in columns)
        + f") AS v(id, {names}) WHERE i.id = v.id"
    )
    params = [[i.pk for i in invoices]] + [
        [c.get_db_prep_save(getattr(i, c.attname), connection) for i in invoices] for c in columns
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


# ---------------------------------------------------------------- rating a draft


@dataclass
class _Context:
    """A billing run's context for a chunk of accounts: what rating reads besides usage,
    and each account's invoices that are no longer drafts (for late usage)."""

    rating: RatingContext
    billed: dict[int, list[Invoice]]

    @classmethod
    def load(cls, account_ids, *, since: datetime | None = None) -> _Context:
        """``since``: the earliest draft period start the context serves (only invoices
        within the late-usage lookback before it matter)."""
        ids = sorted(set(account_ids))
        billed: dict[int, list[Invoice]] = {}
        invoices = Invoice.objects.filter(customer_id__in=ids, period_start__isnull=False)
        if since is not None:
            lookback = timedelta(days=settings.BILLING_LATE_USAGE_LOOKBACK_DAYS)
            invoices = invoices.filter(period_end__gt=since - lookback)
        for invoice in invoices.exclude(
            status__in=[InvoiceStatus.DRAFT, InvoiceStatus.VOID]
        ).order_by("customer_id", "period_start"):
            billed.setdefault(invoice.customer_id, []).append(invoice)
        return cls(rating=RatingContext.load(ids), billed=billed)

    @classmethod
    def for_invoices(cls, invoices: list[Invoice]) -> _Context:
        starts = [i.period_start for i in invoices if i.period_start is not None]
        return cls.load({i.customer_id for i in invoices}, since=min(starts, default=None))

    def profile(self, account_id: int) -> BillingProfile | None:
        return self.rating.profiles.get(account_id)


def _grace(account: Customer, context: _Context) -> timedelta:
    profile = context.profile(account.pk)
    hours = (
        profile.grace_period_hours if profile and profile.grace_period_hours is not None else None
    )
    return timedelta(hours=settings.BILLING_GRACE_PERIOD_HOURS if hours is None else hours)


def _line(
    invoice: Invoice, position: int, rated: RatedLine, *, adjusts: Invoice | None = None
) -> InvoiceLine:
    return InvoiceLine(
        invoice=invoice,
        position=position,
        kind=rated.kind,
        description=rated.description[:500],
        feature_id=rated.feature_id,
        customer_id=rated.customer_id,
        period_start=rated.period_start,
        period_end=rated.period_end,
        quantity=rated.quantity,
        unit_price=rated.unit_price,
        amount=rated.amount,
        unrounded_amount=rated.unrounded_amount,
        group_quantity=rated.group_quantity,
        group_amount=rated.group_amount,
        tier_breakdown=list(rated.breakdown),
        rate_card_id=rated.rate_card_id,
        plan_version_id=rated.plan_version_id,
        adjusts_invoice=adjusts,
    )


def _issued_periods(account: Customer, before: datetime, context: _Context) -> list[Invoice]:
    lookback = timedelta(days=settings.BILLING_LATE_USAGE_LOOKBACK_DAYS)
    return [
        invoice
        for invoice in context.billed.get(account.pk, [])
        if before - lookback < invoice.period_end <= before
    ]


def prior_period_adjustments(
    *, account: Customer, draft: Invoice, context: _Context | None = None
) -> list[tuple[RatedLine, Invoice]]:
    """Usage that arrived for issued periods after they were billed, as adjustment lines.

    For each issued period (within the lookback), if usage may have changed since the
    latest rating that billed it, the period's usage is rated again and each (feature,
    customer) difference from what was billed for it (the invoice plus earlier
    adjustments) becomes a line naming the original period.
    """
    context = context or _Context.load([account.pk])
    issued = _issued_periods(account, draft.period_start, context)
    if not issued:
        return []
    customer_ids = context.rating.billed[account.pk]
    out: list[tuple[RatedLine, Invoice]] = []
    for invoice in issued:
        checked_at = (
            Invoice.objects.filter(customer=account, period_start__gte=invoice.period_start)
            .exclude(status=InvoiceStatus.DRAFT)
            .aggregate(x=Max("rated_xmin"))["x"]
        )
        if not usage_changed_since(
            customer_ids=customer_ids,
            start=invoice.period_start,
            end=invoice.period_end,
            xid=checked_at or 0,
        ):
            continue
        rerated = rate_period(
            account=account,
            period=Period(invoice.period_start, invoice.period_end),
            context=context.rating,
        )
        billed: dict[tuple, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
        billed_lines = InvoiceLine.objects.filter(
            Q(invoice=invoice, kind=LineKind.USAGE)
            | Q(
                adjusts_invoice=invoice,
                kind=LineKind.PRIOR_PERIOD_ADJUSTMENT,
                invoice__status__in=[
                    InvoiceStatus.ISSUED,
                    InvoiceStatus.PAID,
                    InvoiceStatus.PAYMENT_FAILED,
                    InvoiceStatus.UNCOLLECTIBLE,
                ],
            )
        )
        for line in billed_lines:
            key = (line.feature_id, line.customer_id, line.rate_card_id)
            billed[key][0] += line.quantity or 0
            billed[key][1] += line.amount
        now_lines: dict[tuple, list] = {}
        for line in rerated.lines:
            if line.kind == LineKind.USAGE:
                now_lines[(line.feature_id, line.customer_id, line.rate_card_id)] = line
        period_label = f"{invoice.period_start:%Y-%m-%d} – {invoice.period_end:%Y-%m-%d}"
        for key in sorted(set(billed) | set(now_lines), key=str):
            line = now_lines.get(key)
            quantity = (line.quantity if line else Decimal(0)) - billed[key][0]
            amount = (line.amount if line else Decimal(0)) - billed[key][1]
            if not quantity and not amount:
                continue
            feature_id, customer_id, rate_card_id = key
            name = line.description if line else "Usage"
            out.append(
                (
                    RatedLine(
                        kind=LineKind.PRIOR_PERIOD_ADJUSTMENT,
                        description=f"{name}: late usage for {period_label} (invoice {invoice.number})",
                        customer_id=customer_id,
                        period_start=invoice.period_start,
                        period_end=invoice.period_end,
                        amount=amount,
                        unrounded_amount=amount,
                        quantity=quantity,
                        feature_id=feature_id,
                        rate_card_id=rate_card_id,
                        plan_version_id=line.plan_version_id if line else None,
                    ),
                    invoice,
                )
            )
    return out


def _rated_lines(
    invoice: Invoice, account: Customer, context: _Context
) -> tuple[list[InvoiceLine], list[int]]:
    """The computed lines of a draft (usage, fees, late usage) and its plan versions."""
    if invoice.period_start is None:
        return [], []
    rated = rate_period(
        account=account,
        period=Period(invoice.period_start, invoice.period_end),
        context=context.rating,
    )
    lines = [_line(invoice, i, line) for i, line in enumerate(rated.lines)]
    for rated_line, original in prior_period_adjustments(
        account=account, draft=invoice, context=context
    ):
        lines.append(_line(invoice, len(lines), rated_line, adjusts=original))
    return lines, list(rated.plan_versions)


def _totals(
    invoice: Invoice,
    account: Customer,
    lines: list[InvoiceLine],
    plan_version_ids: list[int],
    context: _Context | None = None,
) -> list[InvoiceTax]:
    """Set the invoice's totals from all its ``lines``; its taxes (unsaved)."""
    currency = invoice.currency
    subtotal = sum((line.amount for line in lines), zero(currency))
    taxes, exempt = taxes_for(
        account=account,
        plan_version_ids=plan_version_ids,
        subtotal=subtotal,
        context=context.rating if context else None,
    )
    invoice.subtotal = subtotal
    invoice.tax_total = sum((t.amount for t in taxes if not t.inclusive), zero(currency))
    invoice.tax_exempt_reason = exempt
    invoice.total = total_with_taxes(subtotal=subtotal, taxes=taxes, currency=currency)
    invoice.amount_due = max(invoice.total - invoice.credits_applied, zero(currency))
    return [
        InvoiceTax(
            invoice=invoice,
            name=t.name,
            percentage=t.percentage,
            inclusive=t.inclusive,
            base=t.base,
            amount=t.amount,
        )
        for t in taxes
    ]


_LINE_FIELDS = [
    f
    for f in InvoiceLine._meta.concrete_fields
    if f.name not in ("id", "invoice", "manual", "created_by")
]
_TAX_FIELDS = [f for f in InvoiceTax._meta.concrete_fields if f.name not in ("id", "invoice")]
_TOTAL_FIELDS = ["subtotal", "tax_total", "total", "amount_due", "tax_exempt_reason"]


def _as_stored(obj, fields) -> tuple:
    """The row as the database keeps it (decimals at their column's scale), to compare a
    fresh rating with what is stored."""
    values = []
    for f in fields:
        value = getattr(obj, f.attname)
        if isinstance(value, Decimal) and f.get_internal_type() == "DecimalField":
            value = value.quantize(Decimal(1).scaleb(-f.decimal_places))
        values.append(value)
    return tuple(values)


def _same(old: list, new: list, fields) -> bool:
    return [_as_stored(o, fields) for o in old] == [_as_stored(n, fields) for n in new]


@dataclass
class _Rating:
    """A draft rated again: what to write if it differs from what is stored."""

    invoice: Invoice
    lines: list[InvoiceLine]
    taxes: list[InvoiceTax]
    lines_changed: bool
    taxes_changed: bool
    totals_changed: bool


def _rate(
    invoice: Invoice,
    context: _Context,
    stored_lines: list[InvoiceLine],
    stored_taxes: list[InvoiceTax],
) -> _Rating:
    """Rate ``invoice`` (a draft) again and compare with its stored lines and taxes;
    sets its totals. Nothing is written."""
    account = invoice.customer
    manual = [line for line in stored_lines if line.manual]
    lines, versions = _rated_lines(invoice, account, context)
    before = _as_stored(invoice, [Invoice._meta.get_field(n) for n in _TOTAL_FIELDS])
    taxes = _totals(invoice, account, lines + manual, versions, context)
    after = _as_stored(invoice, [Invoice._meta.get_field(n) for n in _TOTAL_FIELDS])
    return _Rating(
        invoice=invoice,
        lines=lines,
        taxes=taxes,
        lines_changed=not _same([x for x in stored_lines if not x.manual], lines, _LINE_FIELDS),
        taxes_changed=not _same(stored_taxes, taxes, _TAX_FIELDS),
        totals_changed=before != after,
    )


def _ratings_write(ratings: list[_Rating], *, horizon: int, now: datetime) -> None:
    """Store what changed in each rating (lines, taxes, totals) and stamp every invoice
    as rated at ``now`` with usage below ``horizon`` in it."""
    relined = [r.invoice.pk for r in ratings if r.lines_changed]
    retaxed = [r.invoice.pk for r in ratings if r.taxes_changed]
    with connection.cursor() as cursor:
        if relined:  # computed lines only; no credit note refers to a draft's lines
            cursor.execute(
                "DELETE FROM billing_invoiceline WHERE invoice_id = ANY(%s) AND NOT manual",
                [relined],
            )
        if retaxed:
            cursor.execute("DELETE FROM billing_invoicetax WHERE invoice_id = ANY(%s)", [retaxed])
    InvoiceLine.objects.bulk_create([x for r in ratings if r.lines_changed for x in r.lines])
    InvoiceTax.objects.bulk_create([t for r in ratings if r.taxes_changed for t in r.taxes])
    for r in ratings:
        r.invoice.rated_at, r.invoice.rated_xmin, r.invoice.updated_at = now, horizon, now
    _invoices_update(
        [r.invoice for r in ratings], ["rated_at", "rated_xmin", "updated_at", *_TOTAL_FIELDS]
    )
    changed = [r.invoice for r in ratings if r.totals_changed]
    if changed:
        _history(changed, first=False, reason="recomputed")


def _stored(invoice_ids: list) -> tuple[dict, dict]:
    lines: dict = defaultdict(list)
    taxes: dict = defaultdict(list)
    for line in InvoiceLine.objects.filter(invoice_id__in=invoice_ids).order_by("position", "pk"):
        lines[line.invoice_id].append(line)
    for tax in InvoiceTax.objects.filter(invoice_id__in=invoice_ids).order_by("pk"):
        taxes[tax.invoice_id].append(tax)
    return lines, taxes


def _drafts_rate(drafts: list[Invoice], *, now: datetime, context: _Context) -> None:
    """Rate locked drafts again from current usage; rated lines and adjustments are
    replaced where they changed, manual lines kept."""
    horizon = current_xmin()
    lines, taxes = _stored([d.pk for d in drafts])
    context.rating.usage_prefetch(
        (d.customer, Period(d.period_start, d.period_end))
        for d in drafts
        if d.period_start is not None
    )
    ratings = [_rate(d, context, lines[d.pk], taxes[d.pk]) for d in drafts]
    _ratings_write(ratings, horizon=horizon, now=now)


def invoice_rate(*, invoice: Invoice, now: datetime) -> Invoice:
    """Recompute a draft from current usage: rated lines and adjustments are replaced,
    manual lines kept. Raises ``InvoiceStateError`` unless the invoice is a draft."""
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update().select_related("customer").get(pk=invoice.pk)
        if not invoice.is_draft:
            raise InvoiceStateError(f"{invoice} is {invoice.status}; only drafts are recomputed.")
        _drafts_rate([invoice], now=now, context=_Context.for_invoices([invoice]))
    return invoice


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
        invoice.pk: f"Period {invoice.period_start:%Y-%m-%d} – {invoice.period_end:%Y-%m-%d} closed."
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


# ---------------------------------------------------------------- issuing


def _hooks(setting: str):
    return [import_string(path) for path in getattr(settings, setting, [])]


def _hooks_run(setting: str, invoices: list[Invoice], now: datetime) -> None:
    """Each hook of ``setting`` for every invoice: at once where the hook offers a
    ``many(invoices=, now=)`` doing the same for a list, else one by one."""
    for hook in _hooks(setting):
        many = getattr(hook, "many", None)
        if many is not None:
            many(invoices=invoices, now=now)
        else:
            for invoice in invoices:
                hook(invoice=invoice, now=now)


def _drafts_issue(
    drafts: list[Invoice], *, now: datetime, actor: str, context: _Context
) -> list[Invoice]:
    """Issue locked drafts: rate them a last time, number them in order, set their due
    dates, apply credits, freeze them, run the issue hooks. In the caller's transaction."""
    _drafts_rate(drafts, now=now, context=context)
    numbers = sequence_take(
        prefix=settings.BILLING_INVOICE_PREFIX, year=now.year, count=len(drafts)
    )
    for invoice, number in zip(drafts, numbers, strict=True):
        profile = context.profile(invoice.customer_id)
        net_terms = profile.net_terms_days if profile else settings.BILLING_NET_TERMS_DAYS
        invoice.number = number
        invoice.status = InvoiceStatus.ISSUED
        invoice.issued_at = now
        invoice.due_at = now + timedelta(days=net_terms)
    _hooks_run("BILLING_INVOICE_ISSUING_HOOKS", drafts, now)  # e.g. credits, before the freeze
    for invoice in drafts:
        invoice.amount_due = max(invoice.total - invoice.credits_applied, zero(invoice.currency))
        invoice.updated_at = now
    _invoices_update(
        drafts,
        ["number", "status", "issued_at", "due_at", "credits_applied", "amount_due", "updated_at"],
    )
    events = [
        InvoiceEvent(
            invoice=invoice,
            at=now,
            from_status=InvoiceStatus.DRAFT,
            to_status=InvoiceStatus.ISSUED,
            actor=actor,
            note=f"Numbered {invoice.number}, due {invoice.due_at:%Y-%m-%d}.",
        )
        for invoice in drafts
    ]
    InvoiceEvent.objects.bulk_create(events)
    _history(
        drafts,
        first=False,
        reason=lambda i: (
            f"draft → issued by {actor}: Numbered {i.number}, due {i.due_at:%Y-%m-%d}."
        ),
    )
    _hooks_run("BILLING_INVOICE_ISSUED_HOOKS", drafts, now)
    ids = [invoice.pk for invoice in drafts]
    transaction.on_commit(lambda: _enqueue_pdfs(ids))
    return drafts


def invoice_issue(*, invoice: Invoice, now: datetime, actor: str = "billing run") -> Invoice:
    """Issue a draft: rate it a last time, number it, set its due date, freeze it.

    Issue hooks (``BILLING_INVOICE_ISSUED_HOOKS``, e.g. the settlement outbox) run in the
    same transaction. Issuing an invoice that is no longer a draft raises
    ``InvoiceStateError``.
    """
    with transaction.atomic():
        locked = Invoice.objects.select_for_update().select_related("customer").get(pk=invoice.pk)
        if not locked.is_draft:
            raise InvoiceStateError(f"{locked} is already {locked.status}.")
        _drafts_issue([locked], now=now, actor=actor, context=_Context.for_invoices([locked]))
    return locked


# Issued invoices per PDF task: few enough for the workers to share a run's PDFs out,
# enough to spare the broker a message per invoice.
PDFS_PER_TASK = 10


def _enqueue_pdfs(invoice_ids: list) -> None:
    from billing.tasks import invoice_pdf_render_task, invoice_pdfs_render_task

    ids = [str(pk) for pk in invoice_ids]
    if len(ids) == 1:
        invoice_pdf_render_task.delay(invoice_id=ids[0])
        return
    with invoice_pdfs_render_task.app.producer_or_acquire() as producer:
        for i in range(0, len(ids), PDFS_PER_TASK):
            invoice_pdfs_render_task.apply_async(
                kwargs={"invoice_ids": ids[i : i + PDFS_PER_TASK]}, producer=producer
            )


def invoices_issue_due(*, now: datetime) -> int:
    """Issue every draft whose grace period has ended by ``now``, a chunk per transaction.

    Drafts another run (or an operator) holds are skipped (``SKIP LOCKED``): that run
    issues them. Numbers follow the order of the drafts' grace periods. A chunk that
    fails is issued again one draft at a time; a draft that cannot be issued is logged
    and stays a draft (the dashboard lists drafts past their grace) for the next run.
    """
    issued, failed = 0, set()
    while True:
        chunk: list[Invoice] = []
        try:
            with transaction.atomic():
                chunk = list(
                    Invoice.objects.select_for_update(skip_locked=True, of=("self",))
                    .select_related("customer")
                    .filter(status=InvoiceStatus.DRAFT, grace_until__lte=now)
                    .exclude(pk__in=failed)
                    .order_by("grace_until", "created_at", "pk")[: _chunk()]
                )
                if not chunk:
                    return issued
                context = _Context.for_invoices(chunk)
                _drafts_issue(chunk, now=now, actor="billing run", context=context)
                issued += len(chunk)
        except Exception:  # noqa: BLE001 - the chunk is redone one draft at a time
            if not chunk:  # finding the drafts failed: nothing to redo
                raise
            logger.warning("issuing a chunk of %d drafts failed; one by one", len(chunk))
            for draft in chunk:
                try:
                    invoice_issue(invoice=draft, now=now)
                    issued += 1
                except InvoiceStateError:  # issued meanwhile by another run or an operator
                    continue
                except Exception:  # noqa: BLE001 - logged; the next run tries again
                    logger.exception("draft %s not issued: left for the next run", draft.pk)
                    failed.add(draft.pk)


def invoice_mark(
    *, invoice: Invoice, status: str, now: datetime, actor: str, note: str = ""
) -> Invoice:
    """Move an issued invoice's payment state (paid, payment_failed, uncollectible).

    Allowed: issued → paid | payment_failed | uncollectible; payment_failed → paid |
    uncollectible; an invoice never goes back to draft or issued. Repeating the current
    state is a no-op (webhooks and retries repeat themselves).
    """
    allowed = {
        InvoiceStatus.ISSUED: {
            InvoiceStatus.PAID,
            InvoiceStatus.PAYMENT_FAILED,
            InvoiceStatus.UNCOLLECTIBLE,
        },
        InvoiceStatus.PAYMENT_FAILED: {InvoiceStatus.PAID, InvoiceStatus.UNCOLLECTIBLE},
        InvoiceStatus.PAID: {InvoiceStatus.PAYMENT_FAILED},  # a returned ACH debit, a refund
    }
    with transaction.atomic():
        locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
        if locked.status == status:
            return locked
        if status not in allowed.get(locked.status, set()):
            raise InvoiceStateError(f"{locked} is {locked.status}; it cannot become {status}.")
        before = locked.status
        locked.status = status
        fields = ["status", "updated_at"]
        if status == InvoiceStatus.PAID:
            locked.paid_at, locked.amount_paid = now, locked.amount_due
            fields += ["paid_at", "amount_paid"]
        locked.save(update_fields=fields)
        _event(locked, at=now, from_status=before, to_status=status, actor=actor, note=note)
        notify_invoice_status(invoice=locked, status=status, now=now)
    return locked


def invoice_void(*, invoice: Invoice, reason: str, now: datetime, actor: str) -> Invoice:
    """Void an issued (unpaid) invoice; its number stays used. Hooks tell its rail."""
    if not reason.strip():
        raise ValidationError({"reason": "Say why the invoice is voided."})
    with transaction.atomic():
        locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
        if locked.status not in (
            InvoiceStatus.ISSUED,
            InvoiceStatus.PAYMENT_FAILED,
            InvoiceStatus.UNCOLLECTIBLE,
        ):
            raise InvoiceStateError(
                f"{locked} is {locked.status}; only unpaid issued invoices can be voided."
            )
        before = locked.status
        locked.status, locked.voided_at, locked.void_reason = InvoiceStatus.VOID, now, reason
        locked.save(update_fields=["status", "voided_at", "void_reason", "updated_at"])
        _event(
            locked,
            at=now,
            from_status=before,
            to_status=InvoiceStatus.VOID,
            actor=actor,
            note=reason,
        )
        for hook in _hooks("BILLING_INVOICE_VOIDED_HOOKS"):
            hook(invoice=locked, now=now)
    return locked


def invoice_line_add(
    *,
    invoice: Invoice,
    description: str,
    amount: Decimal,
    now: datetime,
    quantity: Decimal | None = None,
    customer: Customer | None = None,
    user=None,
) -> InvoiceLine:
    """Add an operator's manual line to a draft; it survives recomputation."""
    with transaction.atomic():
        locked = Invoice.objects.select_for_update().select_related("customer").get(pk=invoice.pk)
        if not locked.is_draft:
            raise InvoiceStateError(f"{locked} is issued; correct it with a credit note instead.")
        if not description.strip():
            raise ValidationError(
                {"description": "Describe the line as the customer will read it."}
            )
        rounded = quantize(amount, locked.currency)
        line = InvoiceLine.objects.create(
            invoice=locked,
            position=1000 + locked.lines.count(),
            kind=LineKind.MANUAL,
            description=description,
            customer=customer or locked.customer,
            quantity=quantity,
            amount=rounded,
            unrounded_amount=amount,
            manual=True,
            created_by=user,
            period_start=locked.period_start,
            period_end=locked.period_end,
        )
        versions = list(
            locked.lines.exclude(plan_version=None)
            .values_list("plan_version_id", flat=True)
            .distinct()
        )
        taxes = _totals(locked, locked.customer, list(locked.lines.all()), versions)
        InvoiceTax.objects.filter(invoice=locked).delete()
        InvoiceTax.objects.bulk_create(taxes)
        locked.save()
    return line


def credit_note_create(
    *,
    invoice: Invoice,
    reason: str,
    now: datetime,
    amount: Decimal | None = None,
    line_ids: list[int] | None = None,
    user=None,
) -> CreditNote:
    """Credit an issued invoice: the whole of it (no amount, no lines), some of its lines,
    or an amount. Never more than what is left to credit. Hooks send it to the rail."""
    if not reason.strip():
        raise ValidationError({"reason": "Say why the invoice is credited."})
    with transaction.atomic():
        locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
        if locked.status in (InvoiceStatus.DRAFT, InvoiceStatus.VOID):
            raise InvoiceStateError(
                f"{locked} is {locked.status}; only issued invoices can be credited."
            )
        credited = sum((c.amount for c in locked.credit_notes.all()), Decimal(0))
        remaining = locked.total - credited
        lines: list[tuple[InvoiceLine | None, str, Decimal]] = []
        if line_ids:
            chosen = list(locked.lines.filter(pk__in=line_ids))
            if len(chosen) != len(set(line_ids)):
                raise ValidationError({"lines": "Some lines are not on this invoice."})
            lines = [(line, f"Credit: {line.description}", line.amount) for line in chosen]
            if amount is not None:
                raise ValidationError({"amount": "Give lines or an amount, not both."})
        elif amount is not None:
            amount = quantize(amount, locked.currency)
            if amount <= 0:
                raise ValidationError({"amount": "A credit is a positive amount."})
            lines = [(None, f"Credit: {reason}", amount)]
        else:
            lines = [(None, f"Credit of invoice {locked.number}", remaining)]
        total = sum((line[2] for line in lines), Decimal(0))
        if total > remaining:
            raise ValidationError(
                {
                    "amount": f"Only {remaining} {locked.currency} of {locked.number} is left to credit."
                }
            )
        note = CreditNote.objects.create(
            number=sequence_next(prefix=settings.BILLING_CREDIT_NOTE_PREFIX, year=now.year),
            invoice=locked,
            currency=locked.currency,
            reason=reason,
            amount=total,
            issued_at=now,
            created_by=user,
        )
        CreditNoteLine.objects.bulk_create(
            CreditNoteLine(
                credit_note=note, invoice_line=line, description=text[:500], amount=value
            )
            for line, text, value in lines
        )
        _event(
            locked,
            at=now,
            from_status=locked.status,
            to_status=locked.status,
            actor=getattr(user, "username", "") or "operator",
            note=f"Credit note {note.number}: {total} ({reason})",
        )
        for hook in _hooks("BILLING_CREDIT_NOTE_HOOKS"):
            hook(credit_note=note, now=now)
    return note


__all__ = [
    "CloseResult",
    "InvoiceStateError",
    "credit_note_create",
    "drafts_refresh",
    "invoice_draft_for",
    "invoice_issue",
    "invoice_line_add",
    "invoice_mark",
    "invoice_rate",
    "invoice_void",
    "invoices_issue_due",
    "periods_close",
    "prior_period_adjustments",
    "sequence_next",
    "sequence_take",
]
