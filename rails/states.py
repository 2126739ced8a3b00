"""The settlement state machine: states only move forward, except that a paid
settlement can still be returned (an ACH return) or refunded."""

from __future__ import annotations

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
