"""A request body's Kong logs, converted or skipped one by one: a batch holds many
clients' requests, and one bad log must not cost the rest. Each skipped log keeps its
index, its reason and a sample for the operator."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import msgspec

from metering.gateways.kong.log import REQUEST_TYPE, KongOptions, UnreadableLog, kong_log_events
from metering.gateways.kong.values import KongLogError, Reason
from metering.ingest import CloudEvent, MalformedBody
from metering.partitions import month_start

# A skipped log is kept as a sample for the operator, cut to this many characters.
SAMPLE_CHARS = 4000


@dataclass(frozen=True)
class SkippedLog:
    """A log that became no event: its index in the batch, why, and the log itself as
    text (cut to ``SAMPLE_CHARS``) for the operator to see."""

    index: int
    reason: Reason
    detail: str
    sample: str


@dataclass(frozen=True)
class KongBatch:
    events: list[CloudEvent]
    skipped: list[SkippedLog]


_decode_raw = msgspec.json.Decoder(msgspec.Raw)
_decode_raw_list = msgspec.json.Decoder(list[msgspec.Raw])


def kong_logs_parse(body: bytes) -> list[Any]:
    """The logs in a request body: one JSON object, or a JSON array of them. A log that
    cannot be decoded (bytes that are not UTF-8, a number out of range) is an
    ``UnreadableLog`` in its place.

    Raises ``MalformedBody`` when the body is not JSON, is nested too deeply to read, or
    is neither an object nor an array.
    """
    try:
        value = msgspec.json.decode(body)
    except (msgspec.ValidationError, UnicodeDecodeError):
        return _logs_one_by_one(body)
    except msgspec.DecodeError as exc:
        raise _malformed(body, exc) from exc
    except RecursionError as exc:
        raise MalformedBody("The body is nested too deeply to read.") from exc
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return value
    raise MalformedBody("Send one Kong log as a JSON object, or a batch as a JSON array.")


def _logs_one_by_one(body: bytes) -> list[Any]:
    is_array = body.lstrip()[:1] == b"["
    try:
        raws = _decode_raw_list.decode(body) if is_array else [_decode_raw.decode(body)]
    except msgspec.DecodeError as exc:
        raise _malformed(body, exc) from exc
    except RecursionError as exc:
        raise MalformedBody("The body is nested too deeply to read.") from exc
    if not is_array and body.lstrip()[:1] != b"{":
        raise MalformedBody("Send one Kong log as a JSON object, or a batch as a JSON array.")
    logs: list[Any] = []
    for raw in raws:
        try:
            logs.append(msgspec.json.decode(raw))
        except UnicodeDecodeError:
            logs.append(UnreadableLog(Reason.NOT_UTF8, "the log is not valid UTF-8", bytes(raw)))
        except msgspec.ValidationError as exc:  # "Number out of range - at `$[...]`"
            detail = f"the log cannot be read: {str(exc).split(' - at ')[0]}"
            logs.append(UnreadableLog(Reason.BAD_NUMBER, detail, bytes(raw)))
    return logs


def _malformed(body: bytes, exc: msgspec.DecodeError) -> MalformedBody:
    try:
        body.decode()
    except UnicodeDecodeError:
        return MalformedBody(f"The body is not UTF-8 JSON: {exc}")
    return MalformedBody(f"Malformed JSON: {exc}")


def kong_logs_to_events(
    logs: list[Any], *, options: KongOptions, received_at: datetime | None
) -> KongBatch:
    """Convert every log that can be converted, and skip the others: the events of the
    good logs, and one ``SkippedLog`` per log that cannot become events (no subject,
    unreadable; see ``kong_log_events``). Unlike the events endpoint, never all or
    nothing: a gateway's batch holds many clients' requests, and one bad log must not
    cost the rest. ``received_at``: when the request arrived (None: no upper bound on
    event times)."""
    events: list[CloudEvent] = []
    skipped: list[SkippedLog] = []
    for index, log in enumerate(logs):
        try:
            events.extend(kong_log_events(log, options=options, received_at=received_at))
        except KongLogError as exc:
            skipped.append(SkippedLog(index, exc.reason, str(exc), _sample(log)))
    return KongBatch(events=events, skipped=skipped)


def kong_events_set_aside(
    events: list[CloudEvent], *, months: set[date], received_at: datetime
) -> KongBatch:
    """The events outside ``months`` (month starts, UTC), and a ``SkippedLog`` for each
    log whose events fall in them (its ``request`` event as the sample): for logs in
    more months without a partition than one request may open. Their index is -1: the
    batch's order is not kept in events."""
    kept: list[CloudEvent] = []
    skipped: list[SkippedLog] = []
    for event in events:
        if month_start(event.time or received_at) not in months:
            kept.append(event)
        elif event.type == REQUEST_TYPE:  # one per log; its llm events go with it
            detail = (
                "started_at: in a month with no partition yet, past the "
                "months one request may open; send older logs in smaller batches"
            )
            skipped.append(SkippedLog(-1, Reason.BAD_TIME, detail, _sample(event)))
    return KongBatch(events=kept, skipped=skipped)


def _sample(log: Any) -> str:
    """The log as JSON text for the operator, cut to ``SAMPLE_CHARS``; bytes that are not
    UTF-8 shown as escapes, and a NUL as its JSON escape (PostgreSQL's text refuses it)."""
    if isinstance(log, UnreadableLog):
        text = log.raw[: SAMPLE_CHARS * 4].decode("utf-8", errors="backslashreplace")
    else:
        text = msgspec.json.encode(log).decode()
    text = text.replace("\x00", "\\u0000")
    return text if len(text) <= SAMPLE_CHARS else text[: SAMPLE_CHARS - 1] + "…"
