"""One Kong log into its events: the ``request`` event (its subject, time and id), then
the ``llm`` events of its AI sections (``metering.gateways.kong.ai``)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from metering.gateways.kong.ai import LLM_TYPE, llm_events_data
from metering.gateways.kong.subject import log_subject
from metering.gateways.kong.values import (
    MAX_KEY,
    KongLogError,
    Reason,
    as_dict,
    count,
    header,
    number,
    text,
)
from metering.ingest import CloudEvent
from metering.ingest_limits import EARLIEST_TIME, time_problem

REQUEST_TYPE = "request"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_ID = 200  # leaves room for the ":llm:<plugin>:<direction>" suffix of LLM events' ids
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


@dataclass(frozen=True)
class KongOptions:
    """How logs become events: the CloudEvents ``source`` of every event, and the request
    header (lower case) that names the subject, when the operator chose one."""

    source: str = "kong"
    subject_header: str = ""


@dataclass(frozen=True)
class UnreadableLog:
    """An item of the body that could not be decoded (not UTF-8, a number out of range),
    kept in its place, with its bytes, so that it is skipped like any other bad log."""

    reason: Reason
    detail: str
    raw: bytes


def kong_options(*, source: str, subject_header: str | None) -> KongOptions:
    """Checked options; raises ``ValueError`` for an empty or too long source, or a
    subject header that is not an HTTP header name."""
    source = (source or "").strip()
    if not source or len(source) > MAX_KEY:
        raise ValueError("The Kong event source must be 1 to 255 characters.")
    name = (subject_header or "").strip()
    if name and not _HEADER_NAME.match(name):
        raise ValueError(f"{name!r} is not an HTTP header name.")
    return KongOptions(source=source, subject_header=name.lower())


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
    request = _request(log)
    response = as_dict(log.get("response"))
    subject = log_subject(log, request, subject_header=options.subject_header)
    time = _time(log.get("started_at"), received_at=received_at)
    event_id = _event_id(log, request, response)

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

    where = _where(log, request, response)
    events = [event(event_id, REQUEST_TYPE, _request_data(log, request, response, where))]
    for llm_id, data in llm_events_data(log.get("ai"), event_id=event_id, where=where):
        events.append(event(llm_id, LLM_TYPE, data))
    return events


def _request(log: Any) -> dict[str, Any]:
    """The log's ``request`` object; raises ``KongLogError`` for what is not a log of an
    HTTP request."""
    if isinstance(log, UnreadableLog):
        raise KongLogError(log.reason, log.detail)
    if not isinstance(log, dict):
        raise KongLogError(Reason.NOT_A_LOG, "must be a Kong log object")
    request = log.get("request")
    if not isinstance(request, dict):
        raise KongLogError(
            Reason.NOT_A_LOG, "request: required (stream, i.e. TCP/UDP, logs are not metered here)"
        )
    return request


def _where(
    log: dict[str, Any], request: dict[str, Any], response: dict[str, Any]
) -> dict[str, Any]:
    """What every event of the log names: route, route_name, path, service, status."""
    route_info = as_dict(log.get("route"))
    route_name = text(route_info.get("name"))
    return {
        "route": route_name or _first_path(route_info),
        "route_name": route_name,
        "path": _path(request.get("uri")),
        "service": _service_name(as_dict(log.get("service"))),
        "status": _status(response.get("status")),
    }


def _request_data(
    log: dict[str, Any], request: dict[str, Any], response: dict[str, Any], where: dict[str, Any]
) -> dict[str, Any]:
    """The ``request`` event's data: where it went, how it went, how long, how big."""
    latencies = as_dict(log.get("latencies"))
    upstream_latency = number(latencies.get("proxy"))
    return {
        "route": where["route"],
        "route_name": where["route_name"],
        "service": where["service"],
        "method": text(request.get("method")),
        "status": where["status"],
        "path": where["path"],
        "latency_ms": number(latencies.get("request")),
        "kong_latency_ms": number(latencies.get("kong")),
        "upstream_latency_ms": None if upstream_latency == -1 else upstream_latency,
        "request_bytes": count(request.get("size")),
        "response_bytes": count(response.get("size")),
        "workspace": text(log.get("workspace_name")),
    }


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
    request_id = text(request.get("id")) or header(response.get("headers"), "x-kong-request-id")
    if request_id and len(request_id) <= _MAX_ID:
        return request_id
    consumer = as_dict(log.get("consumer"))
    fingerprint = [
        request_id,
        log.get("started_at"),
        log.get("client_ip"),
        request.get("method"),
        request.get("url") or request.get("uri"),
        request.get("size"),
        header(request.get("headers"), "kong-request-id"),
        header(request.get("headers"), "x-kong-request-id"),
        response.get("status"),
        response.get("size"),
        as_dict(log.get("latencies")).get("request"),
        consumer.get("id"),
        as_dict(log.get("route")).get("id"),
        as_dict(log.get("service")).get("id"),
    ]
    return "sha256:" + hashlib.sha256(msgspec.json.encode(fingerprint)).hexdigest()


def _first_path(route: dict[str, Any]) -> str | None:
    paths = route.get("paths")
    if isinstance(paths, list):
        return next((p for p in map(text, paths) if p), None)
    return None


def _service_name(service: dict[str, Any]) -> str | None:
    return text(service.get("name")) or text(service.get("host")) or text(service.get("id"))


def _status(value: Any) -> str | None:
    status = count(value)
    return str(status) if status is not None else None


def _path(uri: Any) -> str | None:
    uri = text(uri)
    return uri.split("?", 1)[0] if uri else None
