"""Kong Gateway logs as usage events: the payload of Kong's HTTP Log plugin.

Kong's logging plugins (http-log, and file-log, tcp-log, ... which share the serializer
``kong.log.serialize()``) send one JSON object per proxied request; http-log sends a
JSON array when its queue batches (``queue.max_batch_size`` > 1). The shape, as read
from Kong's source and docs:

- ``kong/pdk/log.lua`` (``serialize``, Kong 3.x): ``request {id, uri, url, querystring,
  method, headers, size, tls}``, ``response {status, headers, size}``, ``upstream_uri``,
  ``upstream_status``, ``latencies {kong, proxy, request, receive}`` (ms; ``proxy`` is -1
  when no upstream answered), ``tries``, ``authenticated_entity {id, consumer_id}``,
  ``route``, ``service``, ``consumer {id, username, custom_id, ...}``, ``client_ip``,
  ``started_at`` (ms since the epoch), ``source``, ``workspace``, ``workspace_name``.
  ``request.id`` exists since Kong 3.5 (the ``X-Kong-Request-Id``); before, there is no id.
  Sizes were numeric strings in old releases; header names are lower case, and a
  repeated header is a list.
- Kong AI Gateway (``ai-proxy``, ``ai-proxy-advanced`` with ``logging.log_statistics``):
  ``ai.proxy.{meta, usage}`` since 3.8 (``kong/llm/plugin/shared-filters/
  serialize-analytics.lua``); ``ai["ai-proxy"].{meta, usage}`` in 3.6 and 3.7, and
  ``ai["<plugin name>"]`` for the LLM-calling transformer plugins
  (``kong/llm/drivers/shared.lua``). ``usage {prompt_tokens, completion_tokens,
  total_tokens, cost, time_per_token}`` (the 3.7-3.9 docs spell ``prompt_token`` and
  ``completion_token``; both spellings are read), ``meta {plugin_id, provider_name,
  request_model, response_model, llm_latency}``.

Each log becomes one ``request`` event and, for each AI section that counted tokens, an
``llm`` event per direction, input (prompt) and output (completion), in OpenMeter's and
Kong's own Metering & Billing plugin's shape: ``tokens`` and what they were (see
``kong_log_events``). A log that cannot become events (no subject,
unreadable) is skipped with a reason, never a reason to refuse the others: Kong's queue
retries a refused batch and then drops it, good logs and all. The functions here are
pure: no ORM, no clock.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec

from metering.ingest import CloudEvent, MalformedBody
from metering.ingest_limits import (
    EARLIEST_TIME,
    VALUE_DECIMAL_PLACES,
    VALUE_MAX_EXCLUSIVE,
    number_problem,
    text_problem,
    time_problem,
)
from metering.models import KongSkippedEntry
from metering.partitions import month_start

Reason = KongSkippedEntry.Reason

REQUEST_TYPE = "request"
LLM_TYPE = "llm"
# The ``direction`` of an llm event: the tokens sent to the model (prompt) or returned by
# it (completion), priced apart by every LLM provider.
INPUT = "input"
OUTPUT = "output"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_KEY = 255
# A count written as text: ASCII digits only (str.isdigit() also takes "²", which int()
# refuses), and few enough to stay below the limit of every metered number.
_MAX_COUNT_DIGITS = len(str(VALUE_MAX_EXCLUSIVE - 1))
_MAX_ID = 200  # leaves room for the ":llm:<plugin>:<direction>" suffix of LLM events' ids
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
# A skipped log is kept as a sample for the operator, cut to this many characters.
SAMPLE_CHARS = 4000


@dataclass(frozen=True)
class KongOptions:
    """How logs become events: the CloudEvents ``source`` of every event, and the request
    header (lower case) that names the subject, when the operator chose one."""

    source: str = "kong"
    subject_header: str = ""


class KongLogError(ValueError):
    """A log that cannot become events: ``reason`` is what it is counted under, the
    message says what exactly (shown to the operator with the log)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class UnreadableLog:
    """An item of the body that could not be decoded (not UTF-8, a number out of range),
    kept in its place, with its bytes, so that it is skipped like any other bad log."""

    reason: Reason
    detail: str
    raw: bytes


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


def kong_options(*, source: str, subject_header: str | None) -> KongOptions:
    """Checked options; raises ``ValueError`` for an empty or too long source, or a
    subject header that is not an HTTP header name."""
    source = (source or "").strip()
    if not source or len(source) > _MAX_KEY:
        raise ValueError("The Kong event source must be 1 to 255 characters.")
    header = (subject_header or "").strip()
    if header and not _HEADER_NAME.match(header):
        raise ValueError(f"{header!r} is not an HTTP header name.")
    return KongOptions(source=source, subject_header=header.lower())


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


def kong_log_events(
    log: Any, *, options: KongOptions, received_at: datetime | None
) -> list[CloudEvent]:
    """The events of one Kong log. Raises ``KongLogError`` (with the reason it is counted
    under) when it is unreadable, has no subject, a subject that cannot be stored, no
    ``request`` (stream logs), a ``started_at`` that is unreadable or outside the
    accepted time window (docs/limits.md), or unreadable token counts.

    - ``request``: ``data`` = route_name (Kong's ``route.name``), route (the route's
      name, else its first configured path: what identifies the route either way),
      path (the request's path, ``request.uri`` without the query string), service
      (name, else host), method, status (a string), latency_ms / kong_latency_ms /
      upstream_latency_ms, request_bytes / response_bytes, workspace.
    - ``llm`` (per AI section, one for its input tokens and one for its output tokens,
      each only when not zero): tokens, direction (``input`` or ``output``), model (the
      requested model), response_model, provider, plugin, and route_name, route, path,
      service, status; the input event also carries prompt_tokens and the output event
      completion_tokens (the same number as tokens, for meters that sum those fields).
      The call's first event (input, unless it had none) also carries total_tokens, cost
      (a decimal string, Kong's own estimate) and llm_latency_ms, so that each call
      counts once in a sum of them.

    Subject: the configured request header when the log carries it, else the consumer's
    custom_id, username or id. Time: ``started_at``. Id: Kong's request id, so a re-sent
    log counts once (a hash of the log's identifying fields before Kong 3.5); an llm
    event's id is that id with ``:llm:<plugin>:<direction>``. Numbers
    that a meter could not sum (10^15 or more) are left out; fractions are rounded to the
    decimal places a usage bucket keeps.
    """
    if isinstance(log, UnreadableLog):
        raise KongLogError(log.reason, log.detail)
    if not isinstance(log, dict):
        raise KongLogError(Reason.NOT_A_LOG, "must be a Kong log object")
    request = log.get("request")
    if not isinstance(request, dict):
        raise KongLogError(
            Reason.NOT_A_LOG, "request: required (stream, i.e. TCP/UDP, logs are not metered here)"
        )
    response = _dict(log.get("response"))
    subject = _subject(log, request, options)
    time = _time(log.get("started_at"), received_at=received_at)
    event_id = _event_id(log, request, response)
    route_info = _dict(log.get("route"))
    route_name = _text(route_info.get("name"))
    route = route_name or _first_path(route_info)
    path = _path(request.get("uri"))
    service = _service_name(_dict(log.get("service")))
    status = _status(response.get("status"))
    latencies = _dict(log.get("latencies"))
    upstream_latency = _number(latencies.get("proxy"))

    def event(id_: str, type_: str, data: dict[str, Any]) -> CloudEvent:
        payload = {k: v for k, v in data.items() if v is not None}
        return CloudEvent(
            id=id_,
            source=options.source,
            type=type_,
            subject=subject,
            time=time,
            data=msgspec.Raw(msgspec.json.encode(payload)),
        )

    events = [
        event(
            event_id,
            REQUEST_TYPE,
            {
                "route": route,
                "route_name": route_name,
                "service": service,
                "method": _text(request.get("method")),
                "status": status,
                "path": path,
                "latency_ms": _number(latencies.get("request")),
                "kong_latency_ms": _number(latencies.get("kong")),
                "upstream_latency_ms": None if upstream_latency == -1 else upstream_latency,
                "request_bytes": _count(request.get("size")),
                "response_bytes": _count(response.get("size")),
                "workspace": _text(log.get("workspace_name")),
            },
        )
    ]
    for plugin, usage, meta in _ai_sections(log.get("ai")):
        prompt = _tokens(usage, ("prompt_tokens", "prompt_token"), plugin) or 0
        completion = _tokens(usage, ("completion_tokens", "completion_token"), plugin) or 0
        if not prompt and not completion:
            continue  # an error or cache hit that used no tokens is no LLM usage
        total = _tokens(usage, ("total_tokens",), plugin)
        request_model = _text(meta.get("request_model"))
        response_model = _text(meta.get("response_model"))
        if request_model in (None, "UNSPECIFIED"):
            request_model = response_model
        call = {
            "model": request_model,
            "response_model": response_model,
            "provider": _text(meta.get("provider_name")),
            "plugin": _text(plugin),
            "route": route,
            "route_name": route_name,
            "path": path,
            "service": service,
            "status": status,
        }
        # What describes the call as a whole rides on its first event only, so that a
        # SUM over llm events counts each call once.
        whole_call = {
            "total_tokens": total or prompt + completion,
            "cost": _decimal_text(usage.get("cost")),
            "llm_latency_ms": _number(meta.get("llm_latency")),
        }
        # Each direction also keeps the field it was read from (prompt_tokens,
        # completion_tokens), which meters made before the direction events still sum.
        # A direction without tokens (an embeddings call's output) has no event.
        directions = [
            (direction, tokens, field)
            for direction, tokens, field in (
                (INPUT, prompt, "prompt_tokens"),
                (OUTPUT, completion, "completion_tokens"),
            )
            if tokens
        ]
        for position, (direction, tokens, field) in enumerate(directions):
            data = {"tokens": tokens, "direction": direction, field: tokens, **call}
            if position == 0:
                data |= whole_call
            events.append(event(_llm_event_id(event_id, plugin, direction), LLM_TYPE, data))
    return events


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any, *, keep_nul: bool = False) -> str | None:
    """A non-empty string without NUL characters (PostgreSQL's jsonb refuses them);
    ``keep_nul`` leaves them for the caller to refuse."""
    if not isinstance(value, str):
        return None
    value = (value if keep_nul else value.replace("\x00", "")).strip()
    return value or None


def _header(headers: Any, name: str, *, keep_nul: bool = False) -> str | None:
    """A header's value; Kong logs names in lower case and a repeated header as a list."""
    if not isinstance(headers, dict) or not name:
        return None
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    if isinstance(value, list):
        value = next((v for v in value if _text(v)), None)
    return _text(value, keep_nul=keep_nul)


def _subject(log: dict[str, Any], request: dict[str, Any], options: KongOptions) -> str:
    if options.subject_header:
        value = _header(request.get("headers"), options.subject_header, keep_nul=True)
        if value:
            return _checked_subject(value, f"request.headers.{options.subject_header}")
    if subject := kong_consumer_subject(_dict(log.get("consumer"))):
        return subject
    where = "no consumer"
    if options.subject_header:
        where += f" and no '{options.subject_header}' request header"
    raise KongLogError(
        Reason.NO_SUBJECT,
        f"subject: the log has {where}; authenticate the route with a Kong consumer, "
        "or name a request header that carries the subject "
        "(.../http-log/subject-header/<name>)",
    )


# Which of a Kong consumer's identifiers becomes the event's subject, first present wins.
# The consumer import (metering.gateways.consumers) keys consumers the same way, so a
# mapping made from an imported consumer matches its traffic.
CONSUMER_SUBJECT_FIELDS = ("custom_id", "username", "id")


def kong_consumer_subject(consumer: dict[str, Any]) -> str | None:
    """The subject Kong's traffic from ``consumer`` (a log's ``consumer`` object, or one
    from the Admin API's ``GET /consumers``) carries: its ``custom_id``, else its
    ``username``, else its ``id``; None when it has none. Raises ``KongLogError`` when the
    value cannot be a subject (a NUL, or too long)."""
    for field in CONSUMER_SUBJECT_FIELDS:
        value = _text(consumer.get(field), keep_nul=True)
        if value:
            return _checked_subject(value, f"consumer.{field}")
    return None


def _checked_subject(value: str, where: str) -> str:
    """The subject as sent: a NUL is not dropped as in other text, since "a\\0b" and
    "ab" are different consumers."""
    if reason := text_problem(value):
        raise KongLogError(Reason.BAD_SUBJECT, f"subject: {where} {reason}")
    if len(value) > _MAX_KEY:
        raise KongLogError(
            Reason.BAD_SUBJECT, f"subject: {where} is longer than {_MAX_KEY} characters"
        )
    return value


def _time(started_at: Any, *, received_at: datetime | None) -> datetime | None:
    if started_at is None:
        return None  # the event then takes the time it was received
    if isinstance(started_at, bool) or not isinstance(started_at, int | float):
        raise KongLogError(Reason.BAD_TIME, "started_at: must be milliseconds since the epoch")
    try:
        time = _EPOCH + timedelta(milliseconds=started_at)
    except (OverflowError, ValueError) as exc:  # NaN is a ValueError
        raise KongLogError(Reason.BAD_TIME, "started_at: out of range") from exc
    if time < EARLIEST_TIME:
        # most likely seconds, not milliseconds: skip it rather than file it in 1970
        raise KongLogError(
            Reason.BAD_TIME,
            f"started_at: before {EARLIEST_TIME:%Y}; Kong sends milliseconds since the epoch",
        )
    if reason := time_problem(time, received_at=received_at):
        raise KongLogError(Reason.BAD_TIME, f"started_at: {reason}")
    return time


def _event_id(log: dict[str, Any], request: dict[str, Any], response: dict[str, Any]) -> str:
    """Kong's own request id (``request.id`` since 3.5, also the ``X-Kong-Request-Id``
    response header). Without one, a hash of what tells requests apart: http-log re-sends
    a log byte for byte, so it hashes the same. A client-sent ``Kong-Request-ID`` is only
    part of the hash, never the id alone: a client could otherwise repeat one id to have
    many requests counted once."""
    request_id = _text(request.get("id")) or _header(response.get("headers"), "x-kong-request-id")
    if request_id and len(request_id) <= _MAX_ID:
        return request_id
    consumer = _dict(log.get("consumer"))
    fingerprint = [
        request_id,
        log.get("started_at"),
        log.get("client_ip"),
        request.get("method"),
        request.get("url") or request.get("uri"),
        request.get("size"),
        _header(request.get("headers"), "kong-request-id"),
        _header(request.get("headers"), "x-kong-request-id"),
        response.get("status"),
        response.get("size"),
        _dict(log.get("latencies")).get("request"),
        consumer.get("id"),
        _dict(log.get("route")).get("id"),
        _dict(log.get("service")).get("id"),
    ]
    return "sha256:" + hashlib.sha256(msgspec.json.encode(fingerprint)).hexdigest()


def _llm_event_id(event_id: str, plugin: str, direction: str) -> str:
    """The request's id, the AI section's name and the direction: one LLM event per
    plugin, direction and request, the same each time Kong sends the log again."""
    llm_id = f"{event_id}:llm:{plugin}:{direction}"
    if len(llm_id) > _MAX_KEY or "\x00" in plugin:
        plugin_hash = hashlib.sha256(plugin.encode()).hexdigest()[:16]
        llm_id = f"{event_id}:llm:{plugin_hash}:{direction}"
    return llm_id


def _first_path(route: dict[str, Any]) -> str | None:
    paths = route.get("paths")
    if isinstance(paths, list):
        return next((p for p in map(_text, paths) if p), None)
    return None


def _service_name(service: dict[str, Any]) -> str | None:
    return _text(service.get("name")) or _text(service.get("host")) or _text(service.get("id"))


def _status(value: Any) -> str | None:
    count = _count(value)
    return str(count) if count is not None else None


def _path(uri: Any) -> str | None:
    uri = _text(uri)
    return uri.split("?", 1)[0] if uri else None


def _number(value: Any) -> int | float | None:
    """A number a meter can sum: None for anything else, and for magnitudes of 10^15 or
    more; a fraction rounded (half to even) to the decimal places a usage bucket keeps."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float):
        value = round(value, VALUE_DECIMAL_PLACES)
    if number_problem(value):
        return None
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _count(value: Any) -> int | None:
    """A non-negative integer, also from the numeric strings older Kong releases logged."""
    if isinstance(value, str):
        digits = value.strip()
        if digits.isascii() and digits.isdigit() and len(digits) <= _MAX_COUNT_DIGITS:
            return int(digits)
        return None
    number = _number(value)
    return number if isinstance(number, int) and number >= 0 else None


def _tokens(usage: dict[str, Any], names: tuple[str, ...], plugin: str) -> int | None:
    for name in names:
        value = usage.get(name)
        if value is None:
            continue
        count = _count(value)
        if count is None:
            raise KongLogError(
                Reason.BAD_TOKENS, f"ai.{plugin}.usage.{name}: must be a whole number of tokens"
            )
        return count
    return None


def _decimal_text(value: Any) -> str | None:
    """Money travels as a decimal string; the shortest text that reads back as the
    float Kong wrote is the number Kong meant."""
    number = _number(value)
    if number is None:
        return None
    return format(Decimal(repr(number)).normalize(), "f")


def _ai_sections(ai: Any) -> Iterable[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(plugin namespace, usage, meta) of each AI plugin section that logged usage, in a
    fixed order so the events of a re-sent log are the same."""
    if not isinstance(ai, dict):
        return []
    sections = []
    for plugin in sorted(ai):
        section = ai[plugin]
        if isinstance(section, dict) and isinstance(section.get("usage"), dict):
            sections.append((plugin, section["usage"], _dict(section.get("meta"))))
    return sections
