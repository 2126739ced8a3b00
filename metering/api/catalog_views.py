"""The meter catalog over HTTP: meters and features by key, and unattributed usage.

Writes go through the services; a service's ``ValidationError`` becomes a 400 problem
document with the errors under the API's field names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response

from core.api.errors import django_validation_error_detail
from core.api.times import instant_query_param
from metering import services
from metering.api.catalog_serializers import (
    API_FIELD_NAMES,
    FeatureSerializer,
    FeatureUpdateSerializer,
    MeterSerializer,
    MeterUpdateSerializer,
    UnattributedSubjectSerializer,
)
from metering.models import Aggregation, Feature, Meter
from metering.selectors import meter_delete_blocker, unattributed_usage

T = TypeVar("T")


def _service(call: Callable[..., T], **fields: Any) -> T:
    """Call a catalog service; its field errors come back under the API's field names,
    and a key taken by a concurrent request as a 409."""
    try:
        return call(**fields)
    except DjangoValidationError as exc:
        detail = django_validation_error_detail(exc)
        raise ValidationError({API_FIELD_NAMES.get(k, k): v for k, v in detail.items()}) from exc
    except IntegrityError as exc:
        raise Conflict("The key was taken by another request at the same moment.") from exc


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


def _fields(serializer) -> dict:
    return dict(serializer.validated_data)


class MeterFilter(filters.FilterSet):
    event_type = filters.CharFilter(help_text="Only meters of this event type.")
    aggregation = filters.ChoiceFilter(choices=Aggregation.choices)
    search = filters.CharFilter(method="filter_search", help_text="Key or name contains.")

    class Meta:
        model = Meter
        fields = ["event_type", "aggregation", "search"]

    def filter_search(self, queryset, name, value):
        return queryset.filter(Q(key__icontains=value) | Q(name__icontains=value))


class MeterListCreate(generics.ListCreateAPIView):
    """List meters (filter by event type, aggregation, search) or create one."""

    serializer_class = MeterSerializer
    queryset = Meter.objects.prefetch_related("features").order_by("key")
    filterset_class = MeterFilter

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        meter = _service(services.meter_create, **_fields(serializer))
        return Response(self.get_serializer(meter).data, status=status.HTTP_201_CREATED)


class MeterDetail(generics.RetrieveUpdateDestroyAPIView):
    """Read, change or delete one meter, addressed by key. The key itself cannot change;
    once the meter has data, neither can its event type, aggregation or value. A meter
    with data or features cannot be deleted (409)."""

    queryset = Meter.objects.prefetch_related("features")
    lookup_field = "key"
    lookup_url_kwarg = "key"

    def get_serializer_class(self):
        return MeterSerializer if self.request.method == "GET" else MeterUpdateSerializer

    def update(self, request, *args, **kwargs):
        meter = self.get_object()
        serializer = self.get_serializer(
            meter, data=request.data, partial=kwargs.get("partial", False)
        )
        serializer.is_valid(raise_exception=True)
        meter = _service(services.meter_update, meter=meter, **_fields(serializer))
        return Response(MeterSerializer(meter, context=self.get_serializer_context()).data)

    @extend_schema(
        responses={
            204: OpenApiResponse(description="Deleted."),
            409: OpenApiResponse(description="The meter has data or features (problem)."),
        }
    )
    def delete(self, request, *args, **kwargs):
        meter = self.get_object()
        with transaction.atomic():
            meter = Meter.objects.select_for_update().get(pk=meter.pk)
            reason = meter_delete_blocker(meter=meter)
            if reason is None:
                meter.delete()
        if reason is not None:
            raise Conflict(f"Meter {meter.key!r} cannot be deleted: {reason}")
        return Response(status=status.HTTP_204_NO_CONTENT)


class FeatureFilter(filters.FilterSet):
    meter = filters.CharFilter(field_name="meter__key", help_text="Only features of this meter.")
    search = filters.CharFilter(method="filter_search", help_text="Key or name contains.")

    class Meta:
        model = Feature
        fields = ["meter", "search"]

    def filter_search(self, queryset, name, value):
        return queryset.filter(Q(key__icontains=value) | Q(name__icontains=value))


class FeatureListCreate(generics.ListCreateAPIView):
    """List features (filter by meter key, search) or create one on a meter (by key)."""

    serializer_class = FeatureSerializer
    queryset = Feature.objects.select_related("meter").order_by("key")
    filterset_class = FeatureFilter

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        feature = _service(services.feature_create, **_fields(serializer))
        return Response(self.get_serializer(feature).data, status=status.HTTP_201_CREATED)


class FeatureDetail(generics.RetrieveUpdateAPIView):
    """Read or change one feature, addressed by key. The key itself cannot change."""

    queryset = Feature.objects.select_related("meter")
    lookup_field = "key"
    lookup_url_kwarg = "key"

    def get_serializer_class(self):
        return FeatureSerializer if self.request.method == "GET" else FeatureUpdateSerializer

    def update(self, request, *args, **kwargs):
        feature = self.get_object()
        serializer = self.get_serializer(
            feature, data=request.data, partial=kwargs.get("partial", False)
        )
        serializer.is_valid(raise_exception=True)
        feature = _service(services.feature_update, feature=feature, **_fields(serializer))
        return Response(FeatureSerializer(feature, context=self.get_serializer_context()).data)


def _instant(request, name: str):
    return instant_query_param(request.query_params, name, default=None)


class UnattributedUsageList(generics.ListAPIView):
    """Subjects with stored events that no consumer mapping covered at the event's time:
    how many such events, and the first and last of their times; most events first.
    Each event counts once, whatever meters count it."""

    serializer_class = UnattributedSubjectSerializer
    filter_backends: list = []

    def get_queryset(self):
        since, until = _instant(self.request, "since"), _instant(self.request, "until")
        if since and until and since >= until:
            raise ValidationError({"until": ["Must be after `since`."]})
        return unattributed_usage(since=since, until=until)

    @extend_schema(
        parameters=[
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="Events at or after."),
            OpenApiParameter("until", OpenApiTypes.DATETIME, description="Events before."),
        ]
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)
