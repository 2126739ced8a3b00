"""The product's own front doors: ``/``, a landing page for people, and ``/api/v1/``, the
API's index for machines. Neither needs a database or a sign-in, so neither can end on an
error page for a newcomer."""

from __future__ import annotations

from django.http import JsonResponse
from django.shortcuts import render
from django.urls import URLPattern, URLResolver, get_resolver, get_script_prefix, reverse
from django.views import defaults
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.errors import PROBLEM_CONTENT_TYPE, TITLES

API_PREFIX = "api/v1/"


def landing(request):
    """What the product is, and the doors for each of its users: the admin (operators),
    the API docs (machines) and the portal (customers)."""
    return render(
        request,
        "landing.html",
        {
            "admin_url": reverse("admin:index"),
            "docs_url": reverse("api-docs"),
            "api_url": reverse("api-root"),
            "portal_url": reverse("billing_portal:home"),
        },
    )


def api_resources(*, prefix: str = API_PREFIX) -> list[str]:
    """The routes under ``prefix`` that take no parameter (``events``, ``invoices``,
    ``usage/unattributed``), read from the URL configuration itself so the index never
    drifts from what is mounted. Sorted; each route once."""
    found: set[str] = set()

    def walk(patterns, base: str) -> None:
        for pattern in patterns:
            route = base + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                # only the includes on the way to the prefix or under it
                if prefix.startswith(route) or route.startswith(prefix):
                    walk(pattern.url_patterns, route)
            elif (
                isinstance(pattern, URLPattern)
                and route.startswith(prefix)
                and route != prefix
                and "<" not in route
            ):
                found.add(route.removeprefix(prefix))

    walk(get_resolver().url_patterns, "")
    return sorted(found)


class ApiRoot(APIView):
    """``GET /api/v1/``: the API's resources, names to absolute URLs, with the schema and
    the docs. Public, as an API's index usually is (GitHub's, for one): it names only what
    the public OpenAPI schema at ``/api/schema/`` already describes, and a client checking
    where to send its key should not need the key first. Every resource it lists still
    asks for ``Authorization: Bearer <api key>``."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []
    renderer_classes = [JSONRenderer]  # JSON, also in a browser and with DEBUG on

    @extend_schema(
        summary="The API's index",
        description="Each resource of the API by name, with its absolute URL, and where the "
        "OpenAPI schema and its docs are. No authentication needed.",
        responses={200: OpenApiTypes.OBJECT},
        examples=[
            OpenApiExample(
                "Index",
                value={
                    "name": "Usage billing API",
                    "version": "v1",
                    "authentication": "Authorization: Bearer <api key>",
                    "resources": {
                        "events": "https://billing.example.com/api/v1/events",
                        "invoices": "https://billing.example.com/api/v1/invoices",
                    },
                    "schema": "https://billing.example.com/api/schema/",
                    "docs": "https://billing.example.com/api/docs/",
                },
            )
        ],
    )
    def get(self, request):
        base = get_script_prefix() + API_PREFIX
        return Response(
            {
                "name": "Usage billing API",
                "version": "v1",
                "authentication": "Authorization: Bearer <api key>",
                "resources": {
                    route: request.build_absolute_uri(base + route) for route in api_resources()
                },
                "schema": request.build_absolute_uri(reverse("api-schema")),
                "docs": request.build_absolute_uri(reverse("api-docs")),
            }
        )


def _api_problem(request, status: int, detail: str) -> JsonResponse | None:
    """A problem document for a request under ``/api/``, where clients read JSON."""
    if not request.path_info.startswith("/api/"):
        return None
    body = {"type": "about:blank", "title": TITLES.get(status, "Error"), "status": status}
    return JsonResponse(
        {**body, "detail": detail}, status=status, content_type=PROBLEM_CONTENT_TYPE
    )


def not_found(request, exception=None):
    """``handler404``: a URL no route matches (``/api/v1/subscriptions/-1``: ids are
    digits) answers the API's problem document under ``/api/``, Django's page elsewhere."""
    return _api_problem(request, 404, "Nothing is found at this URL.") or (
        defaults.page_not_found(request, exception)
    )


def server_error(request):
    """``handler500``: still a server error (always a bug), but one an API client can read."""
    return _api_problem(request, 500, "The server failed; the error is logged.") or (
        defaults.server_error(request)
    )
