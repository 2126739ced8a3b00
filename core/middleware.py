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
