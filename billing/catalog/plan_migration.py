"""Moving many subscriptions to another plan version at once.

Each subscription moves in its own transaction through ``subscription_change_plan`` (the
one rule for a plan change: the period splits at the instant, flat fees prorated by the
second, usage priced on each side by its own plan), so one that cannot move is reported
with its reason and never stops the others.

A dry run makes the same change inside a savepoint, rates the period the change falls in
before and after with ``rate_period``, and rolls the savepoint back: its "after" total is
exactly what a real migration would give, and nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q

from billing.catalog.periods import Period, period_containing
from billing.catalog.rating import rate_period
from billing.catalog.services import subscription_change_plan
from billing.models import Invoice, InvoiceStatus, PlanVersion, Subscription

MOVED = "moved"
WOULD_MOVE = "would_move"
FAILED = "failed"


@dataclass(frozen=True)
class MigrationRow:
    """What happened to one subscription (``status``: moved, would_move or failed)."""

    customer_key: str
    subscription_id: int | None
    from_version: str
    to_version: str
    status: str
    reason: str = ""
    effective: datetime | None = None
    currency: str = ""
    timezone: str = "UTC"  # the customer's, in which its periods are cut
    period: Period | None = None  # the billing period the change falls in
    current_total: Decimal | None = None  # that period's invoice without the change
    new_total: Decimal | None = None  # ... and with it


@dataclass(frozen=True)
class MigrationReport:
    to_version: PlanVersion
    dry_run: bool
    rows: tuple[MigrationRow, ...]

    def count(self, status: str) -> int:
        return sum(1 for row in self.rows if row.status == status)

    @property
    def summary(self) -> str:
        """One sentence for an operator: how many moved (or would) and how many could not."""
        done = (
            f"{self.count(WOULD_MOVE)} would move" if self.dry_run else f"{self.count(MOVED)} moved"
        )
        return f"{done} to {self.to_version}, {self.count(FAILED)} could not."


class _DryRunDone(Exception):
    """Raised inside a dry run's savepoint to roll it back, carrying its row."""

    def __init__(self, row: MigrationRow) -> None:
        self.row = row


def migration_selection(*, from_version: PlanVersion, now: datetime) -> list[Subscription]:
    """Every subscription on ``from_version`` that has not ended by ``now``."""
    return list(
        Subscription.objects.select_related("customer", "plan_version__plan")
        .filter(plan_version=from_version)
        .filter(Q(end__isnull=True) | Q(end__gt=now))
        .order_by("customer__key", "start")
    )


def _effective(sub: Subscription, *, at: datetime | None, now: datetime) -> datetime:
    """``at``, or the start of the subscription's next period after ``now`` (its first
    period's end when it has not started yet)."""
    if at is not None:
        return at
    return period_containing(
        anchor=sub.anchor,
        cadence=sub.plan_version.cadence,
        timezone=sub.customer.timezone,
        instant=max(now, sub.start),
    ).end


def _refuse_issued_period(sub: Subscription, period: Period) -> None:
    """A change inside a period whose invoice is issued would make that invoice wrong."""
    issued = (
        Invoice.objects.filter(
            customer_id=sub.customer_id,
            period_start__isnull=False,
            period_start__lt=period.end,
            period_end__gt=period.start,
        )
        .exclude(status=InvoiceStatus.DRAFT)
        .values_list("number", flat=True)
        .first()
    )
    if issued is not None:
        raise ValidationError(
            {
                "at": f"The period {period.start.isoformat()} – {period.end.isoformat()} is "
                f"already invoiced ({issued}); a change there would make that invoice wrong."
            }
        )


def _rated_total(sub: Subscription, period: Period, now: datetime) -> Decimal:
    usage_until = min(max(now, period.start), period.end)
    return rate_period(account=sub.customer, period=period, usage_until=usage_until).total


def _migrate_one(
    sub: Subscription, *, to_version: PlanVersion, at: datetime | None, dry_run: bool, now
) -> MigrationRow:
    row = {
        "customer_key": sub.customer.key,
        "subscription_id": sub.pk,
        "from_version": str(sub.plan_version),
        "to_version": str(to_version),
        "currency": sub.customer.currency,
        "timezone": sub.customer.timezone,
    }
    try:
        with transaction.atomic():
            locked = (
                Subscription.objects.select_for_update()
                .select_related("customer", "plan_version__plan")
                .get(pk=sub.pk)
            )
            if locked.plan_version_id == to_version.pk:
                raise ValidationError(f"Already on {to_version}.")
            if locked.end is not None and locked.end <= now:
                raise ValidationError(f"Ended {locked.end.isoformat()}.")
            effective = _effective(locked, at=at, now=now)
            row["effective"] = effective
            if locked.end is not None and locked.end <= effective:
                raise ValidationError(
                    f"Ends {locked.end.isoformat()}, before the change would take effect."
                )
            period = period_containing(
                anchor=locked.anchor,
                cadence=locked.plan_version.cadence,
                timezone=locked.customer.timezone,
                instant=max(effective, locked.anchor),
            )
            row["period"] = period
            _refuse_issued_period(locked, period)
            before = _rated_total(locked, period, now)
            subscription_change_plan(
                subscription=locked, plan_version=to_version, at=effective, timing="immediately"
            )
            after = _rated_total(locked, period, now)
            done = MigrationRow(
                **row,
                status=WOULD_MOVE if dry_run else MOVED,
                current_total=before,
                new_total=after,
            )
            if dry_run:
                raise _DryRunDone(done)
            return done
    except _DryRunDone as rolled_back:
        return rolled_back.row
    except ValidationError as exc:
        return MigrationRow(**row, status=FAILED, reason=" ".join(exc.messages))


def subscriptions_migrate(
    *,
    to_version: PlanVersion,
    subscriptions: Iterable[Subscription] | None = None,
    from_version: PlanVersion | None = None,
    at: datetime | None = None,
    at_next_period: bool = False,
    dry_run: bool = False,
    now: datetime,
    missing: Iterable[str] = (),
) -> MigrationReport:
    """Move ``subscriptions`` (or every subscription on ``from_version`` not ended by
    ``now``) to ``to_version``, at ``at`` or, with ``at_next_period``, each at the start
    of its next period. One transaction per subscription; a subscription that cannot move
    is reported as failed with the reason. ``missing`` names customers asked for that have
    no such subscription: they are reported as failed too. With ``dry_run`` nothing is
    written and the report gives each affected period's total before and after.

    Raises ``ValidationError`` only for the request as a whole: neither or both of ``at``
    and ``at_next_period``, or no selection.
    """
    if (at is None) == (not at_next_period):
        raise ValidationError({"effective": "Give an instant or the next period, not both."})
    if subscriptions is None:
        if from_version is None:
            raise ValidationError({"subscriptions": "Select subscriptions or a version."})
        subscriptions = migration_selection(from_version=from_version, now=now)
    rows = [
        _migrate_one(sub, to_version=to_version, at=at, dry_run=dry_run, now=now)
        for sub in subscriptions
    ]
    on = str(from_version) if from_version is not None else ""
    rows += [
        MigrationRow(
            customer_key=key,
            subscription_id=None,
            from_version=on,
            to_version=str(to_version),
            status=FAILED,
            reason=f"No subscription on {on} that has not ended." if on else "No subscription.",
        )
        for key in missing
    ]
    return MigrationReport(to_version=to_version, dry_run=dry_run, rows=tuple(rows))
