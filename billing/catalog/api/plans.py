"""The catalog over HTTP: plans by key (versioned through ``plan_save``) and tax rates.

Writes go through billing's services; their ``ValidationError`` becomes a 400 problem
document whose errors are keyed by path (``rate_cards[1].price.tiers[0].up_to``).
Subscriptions, custom contracts and the upcoming invoice are in ``subscription_views``.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.catalog.api.errors import call_service, validated
from billing.catalog.api.serializers import (
    PlanInput,
    PlanSaveResultSerializer,
    PlanSerializer,
    PlanUpdateInput,
    PlanVersionSerializer,
    TaxRateSerializer,
    TaxRateUpdateSerializer,
)
from billing.catalog.services import PlanVersionSpec, RateCardSpec, plan_latest_version, plan_save
from billing.models import Plan, PlanVersion, TaxRate


def versions_with_details(queryset: QuerySet[PlanVersion]) -> QuerySet[PlanVersion]:
    """Versions with what the serializers show, in a fixed number of queries."""
    return queryset.select_related("plan", "customer", "derived_from").prefetch_related(
        "rate_cards__feature", "tax_rates"
    )


def current_versions(plans: list[Plan]) -> dict[int, PlanVersion]:
    """Each plan's newest public version (custom contracts excluded), by plan id."""
    versions = versions_with_details(
        PlanVersion.objects.filter(plan__in=plans, customer__isnull=True)
        .order_by("plan_id", "-version")
        .distinct("plan_id")
    )
    return {v.plan_id: v for v in versions}


def with_subscribers(queryset: QuerySet[PlanVersion], *, now) -> QuerySet[PlanVersion]:
    return queryset.annotate(
        subscribers=Count(
            "subscriptions",
            filter=Q(subscriptions__end__isnull=True) | Q(subscriptions__end__gt=now),
            distinct=True,
        )
    )


def _plan_save(*, key: str, data: dict) -> tuple[PlanVersion, str]:
    """Save a plan from a request body; entitlement templates (not managed by this API)
    are carried over from the current version."""
    existing = Plan.objects.filter(key=key).first()
    latest = plan_latest_version(plan=existing) if existing else None
    spec = PlanVersionSpec(
        currency=data["currency"],
        cadence=data["cadence"],
        minimum_commitment=data["minimum_commitment"],
        rate_cards=tuple(
            RateCardSpec(key=c["key"], name=c["name"], feature=c["feature"], price=c["price"])
            for c in data["rate_cards"]
        ),
        entitlements=tuple(latest.entitlements) if latest else (),
    )
    _, version, change = call_service(
        plan_save, key=key, name=data["name"], description=data["description"], spec=spec
    )
    return versions_with_details(PlanVersion.objects.filter(pk=version.pk)).get(), change


class PlanListCreate(generics.ListAPIView):
    """List plans as their current versions price them, or create a plan (version 1)."""

    queryset = Plan.objects.order_by("key")
    serializer_class = PlanSerializer

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.get_queryset())
        versions = current_versions(page)
        data = PlanSerializer([versions[p.pk] for p in page if p.pk in versions], many=True).data
        return self.get_paginated_response(data)

    @extend_schema(request=PlanInput, responses={201: PlanSaveResultSerializer})
    def post(self, request):
        data = validated(PlanInput(data=request.data))
        if Plan.objects.filter(key=data["key"]).exists():
            raise ValidationError(
                {
                    "key": [
                        f"A plan {data['key']} exists; PUT /api/v1/plans/{data['key']} changes it."
                    ]
                }
            )
        with transaction.atomic():
            version, change = _plan_save(key=data["key"], data=data)
        body = PlanSaveResultSerializer(version, context={"change": change}).data
        return Response(body, status=status.HTTP_201_CREATED)


class PlanDetail(APIView):
    """One plan by key. PUT replaces its configuration: when the current version has
    subscribers a new version is made (they stay on theirs), otherwise it changes in
    place; an identical body changes nothing. PUT on an unknown key creates the plan."""

    @extend_schema(responses=PlanSerializer)
    def get(self, request, key: str):
        plan = get_object_or_404(Plan, key=key)
        version = current_versions([plan]).get(plan.pk)
        if version is None:
            raise Http404
        return Response(PlanSerializer(version).data)

    @extend_schema(
        request=PlanUpdateInput,
        responses={200: PlanSaveResultSerializer, 201: PlanSaveResultSerializer},
    )
    def put(self, request, key: str):
        data = validated(PlanUpdateInput(data=request.data))
        with transaction.atomic():
            version, change = _plan_save(key=key, data=data)
        body = PlanSaveResultSerializer(version, context={"change": change}).data
        return Response(body, status=status.HTTP_201_CREATED if change == "created" else 200)


class PlanVersionList(generics.ListAPIView):
    """Every version of a plan, custom contracts included, oldest first, with the
    number of subscriptions on each that have not ended."""

    serializer_class = PlanVersionSerializer
    queryset = PlanVersion.objects.none()  # for the schema; the real one needs the plan

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        self.plan = get_object_or_404(Plan, key=self.kwargs["key"])
        queryset = PlanVersion.objects.filter(plan=self.plan).order_by("version")
        return with_subscribers(versions_with_details(queryset), now=timezone.now())

    def get_serializer_context(self):
        context = super().get_serializer_context()
        latest = plan_latest_version(plan=self.plan) if hasattr(self, "plan") else None
        context["current_version_ids"] = {latest.pk} if latest else set()
        return context


class PlanVersionDetail(generics.RetrieveAPIView):
    """One version of a plan, by its number."""

    serializer_class = PlanVersionSerializer

    def get_object(self):
        plan = get_object_or_404(Plan, key=self.kwargs["key"])
        queryset = with_subscribers(
            versions_with_details(PlanVersion.objects.filter(plan=plan)), now=timezone.now()
        )
        self.version = get_object_or_404(queryset, version=self.kwargs["version"])
        return self.version

    def get_serializer_context(self):
        context = super().get_serializer_context()
        version = getattr(self, "version", None)
        latest = plan_latest_version(plan=version.plan) if version else None
        context["current_version_ids"] = {latest.pk} if latest else set()
        return context


# ------------------------------------------------------------------------ tax rates
# A tax rate is plain configuration with no rules beyond its fields, so it is saved
# after the model's own validation; billing has no tax-rate service to go through.


class TaxRateListCreate(generics.ListCreateAPIView):
    """Tax rates, by key. Percentages are decimal strings (``"19"``, ``"7.25"``)."""

    serializer_class = TaxRateSerializer
    queryset = TaxRate.objects.order_by("key")

    def perform_create(self, serializer):
        rate = TaxRate(**serializer.validated_data)
        call_service(rate.full_clean)
        rate.save()
        serializer.instance = rate


class TaxRateDetail(generics.RetrieveUpdateAPIView):
    """One tax rate; its key cannot change. A change applies to invoices rated from
    then on; issued invoices keep the rate they were issued with."""

    queryset = TaxRate.objects.all()
    lookup_field = "key"

    def get_serializer_class(self):
        return TaxRateSerializer if self.request.method == "GET" else TaxRateUpdateSerializer

    def perform_update(self, serializer):
        rate = serializer.instance
        for field, value in serializer.validated_data.items():
            setattr(rate, field, value)
        call_service(rate.full_clean)
        rate.save()
