"""Receivers for API gateways' own log payloads: meter a gateway without custom code."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.errors import problem_response
from metering.api.body import PayloadTooLarge, body_read, invalid_items
from metering.gateways.kong import kong_logs_parse, kong_logs_to_events, kong_options
from metering.ingest import MalformedBody
from metering.ingest_limits import MAX_NEW_PARTITIONS
from metering.partitions import TooManyPartitions
from metering.services import events_ingest

DEFAULT_KONG_SOURCE = "kong"


class KongHttpLogReceiver(APIView):
    """Receive Kong's HTTP Log plugin: one log object, or a JSON array of them (the plugin
    batches when `queue.max_batch_size` > 1). Point the plugin's `http_endpoint` here and
    give it the header `Authorization: Bearer <api key with the ingest scope>`.

    Each log becomes a `request` event (data: route, service, method, status, path,
    latencies, sizes) and, for Kong AI Gateway logs with token usage, an `llm` event
    (model, provider, prompt_tokens, completion_tokens, total_tokens). The subject is the
    request header named by `subjectHeader` (or the `METERING_KONG_SUBJECT_HEADER`
    setting) when present, else the Kong consumer's custom_id, username or id. A batch is
    all-or-nothing: any log that cannot be metered (no subject, say) rejects the request
    with 400 and a problem document listing each bad log's index and reason. A re-sent log
    counts once. The events are stored (and committed) before the 204.
    """

    required_scope = "ingest"
    throttle_scope = "ingest"
    parser_classes: list = []

    @extend_schema(
        operation_id="kong_http_log_receive",
        parameters=[
            OpenApiParameter(
                "subjectHeader",
                OpenApiTypes.STR,
                description="Request header whose value is the subject (e.g. x-consumer-id); "
                "overrides the METERING_KONG_SUBJECT_HEADER setting. Without the header on a "
                "log, its Kong consumer is the subject.",
            )
        ],
        request={"application/json": OpenApiTypes.OBJECT},
        responses={
            204: OpenApiResponse(description="Stored."),
            400: OpenApiResponse(description="Malformed JSON or logs that cannot be metered."),
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
    def post(self, request):
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
                subject_header=request.query_params.get("subjectHeader")
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
        if parsed.errors:
            return invalid_items(
                parsed.errors,
                detail=f"{len(parsed.errors)} log(s) cannot be metered; nothing was stored.",
            )
        try:
            events_ingest(
                events=parsed.events,
                received_at=received_at,
                max_new_partitions=MAX_NEW_PARTITIONS,
            )
        except TooManyPartitions as exc:
            return problem_response(
                status_code=status.HTTP_400_BAD_REQUEST, detail=f"{exc} Nothing was stored."
            )
        return Response(status=status.HTTP_204_NO_CONTENT)


def _too_large(detail: str) -> Response:
    return problem_response(status_code=PayloadTooLarge.status_code, detail=detail)
