from __future__ import annotations

from datetime import UTC, datetime

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
