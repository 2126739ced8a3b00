"""The ingestion hot path: parse and validate CloudEvents with msgspec, store with COPY.

Validation is all-or-nothing: ``events_parse`` returns every bad event's index and
reason, and nothing is stored unless every event is valid. Beyond the CloudEvents shape,
every event keeps the limits of ``metering.ingest_limits`` (UTF-8, no NUL, nesting,
numbers a bucket can sum, a time window; docs/limits.md). ``events_store`` stores a
batch in one transaction and counts an event re-sent with the same ``(source, id)`` once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import msgspec
from django.db import connection, transaction

from metering.ingest_limits import (
    EARLIEST_TIME,
    FUTURE_TOLERANCE,
    MAX_DATA_DEPTH,
    NUL_ESCAPE,
    data_problem,
    text_problem,
    text_screen,
    time_problem,
)
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
_decode_raw = msgspec.json.Decoder(msgspec.Raw)
_decode_raw_list = msgspec.json.Decoder(list[msgspec.Raw])
_decode_raw_object = msgspec.json.Decoder(dict[str, msgspec.Raw])
_STORED_TEXT_FIELDS = ("id", "source", "type", "subject")
_TOO_DEEP = f"nested deeper than {MAX_DATA_DEPTH} levels"


@dataclass(frozen=True)
class _Checks:
    """What every event of one request is held to."""

    received_at: datetime | None  # None: no upper bound on event times
    latest: datetime | None  # the latest event time accepted
    nul_possible: bool  # the body holds a \u0000 escape somewhere


def _event_error(
    event: CloudEvent, raw: bytes, checks: _Checks, *, data_screened: bool = False
) -> str | None:
    """Why a decoded event (``raw``: its ``data``) cannot be stored, or None. Cheap checks
    first; ``data`` is decoded only when its text could break a limit, and not checked
    at all when ``data_screened`` (the whole body passed ``text_is_plain``)."""
    has_data = bool(raw) and raw != b"null"
    if has_data and not raw.startswith(b"{"):
        return "data: must be a JSON object"
    if event.specversion != "1.0":
        return f"specversion: must be '1.0', got {event.specversion!r}"
    if checks.nul_possible:
        for field in _STORED_TEXT_FIELDS:
            if reason := text_problem(getattr(event, field)):
                return f"{field}: {reason}"
    time = event.time
    if time is not None and (
        time < EARLIEST_TIME or (checks.latest is not None and time > checks.latest)
    ):
        return f"time: {time_problem(time, received_at=checks.received_at)}"
    if has_data and not data_screened:
        return data_problem(raw)
    return None


def _one_error(raw: msgspec.Raw, checks: _Checks) -> tuple[CloudEvent | None, str | None]:
    text = bytes(raw)
    try:
        text.decode()
    except UnicodeDecodeError:
        return None, _not_utf8_reason(text)
    try:
        event = _decode_one.decode(raw)
    except msgspec.ValidationError as exc:
        return None, _reason(exc)
    except RecursionError:
        return None, _TOO_DEEP
    return event, _event_error(event, bytes(event.data), checks)


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


def _not_utf8_reason(text: bytes) -> str:
    """Names the innermost field of an event whose bytes are not UTF-8 (``data.model``);
    walks down through objects and arrays without decoding their strings."""
    path = ""
    for _ in range(MAX_DATA_DEPTH + 1):
        first = text.lstrip()[:1]
        try:
            if first == b"{":
                children = list(_decode_raw_object.decode(text).items())
            elif first == b"[":
                children = [(f"[{i}]", v) for i, v in enumerate(_decode_raw_list.decode(text))]
            else:
                break
        except UnicodeDecodeError:
            return f"{path or 'event'}: an object key is not valid UTF-8"
        except (msgspec.DecodeError, RecursionError):
            break
        for name, child in children:
            child_text = bytes(child)
            if not _is_utf8(child_text):
                path = f"{path}{name}" if name.startswith("[") or not path else f"{path}.{name}"
                text = child_text
                break
        else:
            break
    return f"{path}: not valid UTF-8" if path else "not valid UTF-8"


def _is_utf8(text: bytes) -> bool:
    try:
        text.decode()
    except UnicodeDecodeError:
        return False
    return True


# A JSON string (with the colon that makes it a key), or a bracket or comma: enough to
# follow the nesting of a body too deep for the decoder, without recursion.
_JSON_TOKEN = re.compile(rb'("[^"\\]*(?:\\.[^"\\]*)*")(\s*:)?|[\[\]{},]', re.DOTALL)
_OPEN, _CLOSE, _COMMA = frozenset(b"[{"), frozenset(b"]}"), ord(",")


def _first_too_deep(body: bytes, *, item_depth: int) -> EventError | None:
    """The first event nested deeper than ``data`` may be, found by following brackets:
    for a body the decoder refused with a ``RecursionError``. ``item_depth`` is 1 for a
    batch (events are the array's items), 0 for one event. Stops at the first."""
    limit = item_depth + 1 + MAX_DATA_DEPTH
    depth = index = 0
    field = ""
    for match in _JSON_TOKEN.finditer(body):
        token = match.group()
        if token[0] in _OPEN:
            depth += 1
            if depth == item_depth + 1:
                field = ""
            elif depth > limit:
                name = field or "event"
                return EventError(index, f"{name}: {_TOO_DEEP}")
        elif token[0] in _CLOSE:
            depth -= 1
        elif token[0] == _COMMA:
            if depth == item_depth:
                index += 1
        elif match.group(2) and depth == item_depth + 1:
            field = match.group(1)[1:-1].decode(errors="replace")
    return None


def _check_batch(body: bytes, events: list[CloudEvent], checks: _Checks) -> ParsedBatch:
    """The hot path: every event's own fields, then one screen of the whole body for
    what ``data`` may hold; only when the screen cannot vouch for the body is each
    event's ``data`` looked at on its own."""
    errors: dict[int, str] = {}
    raws = []
    objects = 0
    latest = checks.latest
    for index, event in enumerate(events):
        raw = bytes(event.data)
        raws.append(raw)
        if raw[:1] == b"{":
            objects += 1
            suspect = False
        else:
            suspect = bool(raw) and raw != b"null"
        time = event.time
        # _event_error has the reasons; only an event that fails a cheap test pays for it
        if (
            suspect
            or checks.nul_possible
            or event.specversion != "1.0"
            or (time is not None and (time < EARLIEST_TIME or (latest and time > latest)))
        ) and (error := _event_error(event, raw, checks, data_screened=True)):
            errors[index] = error
    # the array, each event and each data object: the brackets before any data nests
    plain, shallow = text_screen(body, containers=1 + len(events) + objects)
    plain = plain and not checks.nul_possible
    if not (plain and shallow):
        for index, raw in enumerate(raws):
            if index in errors or raw[:1] != b"{":
                continue
            if plain and raw.count(b"{") + raw.count(b"[") <= MAX_DATA_DEPTH:
                continue  # only the nesting was in doubt, and this one is shallow
            if error := data_problem(raw):
                errors[index] = error
    if errors:
        return ParsedBatch(events=[], errors=[EventError(i, errors[i]) for i in sorted(errors)])
    return ParsedBatch(events=events, errors=[])


def _parse_items(raws: list[msgspec.Raw], checks: _Checks) -> ParsedBatch:
    """Decode event by event, to name every bad event (the slow path)."""
    good: list[CloudEvent] = []
    errors = []
    for index, raw in enumerate(raws):
        event, error = _one_error(raw, checks)
        if error:
            errors.append(EventError(index, error))
        elif event is not None:
            good.append(event)
    return ParsedBatch(events=[] if errors else good, errors=errors)


def events_parse(
    body: bytes, *, batch: bool | None, max_events: int, received_at: datetime | None = None
) -> ParsedBatch:
    """Parse a request body into events, and check each against the limits of
    ``metering.ingest_limits`` (docs/limits.md).

    ``batch`` True expects a JSON array, False a single object, None either.
    ``received_at`` is when the request arrived: later event times than the tolerance
    after it are refused. None (a trusted load of known events, e.g. test fixtures) checks
    only the earliest time; every request passes it.

    Returns every bad event's index and reason (and no events) when any is bad. Raises
    ``MalformedBody`` when the body is not UTF-8 JSON of that shape; raises
    ``BatchTooLarge`` past ``max_events``.
    """
    stripped = body.lstrip()
    is_array = stripped[:1] == b"["
    not_the_shape = (batch is True and not is_array) or stripped[:1] not in (b"[", b"{")
    if not_the_shape and not _is_utf8(body):  # UTF-16, say: say that first
        raise MalformedBody("The body is not UTF-8 JSON.")
    if batch is True and not is_array:
        raise MalformedBody("A batch must be a JSON array of events.")
    if batch is False and is_array:
        raise MalformedBody(
            "application/cloudevents+json carries one event; send an array as application/cloudevents-batch+json."
        )
    checks = _Checks(
        received_at=received_at,
        latest=None if received_at is None else received_at + FUTURE_TOLERANCE,
        nul_possible=NUL_ESCAPE in body,
    )
    if not is_array:
        return _parse_one(body, stripped, checks)
    try:
        # Strings the decoder reads are checked by it; ``data`` is kept raw, so the
        # whole body is checked once here (a fast scan), and named when it fails.
        body.decode()
        events = _decode_batch.decode(body)
    except (msgspec.ValidationError, UnicodeDecodeError):
        events = None
    except msgspec.DecodeError as exc:
        raise MalformedBody(f"Malformed JSON: {exc}") from exc
    except RecursionError:
        return _too_deep(body, item_depth=1)
    if events is not None:
        if len(events) > max_events:
            raise BatchTooLarge(len(events), max_events)
        return _check_batch(body, events, checks)
    # Some event is invalid: decode one by one to name every bad event.
    try:
        raws = _decode_raw_list.decode(body)
    except msgspec.DecodeError as exc:
        raise _malformed(body, exc) from exc
    except RecursionError:
        return _too_deep(body, item_depth=1)
    if len(raws) > max_events:
        raise BatchTooLarge(len(raws), max_events)
    return _parse_items(raws, checks)


def _parse_one(body: bytes, stripped: bytes, checks: _Checks) -> ParsedBatch:
    try:
        raw = _decode_raw.decode(body)  # well-formed JSON, read without building it
    except msgspec.DecodeError as exc:
        raise _malformed(body, exc) from exc
    except RecursionError:
        return _too_deep(body, item_depth=0)  # only an object or array nests
    if stripped[:1] != b"{":
        raise MalformedBody("Send one event as a JSON object, or a batch as a JSON array.")
    event, error = _one_error(raw, checks)
    if error:
        return ParsedBatch(events=[], errors=[EventError(0, error)])
    assert event is not None
    return ParsedBatch(events=[event], errors=[])


def _malformed(body: bytes, exc: msgspec.DecodeError) -> MalformedBody:
    if not _is_utf8(body):
        return MalformedBody(f"The body is not UTF-8 JSON: {exc}")
    return MalformedBody(f"Malformed JSON: {exc}")


def _too_deep(body: bytes, *, item_depth: int) -> ParsedBatch:
    error = _first_too_deep(body, item_depth=item_depth)
    if error is None:
        raise MalformedBody("The body is nested too deeply to read.")
    return ParsedBatch(events=[], errors=[error])


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


def events_store(
    *, events: list[CloudEvent], received_at: datetime, max_new_partitions: int | None = None
) -> int:
    """Store valid events in one transaction; return how many were new (not duplicates).

    Events without a time take ``received_at``. Returns only after the commit. Raises
    ``TooManyPartitions`` (storing nothing) when the events' months would need more than
    ``max_new_partitions`` new partitions (None: no limit, for trusted loads).
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
        partitions_ensure(months, limit=max_new_partitions)
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
