from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.errors import problem_response
from metering.api.body import PayloadTooLarge, body_read, invalid_items
from metering.ingest import BatchTooLarge, MalformedBody, events_parse
from metering.ingest_limits import MAX_NEW_PARTITIONS
from metering.partitions import TooManyPartitions
from metering.services import events_ingest

# content type -> True: a JSON array, False: one event, None: either
CONTENT_TYPES = {
    "application/cloudevents+json": False,
    "application/cloudevents-batch+json": True,
    "application/json": None,
}


class EventIngest(APIView):
    """Ingest usage events (CloudEvents 1.0), wire-compatible with OpenMeter's API.

    `application/cloudevents+json` carries one event, `application/cloudevents-batch+json`
    a JSON array, `application/json` either. A batch is all-or-nothing: any invalid event
    rejects the request with 400 and a problem document listing each bad event's index and
    reason. A valid request is stored (and committed) before the 204. An event re-sent
    with the same `(source, id)` is counted once.

    Limits (docs/limits.md): UTF-8 JSON; no NUL character (`\\u0000`) in any stored string
    or key; `data` nested at most 32 levels; every number in `data` finite, less than
    10^15 in magnitude, with at most 12 decimal places; `time` not before 2000-01-01 and
    at most 24 hours after receipt; at most 12 new monthly partitions per request.
    """

    required_scope = "ingest"
    throttle_scope = "ingest"
    parser_classes: list = []
    # OpenMeter's v1 answers 204 (its SDK treats any other success as an error); its v3,
    # which Kong's plugins post to, answers 202: a subclass changes only this
    success_status = status.HTTP_204_NO_CONTENT

    @extend_schema(
        request={ct: OpenApiTypes.OBJECT for ct in CONTENT_TYPES},
        responses={
            204: OpenApiResponse(description="Stored."),
            400: OpenApiResponse(
                description="Malformed JSON, invalid events, or events beyond the ingestion "
                "limits (problem document listing each bad event's index and reason)."
            ),
            413: OpenApiResponse(description="Batch or body too large."),
            415: OpenApiResponse(description="Unsupported content type."),
            429: OpenApiResponse(description="Rate limit; see Retry-After."),
        },
        examples=[
            OpenApiExample(
                "One LLM call",
                value={
                    "specversion": "1.0",
                    "id": "5c10fade-1c9e-4d6c-8275-c52c36731d3c",
                    "source": "gateway-eu",
                    "type": "llm",
                    "subject": "acme-app-1",
                    "time": "2026-11-27T10:00:00Z",
                    "data": {"tokens": 1234, "model": "gpt-4o", "direction": "input"},
                },
            )
        ],
    )
    def post(self, request):
        received_at = timezone.now()
        content_type = request.content_type.split(";")[0].strip().lower()
        if content_type not in CONTENT_TYPES:
            return problem_response(
                status_code=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                detail=f"Unsupported content type {content_type or '(none)'!r}; use one of: {', '.join(CONTENT_TYPES)}.",
            )
        body = body_read(request)
        try:
            parsed = events_parse(
                body,
                batch=CONTENT_TYPES[content_type],
                max_events=settings.METERING_MAX_BATCH_EVENTS,
                received_at=received_at,
            )
        except BatchTooLarge as exc:
            return _too_large(str(exc))
        except MalformedBody as exc:
            return problem_response(status_code=status.HTTP_400_BAD_REQUEST, detail=str(exc))
        if parsed.errors:
            return invalid_items(
                parsed.errors, detail=f"{len(parsed.errors)} invalid event(s); nothing was stored."
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
        return Response(status=self.success_status)


def _too_large(detail: str) -> Response:
    return problem_response(status_code=PayloadTooLarge.status_code, detail=detail)
