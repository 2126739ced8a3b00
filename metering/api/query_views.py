"""The meter query endpoint: OpenMeter's ``/api/v1/meters/{key}/query``, GET and POST.

Values are rendered as exact JSON numbers, the Decimal's own digits without padding
(never through float, never an exponent), where OpenMeter sends float64 numbers; a
client reading JSON numbers reads both alike.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import renderers
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from core.api.renderers import ExactNumberJSONRenderer
from metering import sql
from metering.api.catalog_views import Conflict
from metering.api.query_serializers import (
    MeterQueryRequestSerializer,
    MeterQueryResultSerializer,
    request_data_from_query_params,
)
from metering.models import Meter
from metering.query import MeterQuery, MeterQueryResult, meter_query


def _renderers() -> list:
    others = [r for r in api_settings.DEFAULT_RENDERER_CLASSES if r is not renderers.JSONRenderer]
    return [ExactNumberJSONRenderer, *others]


def _time(value: datetime | None) -> str | None:
    if value is None:
        return None
    value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds" if value.microsecond else "seconds").replace(
        "+00:00", "Z"
    )


def _body(query: MeterQuery, result: MeterQueryResult) -> dict:
    return {
        "from": _time(query.start),
        "to": _time(query.end),
        "windowSize": query.window_size.value if query.window_size else None,
        "data": [
            {
                "value": row.value,  # an exact JSON number: see ExactNumberJSONRenderer
                "windowStart": _time(row.window_start),
                "windowEnd": _time(row.window_end),
                "subject": row.subject,
                "customerId": row.customer_key,
                "groupBy": row.group_by,
            }
            for row in result.rows
        ],
    }


_PARAMETERS = [
    OpenApiParameter("from", OpenApiTypes.DATETIME, description="Start, inclusive (RFC 3339)."),
    OpenApiParameter("to", OpenApiTypes.DATETIME, description="End, exclusive (RFC 3339)."),
    OpenApiParameter("windowSize", str, enum=["MINUTE", "HOUR", "DAY", "MONTH"]),
    OpenApiParameter("windowTimeZone", str, description="IANA time zone; default UTC."),
    OpenApiParameter("subject", str, many=True, explode=True),
    OpenApiParameter(
        "filterCustomerId", str, many=True, explode=True, description="Customer keys."
    ),
    OpenApiParameter(
        "groupBy",
        str,
        many=True,
        explode=True,
        description="Meter dimensions, and the reserved subject and customerId.",
    ),
    OpenApiParameter(
        "filterGroupBy",
        OpenApiTypes.OBJECT,
        style="deepObject",
        explode=True,
        description="Only usage whose dimension has the value: filterGroupBy[model]=gpt-4o "
        "(repeat for several values).",
    ),
]
_RESPONSES = {
    200: MeterQueryResultSerializer,
    400: OpenApiResponse(description="Invalid parameters (problem document with errors)."),
    404: OpenApiResponse(description="No meter with this key."),
    409: OpenApiResponse(
        description="The meter's JSONPaths cannot be evaluated (saved before they were "
        "checked): fix the meter first (problem)."
    ),
}


class MeterQueryView(APIView):
    """Query a meter's usage, as OpenMeter's `GET /api/v1/meters/{key}/query` does.

    One row per window (`windowSize` in `windowTimeZone`; without it, one for the whole
    period) and group (`groupBy`; filtering by `subject` or `filterCustomerId` also groups
    by it). Windows without usage have no row. Values are exact JSON numbers. Usage
    accepted a moment ago is already counted, rolled up or not. POST takes the same query
    as a JSON body and, as it only reads, needs the `read` scope.
    """

    required_scope = "read"
    renderer_classes = _renderers()

    @extend_schema(operation_id="queryMeter", parameters=_PARAMETERS, responses=_RESPONSES)
    def get(self, request, key: str):
        return self._answer(key, request_data_from_query_params(request.query_params))

    @extend_schema(
        operation_id="queryMeterPost", request=MeterQueryRequestSerializer, responses=_RESPONSES
    )
    def post(self, request, key: str):
        return self._answer(key, request.data)

    def _answer(self, key: str, data) -> Response:
        meter = get_object_or_404(Meter, key=key)
        problems = sql.meter_path_problems(meter)
        if problems:
            raise Conflict(
                f"Meter {meter.key!r} cannot be queried until it is fixed: "
                + " ".join(m for ms in problems.values() for m in ms)
            )
        serializer = MeterQueryRequestSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        query = serializer.to_query()
        return Response(_body(query, meter_query(meter=meter, query=query)))
