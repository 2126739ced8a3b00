from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from metering.ingest import events_parse
from metering.services import events_ingest

RECEIVED = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def cloud_event(
    i: int | str,
    *,
    type="request",
    subject="acme-gw",
    time="2026-11-01T10:00:00Z",
    source="gw",
    **data,
):
    event = {
        "specversion": "1.0",
        "id": str(i),
        "source": source,
        "type": type,
        "subject": subject,
        "data": data,
    }
    if time is not None:
        event["time"] = time
    return event


@pytest.fixture
def ingest(db):
    """Store events (dicts) through the same parse and store path as the endpoint."""

    def store(*events: dict, received_at: datetime = RECEIVED) -> int:
        parsed = events_parse(json.dumps(list(events)).encode(), batch=True, max_events=100_000)
        assert not parsed.errors, parsed.errors
        return events_ingest(events=parsed.events, received_at=received_at)

    return store
