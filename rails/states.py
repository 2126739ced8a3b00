"""The settlement state machine: states only move forward, except that a paid
settlement can still be returned (an ACH return) or refunded."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.utils import timezone

from rails.models import Settlement
from rails.models import SettlementState as S

TRANSITIONS: dict[str, set[str]] = {
    S.PENDING: {S.SUBMITTING, S.VOIDED, S.CANCELLED},
    S.SUBMITTING: {S.SUBMITTED, S.COLLECTING, S.PAID, S.FAILED, S.VOIDED, S.UNCOLLECTIBLE},
    S.FAILED: {
        S.SUBMITTING,
        S.SUBMITTED,
        S.COLLECTING,
        S.PAID,
        S.VOIDED,
        S.UNCOLLECTIBLE,
        S.CANCELLED,
    },
    S.SUBMITTED: {S.COLLECTING, S.PAID, S.FAILED, S.VOIDED, S.UNCOLLECTIBLE},
    S.COLLECTING: {S.PAID, S.FAILED, S.RETURNED, S.VOIDED, S.UNCOLLECTIBLE},
    S.PAID: {S.RETURNED, S.REFUNDED},
    S.RETURNED: set(),
    S.REFUNDED: set(),
    S.VOIDED: set(),
    S.UNCOLLECTIBLE: {S.PAID},
    S.CANCELLED: set(),
}

# How far along each state is; a report that would move a settlement to an earlier
# state (a webhook replayed late) is ignored, never applied.
RANK = {
    S.PENDING: 0,
    S.FAILED: 1,
    S.SUBMITTING: 2,
    S.SUBMITTED: 3,
    S.COLLECTING: 4,
    S.UNCOLLECTIBLE: 5,
    S.PAID: 6,
    S.VOIDED: 7,
    S.CANCELLED: 7,
    S.RETURNED: 8,
    S.REFUNDED: 8,
}


def can_move(from_state: str, to_state: str) -> bool:
    return to_state in TRANSITIONS.get(from_state, set())


TERMINAL = {S.RETURNED, S.REFUNDED, S.VOIDED, S.CANCELLED}


def state_text(*, state: str, next_action_at: datetime | None, attempts: int, now: datetime) -> str:
    """A settlement's state as an operator needs to read it: for a failed settlement,
    what happens next (a retry at a given time, or nothing until an operator acts); for
    one submitted to a rail that reports nothing by itself (the manual rail: nothing is
    scheduled), that it waits for an operator."""
    if state in (S.SUBMITTED, S.COLLECTING) and next_action_at is None:
        return f"{S(state).label}: waiting for an operator to mark it paid"
    if state != S.FAILED:
        return S(state).label if state in S.values else state
    if next_action_at is not None:
        if next_action_at <= now:
            return "Failed: retrying now"
        at = timezone.localtime(next_action_at)
        return f"Failed: retry scheduled at {at:%Y-%m-%d %H:%M %Z}"
    # No retry: the rail's answer was final (its error says why), or the attempts ran out.
    after = f" after {attempts} attempts" if attempts >= settings.RAILS_MAX_ATTEMPTS else ""
    return f"Failed for good{after}: needs an operator"


def settlement_state_text(settlement: Settlement, *, now: datetime) -> str:
    """``state_text`` of a settlement."""
    return state_text(
        state=settlement.state,
        next_action_at=settlement.next_action_at,
        attempts=settlement.attempts,
        now=now,
    )
