"""Receivers for API gateways' own log payloads: meter a gateway without custom code."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.errors import problem_response
from metering.api.body import PayloadTooLarge, body_read
from metering.gateways.kong.batch import (
    kong_events_set_aside,
    kong_logs_parse,
    kong_logs_to_events,
)
from metering.gateways.kong.log import kong_options
from metering.gateways.services import kong_skips_record
from metering.ingest import MalformedBody
from metering.ingest_limits import MAX_NEW_PARTITIONS
from metering.partitions import TooManyPartitions
from metering.services import events_ingest

DEFAULT_KONG_SOURCE = "kong"


class KongHttpLogReceiver(APIView):
    """Receive Kong's HTTP Log plugin: one log object, or a JSON array of them (the plugin
    batches when `queue.max_batch_size` > 1). Point the plugin's `http_endpoint` here and
    give it the header `Authorization: Bearer <api key with the ingest scope>`.

    Each log becomes a `request` event (data: route_name, route, path, service, method,
    status, latencies, sizes) and, for Kong AI Gateway logs with token usage, an `llm`
    event per direction (tokens, direction `input` or `output`, model, provider). The subject
    is the request header named in the URL (`.../http-log/subject-header/<name>`; Kong's
    plugin drops an `http_endpoint`'s query string) or by the
    `METERING_KONG_SUBJECT_HEADER` setting, when the log carries it, else the Kong
    consumer's custom_id, username or id.

    Never all-or-nothing: Kong retries a refused batch and then drops it, good logs and
    all. A log that cannot be metered (no subject, unreadable) is skipped and counted per
    day and reason, with a sample, on the admin's unattributed usage page; the others
    are stored (and committed) before the 204. A re-sent log counts once. Only a body
    that is not JSON (or not an object or array) is refused with 400.
    """

    required_scope = "ingest"
    throttle_scope = "ingest"
    parser_classes: list = []

    @extend_schema(
        operation_id="kong_http_log_receive",
        request={"application/json": OpenApiTypes.OBJECT},
        responses={
            204: OpenApiResponse(
                description="Every log that could be metered is stored; the others are "
                "skipped and counted for the operator."
            ),
            400: OpenApiResponse(
                description="The body is not JSON, or not a log object or an array; or "
                "the subject header named in the URL is not a header name."
            ),
            413: OpenApiResponse(description="Batch or body too large."),
            415: OpenApiResponse(description="Not JSON."),
            429: OpenApiResponse(description="Rate limit; see Retry-After."),
        },
        examples=[
            OpenApiExample(
                "One request by a consumer (abridged)",
                value={
                    "request": {
                        "id": "2f6946328ffc4946b8c9120704a4a155",
                        "method": "GET",
                        "uri": "/flights?from=LHR",
                        "size": 139,
                        "headers": {},
                    },
                    "response": {"status": 200, "size": 9982, "headers": {}},
                    "route": {"name": "flights", "paths": ["/flights"]},
                    "service": {"name": "flights-api", "host": "flights.internal"},
                    "consumer": {
                        "id": "8c1f0f5e-5c2c-4a4e-9d76-3d3b1a0c2f11",
                        "username": "acme-app",
                        "custom_id": "acme-app-1",
                    },
                    "latencies": {"kong": 1, "proxy": 171, "request": 173},
                    "started_at": 1795773600538,
                },
            )
        ],
    )
    def post(self, request, subject_header: str | None = None):
        received_at = timezone.now()
        content_type = request.content_type.split(";")[0].strip().lower()
        if (
            content_type
            and content_type != "application/json"
            and not content_type.endswith("+json")
        ):
            return problem_response(
                status_code=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                detail=f"Unsupported content type {content_type!r}; Kong's http-log sends application/json.",
            )
        try:
            options = kong_options(
                source=getattr(settings, "METERING_KONG_SOURCE", DEFAULT_KONG_SOURCE),
                # the query parameter is the older form, kept for endpoints set up with it
                subject_header=subject_header
                or request.query_params.get("subjectHeader")
                or getattr(settings, "METERING_KONG_SUBJECT_HEADER", ""),
            )
        except ValueError as exc:
            return problem_response(status_code=status.HTTP_400_BAD_REQUEST, detail=str(exc))
        body = body_read(request)
        try:
            logs = kong_logs_parse(body)
        except MalformedBody as exc:
            return problem_response(status_code=status.HTTP_400_BAD_REQUEST, detail=str(exc))
        max_logs = settings.METERING_MAX_BATCH_EVENTS
        if len(logs) > max_logs:
            return _too_large(f"The batch has {len(logs)} logs; the limit is {max_logs}.")
        parsed = kong_logs_to_events(logs, options=options, received_at=received_at)
        kong_skips_record(skipped=parsed.skipped, received_at=received_at)
        try:
            events_ingest(
                events=parsed.events,
                received_at=received_at,
                max_new_partitions=MAX_NEW_PARTITIONS,
            )
        except TooManyPartitions as exc:
            # Logs of many old months (a replay): store the newest months one request may
            # open, and skip (and count) the rest rather than refuse the batch.
            aside = set(exc.missing) - set(sorted(exc.missing)[-exc.limit :])
            batch = kong_events_set_aside(parsed.events, months=aside, received_at=received_at)
            kong_skips_record(skipped=batch.skipped, received_at=received_at)
            events_ingest(
                events=batch.events, received_at=received_at, max_new_partitions=exc.limit
            )
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    post=extend_schema(
        operation_id="kong_http_log_receive_with_subject_header",
        parameters=[
            OpenApiParameter(
                "subject_header",
                OpenApiTypes.STR,
                OpenApiParameter.PATH,
                description="Request header whose value is the subject (e.g. x-client-id); "
                "a log without it falls back to its Kong consumer.",
            )
        ],
    )
)
class KongHttpLogSubjectHeaderReceiver(KongHttpLogReceiver):
    """The receiver with the subject header named in the path: Kong's http-log drops the
    query string of its `http_endpoint`, so the path is where the name survives."""


def _too_large(detail: str) -> Response:
    return problem_response(status_code=PayloadTooLarge.status_code, detail=detail)
