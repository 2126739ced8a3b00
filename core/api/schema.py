"""The OpenAPI schema says what the API answers, errors included.

Every operation documents the problem documents (``application/problem+json``,
``core.api.errors``) it can answer, besides its successes: 400 for any request (a query
string with a NUL, a body that is not a JSON object, invalid fields); 401, 403 and 429
where an API key is needed; 404 where the path names something or the list is paged
(DRF answers an invalid page with 404); 415 where there is a body to parse; and the
statuses a view lists in ``problem_statuses`` (409 for state conflicts). A status an
operation documents without a body (``404: OpenApiResponse(description=...)``) gets the
problem document as its body.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent

from core.api.errors import PROBLEM_CONTENT_TYPE

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "An RFC 9457 problem document.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "description": "What is wrong, by field path (an object of lists of messages), "
            "or, for a batch, a list of {index, reason}.",
            "oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}],
        },
    },
    "required": ["type", "title", "status", "detail"],
    "additionalProperties": True,
}

PROBLEM_DESCRIPTIONS = {
    400: "Invalid input (problem document; field errors under errors).",
    401: "No API key, or one that is invalid or revoked.",
    403: "The API key (or the signed-in role) lacks the scope this needs.",
    404: "Nothing found at this path, or no such page.",
    409: "The object's state does not allow this.",
    413: "The body is too large.",
    415: "The body is not JSON.",
    429: "Rate limit reached; retry after Retry-After seconds.",
}


class ProblemAutoSchema(AutoSchema):
    """drf-spectacular's schema, with every error an operation can answer documented as a
    problem document."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for code in sorted(self._problem_statuses()):
            responses.setdefault(str(code), {"description": PROBLEM_DESCRIPTIONS.get(code, "")})
        problem = {PROBLEM_CONTENT_TYPE: {"schema": self._problem_component().ref}}
        for code, response in responses.items():
            if code.isdigit() and int(code) >= 400 and not response.get("content"):
                response["content"] = problem
        return responses

    def _problem_statuses(self) -> set[int]:
        statuses = {400, *getattr(self.view, "problem_statuses", ())}
        auth = self.get_auth()
        if auth and {} not in auth:  # ({} is "or no authentication")
            statuses |= {401, 403}
            if self.view.get_throttles():
                statuses.add(429)
        if "{" in self.path or (self._is_list_view() and self._get_paginator()):
            statuses.add(404)
        if self.method in ("POST", "PUT", "PATCH"):
            statuses.add(415)
        return statuses

    def _problem_component(self) -> ResolvedComponent:
        component = ResolvedComponent(
            name="Problem",
            type=ResolvedComponent.SCHEMA,
            object="Problem",
            schema=PROBLEM_SCHEMA,
        )
        self.registry.register_on_missing(component)
        return component


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "core.api.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key created in the admin or with `manage.py create_api_key`. "
            "Scopes: ingest, read, write.",
        }
