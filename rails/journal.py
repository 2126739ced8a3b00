"""A settlement's journal: every state it moves through (an event row each, with who
moved it and why) and every exchange with its rail (requests, responses, keys). The one
place a settlement's state changes, so each move is checked against ``rails.states``."""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ValidationError

from rails.base import RailResult, redact
from rails.models import Settlement, SettlementEvent, SettlementExchange
from rails.states import can_move


class SettlementStateError(ValidationError):
    pass


def event_add(
    settlement: Settlement,
    *,
    at: datetime,
    from_state: str,
    to_state: str,
    actor: str,
    note: str = "",
) -> None:
    """Write one event on the settlement (a note with ``from_state == to_state`` when
    nothing moved)."""
    SettlementEvent.objects.create(
        settlement=settlement,
        at=at,
        from_state=from_state,
        to_state=to_state,
        actor=actor,
        note=note[:5000],
    )


def state_move(
    settlement: Settlement, to_state: str, *, now: datetime, actor: str, note: str = ""
) -> bool:
    """Move the (locked) settlement to ``to_state`` and write the event; False when it is
    already there. Raises ``SettlementStateError`` for a move the state machine forbids."""
    if settlement.state == to_state:
        return False
    if not can_move(settlement.state, to_state):
        raise SettlementStateError(f"A {settlement.state} settlement cannot become {to_state}.")
    before = settlement.state
    settlement.state = to_state
    event_add(settlement, at=now, from_state=before, to_state=to_state, actor=actor, note=note)
    return True


def exchanges_record(s: Settlement, result: RailResult, attempt: int, now: datetime) -> None:
    """Store the rail's exchanges of one step, credentials redacted."""
    SettlementExchange.objects.bulk_create(
        SettlementExchange(
            settlement=s,
            attempt=attempt,
            step=e.step,
            idempotency_key=e.idempotency_key,
            method=e.method,
            url=e.url,
            request_headers=redact(e.request_headers),
            request_body=e.request_body,
            status_code=e.status_code,
            response_body=e.response_body[:100_000],
            error=e.error,
            sent=e.sent,
            at=now,
        )
        for e in result.exchanges
    )
