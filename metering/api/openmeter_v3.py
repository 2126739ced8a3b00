"""OpenMeter v3's event ingestion, the endpoint Kong's Metering & Billing plugin posts to.

The same view as ``/api/v1/events`` (content types, validation, limits, problem documents,
deduplication, the ``ingest`` scope): only the success status differs, 202 as OpenMeter's
v3 answers, where its v1 answers 204.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status

from metering.api.ingest_views import CONTENT_TYPES, EventIngest


class OpenMeterV3EventIngest(EventIngest):
    """Ingest usage events (CloudEvents 1.0) as OpenMeter's v3 API does: what
    `/api/v1/events` takes, answered `202 Accepted` with an empty body once stored."""

    success_status = status.HTTP_202_ACCEPTED

    @extend_schema(
        operation_id="openmeter_v3_events_ingest",
        request={ct: OpenApiTypes.OBJECT for ct in CONTENT_TYPES},
        responses={
            202: OpenApiResponse(description="Stored."),
            400: OpenApiResponse(
                description="Malformed JSON, invalid events, or events beyond the ingestion "
                "limits (problem document listing each bad event's index and reason)."
            ),
            413: OpenApiResponse(description="Batch or body too large."),
            415: OpenApiResponse(description="Unsupported content type."),
            429: OpenApiResponse(description="Rate limit; see Retry-After."),
        },
    )
    def post(self, request):
        return super().post(request)
