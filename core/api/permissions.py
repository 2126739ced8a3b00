from __future__ import annotations

from rest_framework import exceptions, permissions

from core.models import ApiKey

SAFE_METHODS = permissions.SAFE_METHODS

# What a staff member signed in to the admin needs to use the API in the browser, by the
# scope an API key would need: the operator roles grant these (see audit.roles).
STAFF_SCOPE_PERMISSIONS = {"read": "core.api_read"}
STAFF_WRITE_PERMISSION = "core.api_write"  # write, ingest and any other scope


def required_scope(request, view) -> str:
    scope = getattr(view, "required_scope", None)
    if scope is None:
        scope = "read" if request.method in SAFE_METHODS else "write"
    return scope


class HasScope(permissions.BasePermission):
    """Scope check: reads need ``read``, changes need ``write``.

    A view may name its own scope with ``required_scope`` (the event endpoint asks for
    ``ingest``). Staff signed in to the admin may use the API in the browser as far as
    their role allows: reading needs ``core.api_read`` (every role), anything else
    ``core.api_write`` (billing admins); superusers may do everything.
    """

    def has_permission(self, request, view) -> bool:
        scope = required_scope(request, view)
        if (
            request.auth is None
            and request.user is not None
            and getattr(request.user, "is_staff", False)
        ):
            needed = STAFF_SCOPE_PERMISSIONS.get(scope, STAFF_WRITE_PERMISSION)
            if request.user.has_perm(needed):
                return True
            self.message = (
                "Your role may read through the API but not change anything."
                if scope != "read" and request.user.has_perm("core.api_read")
                else "Your role does not allow using the API."
            )
            return False
        if not isinstance(request.auth, ApiKey):
            if request.user is not None and request.user.is_authenticated:
                return False  # signed in, but not staff
            raise exceptions.NotAuthenticated()
        if scope not in request.auth.scopes:
            self.message = f"This API key lacks the '{scope}' scope."
            return False
        return True
