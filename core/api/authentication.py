from __future__ import annotations

from django.utils import timezone
from rest_framework import authentication, exceptions

from core.services import api_key_authenticate


class ApiKeyPrincipal:
    """The ``request.user`` of a request authenticated by an API key."""

    is_authenticated = True
    is_staff = False
    is_superuser = False

    def __init__(self, api_key) -> None:
        self.api_key = api_key
        self.pk = None
        self.username = f"api-key:{api_key.prefix}"

    def __str__(self) -> str:
        return self.username


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <api key>``.

    No header: not authenticated (DRF answers 401 with ``WWW-Authenticate: Bearer``).
    A wrong, malformed or revoked key: 401.
    """

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: use 'Bearer <api key>'."
            )
        try:
            secret = header[1].decode()
        except UnicodeError as exc:
            raise exceptions.AuthenticationFailed("Invalid API key.") from exc
        api_key = api_key_authenticate(secret=secret, now=timezone.now())
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        return ApiKeyPrincipal(api_key), api_key

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="api"'
