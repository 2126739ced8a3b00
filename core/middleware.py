"""Django's browser middleware, skipped for API requests that carry a bearer key.

A request under ``/api/`` with ``Authorization: Bearer …`` is authenticated by its API
key alone: DRF tries ``ApiKeyAuthentication`` first, and for such a header it either
accepts the key or answers 401, so the session is never consulted. Sessions, the session
user and messages then do nothing for it but cost CPU on the gateway's hot path (a lazy
session and user, a message storage, ``Vary: Cookie``).

These subclasses keep their places in ``MIDDLEWARE`` (Django's admin checks look for
them there) and behave exactly as Django's for every other request: the admin, the
portal, the hosted pages, and staff using the API with their admin session (no bearer
header). Two are left as Django ships them: ``CsrfViewMiddleware`` (``check --deploy``
looks for it by name, and for DRF's views, which are CSRF-exempt, it costs next to
nothing), and ``simple_history``'s middleware, which names the API key in the change
reason of a write made through the API.
"""

from __future__ import annotations

from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpResponseBadRequest, JsonResponse

API_PREFIX = "/api/"


def bearer_api_request(request) -> bool:
    """Whether ``request`` is an API call authenticated by ``Authorization: Bearer <key>``
    (the first word of the header is exactly ``Bearer``, as ``ApiKeyAuthentication``
    reads it)."""
    return (
        request.path_info.startswith(API_PREFIX)
        and request.META.get("HTTP_AUTHORIZATION", "")[:7].lower() == "bearer "
    )


class _SkippedForBearerApi:
    def __call__(self, request):
        if bearer_api_request(request):
            return self.get_response(request)
        return super().__call__(request)


class BrowserSessionMiddleware(_SkippedForBearerApi, SessionMiddleware):
    pass


class BrowserAuthenticationMiddleware(_SkippedForBearerApi, AuthenticationMiddleware):
    pass


class BrowserMessageMiddleware(_SkippedForBearerApi, MessageMiddleware):
    pass


class NulInUrlRefusalMiddleware:
    """Answers 400 to a request whose path or query string holds a NUL character
    (``%00``), before any view or lookup sees it.

    PostgreSQL cannot hold NUL in text, so a NUL in a key looked up (``/api/v1/customers/
    a%00b``, ``?customer=a%00b``, an admin page's id) would end as a server error wherever
    it reaches the database; no key, id or parameter of the product contains one. The API
    answers a problem document, other pages a plain 400.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        query = request.META.get("QUERY_STRING", "")
        if "\x00" in request.path_info or "%00" in query or "\x00" in query:
            where = "path" if "\x00" in request.path_info else "query string"
            detail = f"The URL's {where} holds a NUL character (%00), which no key or value can."
            if request.path_info.startswith(API_PREFIX):
                return JsonResponse(
                    {
                        "type": "about:blank",
                        "title": "Bad request",
                        "status": 400,
                        "detail": detail,
                    },
                    status=400,
                    content_type="application/problem+json",
                )
            return HttpResponseBadRequest(detail, content_type="text/plain; charset=utf-8")
        return self.get_response(request)
