"""Request bodies of the ingestion endpoints: read once, within a size limit, and the
all-or-nothing error answer naming every bad item."""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.response import Response

from core.api.errors import problem_response


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."


def body_read(request) -> bytes:
    """The raw body, refused with 413 past ``METERING_MAX_BODY_BYTES`` (declared or read)."""
    limit = settings.METERING_MAX_BODY_BYTES
    declared = request.META.get("CONTENT_LENGTH")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The body has {declared} bytes; the limit is {limit}.")
    body = request._request.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge(f"The body is larger than the limit of {limit} bytes.")
    return body


def invalid_items(errors: Sequence, *, detail: str) -> Response:
    """400 listing each bad item's index and reason; nothing was stored."""
    return problem_response(
        status_code=status.HTTP_400_BAD_REQUEST,
        detail=detail,
        errors=[{"index": e.index, "reason": e.reason} for e in errors],
    )
