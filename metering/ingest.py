"""The ingestion hot path: parse and validate CloudEvents with msgspec, store with COPY.

Validation is all-or-nothing: ``events_parse`` returns every bad event's index and
reason, and nothing is stored unless every event is valid. ``events_store`` stores a
batch in one transaction and counts an event re-sent with the same ``(source, id)`` once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import msgspec
from django.db import connection, transaction

from metering.partitions import month_start, partitions_ensure

NonEmpty255 = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
AwareDateTime = Annotated[datetime, msgspec.Meta(tz=True)]
_NO_DATA = msgspec.Raw(b"")


class CloudEvent(msgspec.Struct, forbid_unknown_fields=False):
    id: NonEmpty255
    source: NonEmpty255
    type: NonEmpty255
    subject: NonEmpty255
    specversion: str = "1.0"
    time: AwareDateTime | None = None
    data: msgspec.Raw = _NO_DATA
    datacontenttype: str | None = None
    dataschema: str | None = None


@dataclass(frozen=True)
class EventError:
    index: int
    reason: str


@dataclass(frozen=True)
class ParsedBatch:
    events: list[CloudEvent]
    errors: list[EventError]


class MalformedBody(ValueError):
    """The body is not JSON, or not the JSON shape the content type promises."""


_decode_batch = msgspec.json.Decoder(list[CloudEvent])
_decode_one = msgspec.json.Decoder(CloudEvent)
_decode_raw_list = msgspec.json.Decoder(list[msgspec.Raw])


def _data_error(event: CloudEvent) -> str | None:
    raw = bytes(event.data)
    if raw and raw != b"null" and not raw.startswith(b"{"):
        return "data: must be a JSON object"
    if event.specversion != "1.0":
        return f"specversion: must be '1.0', got {event.specversion!r}"
    return None


def _one_error(raw: msgspec.Raw) -> tuple[CloudEvent | None, str | None]:
    try:
        event = _decode_one.decode(raw)
    except msgspec.ValidationError as exc:
        return None, _reason(exc)
    return event, _data_error(event)


def _reason(exc: msgspec.ValidationError) -> str:
    # msgspec says "Expected `str` of length >= 1 - at `$.id`"; lead with the field.
    message = str(exc)
    if " - at `$." in message:
        text, where = message.rsplit(" - at `$.", 1)
        return f"{where.rstrip('`')}: {text}"
    if message.startswith("Object missing required field"):
        field = message.split("`")[1]
        return f"{field}: required"
    return message


def events_parse(body: bytes, *, batch: bool | None, max_events: int) -> ParsedBatch:
    """Parse a request body into events.

    ``batch`` True expects a JSON array, False a single object, None either.
    Raises ``MalformedBody`` when the body is not JSON of that shape; raises
    ``BatchTooLarge`` past ``max_events``.
    """
    stripped = body.lstrip()
    is_array = stripped[:1] == b"["
    if batch is True and not is_array:
        raise MalformedBody("A batch must be a JSON array of events.")
    if batch is False and is_array:
        raise MalformedBody(
            "application/cloudevents+json carries one event; send an array as application/cloudevents-batch+json."
        )
    if is_array:
        try:
            events = _decode_batch.decode(body)
        except msgspec.ValidationError:
            events = None
        except msgspec.DecodeError as exc:
            raise MalformedBody(f"Malformed JSON: {exc}") from exc
        if events is not None:
            if len(events) > max_events:
                raise BatchTooLarge(len(events), max_events)
            errors = [EventError(i, err) for i, e in enumerate(events) if (err := _data_error(e))]
            return ParsedBatch(events=events if not errors else [], errors=errors)
        # Some event is invalid: decode one by one to name every bad event.
        try:
            raws = _decode_raw_list.decode(body)
        except msgspec.DecodeError as exc:
            raise MalformedBody(f"Malformed JSON: {exc}") from exc
        if len(raws) > max_events:
            raise BatchTooLarge(len(raws), max_events)
        good: list[CloudEvent] = []
        errors = []
        for index, raw in enumerate(raws):
            event, error = _one_error(raw)
            if error:
                errors.append(EventError(index, error))
            elif event is not None:
                good.append(event)
        return ParsedBatch(events=[] if errors else good, errors=errors)
    try:
        msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise MalformedBody(f"Malformed JSON: {exc}") from exc
    if stripped[:1] != b"{":
        raise MalformedBody("Send one event as a JSON object, or a batch as a JSON array.")
    event, error = _one_error(msgspec.Raw(body))
    if error:
        return ParsedBatch(events=[], errors=[EventError(0, error)])
    return ParsedBatch(events=[event], errors=[])


class BatchTooLarge(ValueError):
    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"The batch has {count} events; the limit is {limit}.")
        self.count = count
        self.limit = limit


_CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS metering_ingest (
    ord integer, source text, event_id text, type text, subject text, time timestamptz, data jsonb
) ON COMMIT DELETE ROWS
"""

# The first copy of each (source, id) in the batch wins; the key table decides, under its
# primary key, which events are new, also against a concurrent request.
_INSERT_NEW = """
WITH batch AS (
    SELECT DISTINCT ON (source, event_id) ord, source, event_id, type, subject, time, data
    FROM metering_ingest ORDER BY source, event_id, ord
), fresh AS (
    INSERT INTO metering_eventkey (source, event_id, time)
    SELECT source, event_id, time FROM batch
    ON CONFLICT DO NOTHING
    RETURNING source, event_id
)
INSERT INTO metering_event (source, event_id, type, subject, time, data)
SELECT b.source, b.event_id, b.type, b.subject, b.time, b.data
FROM batch b JOIN fresh f USING (source, event_id)
"""


def events_store(*, events: list[CloudEvent], received_at: datetime) -> int:
    """Store valid events in one transaction; return how many were new (not duplicates).

    Events without a time take ``received_at``. Returns only after the commit.
    """
    if not events:
        return 0
    rows = []
    months = set()
    for ord_, event in enumerate(events):
        time = event.time or received_at
        months.add(month_start(time))
        raw = bytes(event.data)
        data = raw.decode() if raw and raw != b"null" else None
        rows.append((ord_, event.source, event.id, event.type, event.subject, time, data))
    with transaction.atomic():
        partitions_ensure(months)
        with connection.cursor() as cursor:
            cursor.execute(_CREATE_STAGING)
            with cursor.cursor.copy(
                "COPY metering_ingest (ord, source, event_id, type, subject, time, data) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(_INSERT_NEW)
            stored = cursor.rowcount
            cursor.execute("TRUNCATE metering_ingest")
    return stored
