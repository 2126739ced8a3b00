"""Who a Kong log's usage belongs to: the request header the operator named, when the
log carries it, else the Kong consumer's identifiers. A subject is kept as sent (a NUL
is refused, not dropped), since two different values are two different customers."""

from __future__ import annotations

from typing import Any

from metering.gateways.kong.values import MAX_KEY, KongLogError, Reason, as_dict, header, text
from metering.ingest_limits import text_problem

# Which of a Kong consumer's identifiers becomes the event's subject, first present wins.
# The consumer import (metering.gateways.consumers) keys consumers the same way, so a
# mapping made from an imported consumer matches its traffic.
CONSUMER_SUBJECT_FIELDS = ("custom_id", "username", "id")


def log_subject(log: dict[str, Any], request: dict[str, Any], *, subject_header: str) -> str:
    """The subject of ``log``: the ``subject_header`` request header (lower case; empty:
    none) when the log carries it, else the consumer's (``kong_consumer_subject``).
    Raises ``KongLogError`` when there is neither, or the value cannot be a subject."""
    if subject_header:
        value = header(request.get("headers"), subject_header, keep_nul=True)
        if value:
            return _checked_subject(value, f"request.headers.{subject_header}")
    if subject := kong_consumer_subject(as_dict(log.get("consumer"))):
        return subject
    where = "no consumer"
    if subject_header:
        where += f" and no '{subject_header}' request header"
    raise KongLogError(
        Reason.NO_SUBJECT,
        f"subject: the log has {where}; authenticate the route with a Kong consumer, "
        "or name a request header that carries the subject "
        "(.../http-log/subject-header/<name>)",
    )


def kong_consumer_subject(consumer: dict[str, Any]) -> str | None:
    """The subject Kong's traffic from ``consumer`` (a log's ``consumer`` object, or one
    from the Admin API's ``GET /consumers``) carries: its ``custom_id``, else its
    ``username``, else its ``id``; None when it has none. Raises ``KongLogError`` when the
    value cannot be a subject (a NUL, or too long)."""
    for field in CONSUMER_SUBJECT_FIELDS:
        value = text(consumer.get(field), keep_nul=True)
        if value:
            return _checked_subject(value, f"consumer.{field}")
    return None


def _checked_subject(value: str, where: str) -> str:
    """The subject as sent: a NUL is not dropped as in other text, since "a\\0b" and
    "ab" are different consumers."""
    if reason := text_problem(value):
        raise KongLogError(Reason.BAD_SUBJECT, f"subject: {where} {reason}")
    if len(value) > MAX_KEY:
        raise KongLogError(
            Reason.BAD_SUBJECT, f"subject: {where} is longer than {MAX_KEY} characters"
        )
    return value
