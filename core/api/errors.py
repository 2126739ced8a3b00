"""Errors as RFC 9457 problem documents (``application/problem+json``).

Validation errors carry field-level detail in ``errors``: a mapping from field name (or
``non_field_errors``) to a list of messages, nested as the request body is.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

PROBLEM_CONTENT_TYPE = "application/problem+json"

TITLES = {
    400: "Bad request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    429: "Too many requests",
}


def problem_response(
    *, status_code: int, detail: str, errors=None, headers=None, type_: str = "about:blank", **extra
) -> Response:
    body = {
        "type": type_,
        "title": TITLES.get(status_code, "Error"),
        "status": status_code,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    body.update(extra)
    return Response(body, status=status_code, headers=headers, content_type=PROBLEM_CONTENT_TYPE)


def django_validation_error_detail(exc: DjangoValidationError):
    if hasattr(exc, "error_dict"):
        return {
            field: [m for e in errs for m in e.messages] for field, errs in exc.error_dict.items()
        }
    return {"non_field_errors": exc.messages}


def problem_exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(django_validation_error_detail(exc))
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    response = exception_handler(exc, context)
    if response is None:
        return None
    headers = {
        k: v
        for k, v in response.items()
        if k.lower() in {"www-authenticate", "retry-after", "allow"}
    }
    if isinstance(exc, exceptions.ValidationError):
        errors = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        return problem_response(
            status_code=status.HTTP_400_BAD_REQUEST,
            detail="The request is invalid; see errors for each field.",
            errors=errors,
            headers=headers,
        )
    detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
    return problem_response(status_code=response.status_code, detail=str(detail), headers=headers)
