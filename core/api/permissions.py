from __future__ import annotations

from rest_framework import exceptions, permissions

from core.models import ApiKey

SAFE_METHODS = permissions.SAFE_METHODS


class HasScope(permissions.BasePermission):
    """Scope check: reads need ``read``, changes need ``write``.

    A view may name its own scope with ``required_scope`` (the event endpoint asks for
    ``ingest``). Staff signed in to the admin may use the API in the browser.
    """

    def has_permission(self, request, view) -> bool:
        if (
            request.auth is None
            and request.user is not None
            and getattr(request.user, "is_staff", False)
        ):
            return True
        if not isinstance(request.auth, ApiKey):
            if request.user is not None and request.user.is_authenticated:
                return False  # signed in, but not staff
            raise exceptions.NotAuthenticated()
        scope = getattr(view, "required_scope", None)
        if scope is None:
            scope = "read" if request.method in SAFE_METHODS else "write"
        if scope not in request.auth.scopes:
            self.message = f"This API key lacks the '{scope}' scope."
            return False
        return True
