"""Subscriptions, custom contracts and the upcoming invoice over HTTP.

Each write is one call into billing's services (a custom contract that also moves the
subscription is two, in one transaction, so a refused move leaves no stray version).
"""

from __future__ import annotations

import re

from django.db import transaction
from django.db.models import Q
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.catalog.api.errors import call_service, validated
from billing.catalog.api.plans import versions_with_details
from billing.catalog.api.serializers import (
    CustomContractInput,
    CustomContractSerializer,
    MigrationReportSerializer,
    PlanMigrationInput,
    SubscriptionCancelInput,
    SubscriptionChangePlanInput,
    SubscriptionCreateInput,
    SubscriptionSerializer,
    UpcomingInvoiceSerializer,
)
from billing.catalog.plan_migration import migration_selection, subscriptions_migrate
from billing.catalog.services import (
    custom_contract_create,
    plan_latest_version,
    plan_version_spec,
    subscription_at,
    subscription_cancel,
    subscription_change_plan,
    subscription_create,
)
from billing.catalog.upcoming import NoSubscription, upcoming_invoice
from billing.models import Plan, PlanVersion, Subscription
from core.api.errors import problem_response
from core.api.times import InstantFilter
from customers.models import Customer
from customers.selectors import customer_billing_account


def plan_version_resolve(*, plan: Plan, version: int | None) -> PlanVersion:
    """The numbered version of ``plan``, or its current public one; a 400 otherwise."""
    if version is None:
        found = plan_latest_version(plan=plan)
        if found is None:
            raise ValidationError({"plan": [f"Plan {plan.key} has no public version."]})
        return found
    found = PlanVersion.objects.filter(plan=plan, version=version).first()
    if found is None:
        raise ValidationError({"version": [f"Plan {plan.key} has no version {version}."]})
    return found


class SubscriptionFilter(filters.FilterSet):
    customer = filters.CharFilter(field_name="customer__key", help_text="A customer key.")
    plan = filters.CharFilter(field_name="plan_version__plan__key", help_text="A plan key.")
    active_at = InstantFilter(
        method="filter_active_at", help_text="Only subscriptions in force at this instant."
    )

    class Meta:
        model = Subscription
        fields = ["customer", "plan", "active_at"]

    def filter_active_at(self, queryset, name, value):
        return queryset.filter(start__lte=value).filter(Q(end__isnull=True) | Q(end__gt=value))


class _SubscriptionContext:
    def get_serializer_context(self):
        return {**super().get_serializer_context(), "now": timezone.now()}


class SubscriptionListCreate(_SubscriptionContext, generics.ListCreateAPIView):
    """Subscriptions (filter by customer, plan, active_at), or subscribe a billing
    account to a plan (its current version unless ``version`` is given)."""

    serializer_class = SubscriptionSerializer
    queryset = Subscription.objects.select_related("customer", "plan_version__plan").order_by(
        "customer__key", "start"
    )
    filterset_class = SubscriptionFilter

    @extend_schema(request=SubscriptionCreateInput, responses={201: SubscriptionSerializer})
    def post(self, request):
        data = validated(SubscriptionCreateInput(data=request.data))
        version = plan_version_resolve(plan=data["plan"], version=data.get("version"))
        subscription = call_service(
            subscription_create,
            customer=data["customer"],
            plan_version=version,
            start=data["start"],
            end=data["end"],
        )
        body = self.get_serializer(subscription).data
        return Response(body, status=status.HTTP_201_CREATED)


class SubscriptionDetail(_SubscriptionContext, generics.RetrieveAPIView):
    serializer_class = SubscriptionSerializer
    queryset = Subscription.objects.select_related("customer", "plan_version__plan")


class SubscriptionChangePlan(APIView):
    """Move a subscription to another plan version: ``immediately`` splits the period at
    ``at``; ``next_period`` from the end of the period holding ``at``. Answers the new
    subscription (the old one ends where it starts)."""

    @extend_schema(request=SubscriptionChangePlanInput, responses={201: SubscriptionSerializer})
    def post(self, request, pk: int):
        subscription = get_object_or_404(Subscription, pk=pk)
        data = validated(SubscriptionChangePlanInput(data=request.data))
        now = timezone.now()
        version = plan_version_resolve(plan=data["plan"], version=data.get("version"))
        new = call_service(
            subscription_change_plan,
            subscription=subscription,
            plan_version=version,
            at=data.get("at") or now,
            timing=data["timing"],
        )
        body = SubscriptionSerializer(new, context={"now": now}).data
        return Response(body, status=status.HTTP_201_CREATED)


class SubscriptionCancel(APIView):
    """End a subscription ``immediately`` at ``at``, or at the end of the period holding
    it (``period_end``, the default)."""

    @extend_schema(request=SubscriptionCancelInput, responses=SubscriptionSerializer)
    def post(self, request, pk: int):
        subscription = get_object_or_404(Subscription, pk=pk)
        data = validated(SubscriptionCancelInput(data=request.data))
        now = timezone.now()
        ended = call_service(
            subscription_cancel,
            subscription=subscription,
            at=data.get("at") or now,
            timing=data["timing"],
        )
        return Response(SubscriptionSerializer(ended, context={"now": now}).data)


def _contract_paths(base: PlanVersion):
    """Service errors name rate cards by position; the request names them by key."""
    keys = [card.key for card in plan_version_spec(version=base).rate_cards]
    pattern = re.compile(r"^rate_cards\[(\d+)\](?:\.price)?")

    def rename(path: str) -> str:
        match = pattern.match(path)
        if match and int(match[1]) < len(keys):
            return f"prices.{keys[int(match[1])]}{path[match.end() :]}"
        return path

    return rename


class CustomContractCreate(APIView):
    """A version of a plan for this customer alone, derived from a public version (the
    current one unless ``version`` is given) with its own prices and commitment. Every
    other subscriber stays where they are. With ``at``, the customer's subscription at
    that instant moves onto it (``timing`` as for a plan change)."""

    @extend_schema(request=CustomContractInput, responses={201: CustomContractSerializer})
    def post(self, request, key: str):
        customer = get_object_or_404(Customer, key=key)
        data = validated(CustomContractInput(data=request.data))
        base = plan_version_resolve(plan=data["plan"], version=data.get("version"))
        if base.customer_id is not None and base.customer_id != customer.pk:
            raise ValidationError({"version": [f"{base} is another customer's contract."]})
        account = customer_billing_account(customer=customer)
        if account.pk != customer.pk:
            raise ValidationError(
                {"customer": [f"{customer.key} is billed on {account.key}; contract with it."]}
            )
        if base.currency != customer.currency:
            raise ValidationError(
                {
                    "plan": [
                        f"{base} is priced in {base.currency}; {customer.key} is billed in {customer.currency}."
                    ]
                }
            )
        changes: dict = {"prices": data["prices"]}
        for field in ("minimum_commitment", "entitlements"):
            if field in data:
                changes[field] = data[field]
        now = timezone.now()
        subscription = None
        with transaction.atomic():
            version = call_service(
                custom_contract_create,
                rename=_contract_paths(base),
                base=base,
                customer=customer,
                changes=changes,
            )
            if "at" in data:
                current = subscription_at(customer=customer, at=data["at"])
                if current is None:
                    raise ValidationError(
                        {
                            "at": [
                                f"{customer.key} has no subscription at {data['at'].isoformat()}; "
                                "omit at to only create the version."
                            ]
                        }
                    )
                subscription = call_service(
                    subscription_change_plan,
                    subscription=current,
                    plan_version=version,
                    at=data["at"],
                    timing=data["timing"],
                )
        version = versions_with_details(PlanVersion.objects.filter(pk=version.pk)).get()
        body = CustomContractSerializer(
            version, context={"now": now, "subscription": subscription}
        ).data
        return Response(body, status=status.HTTP_201_CREATED)


class UpcomingInvoiceView(APIView):
    """The invoice the customer's billing account would get for its current period,
    with usage so far. For a subsidiary billed to its parent this is the parent's
    invoice (``billing_account`` says whose); 404 with ``code: no_subscription`` when
    the account has no subscription now."""

    @extend_schema(
        responses={
            200: UpcomingInvoiceSerializer,
            404: OpenApiResponse(
                description="Unknown customer, or no subscription now (problem document with "
                "code no_subscription and the billing_account's key)."
            ),
        }
    )
    def get(self, request, key: str):
        customer = get_object_or_404(Customer, key=key)
        try:
            upcoming = upcoming_invoice(customer=customer, now=timezone.now())
        except NoSubscription as exc:
            return problem_response(
                status_code=status.HTTP_404_NOT_FOUND,
                detail=str(exc),
                code="no_subscription",
                billing_account=exc.account.key,
            )
        context = {
            "currency": upcoming.rated.currency,
            "customer_keys": upcoming.customer_keys,
            "feature_keys": upcoming.feature_keys,
        }
        return Response(UpcomingInvoiceSerializer(upcoming, context=context).data)


class PlanVersionMigration(APIView):
    """Move subscribers of this plan version to another version: those named in
    ``subscriptions`` (customer keys), or every subscriber that has not ended.
    ``effective`` is ``next_period`` (each at the start of its next period) or an
    instant (the period splits there, as a plan change does). Each subscription moves in
    its own transaction; one that cannot move is reported as ``failed`` with its reason.
    With ``dry_run`` nothing is written; each row gives the total of the period the change
    falls in, without and with the change."""

    @extend_schema(
        request=PlanMigrationInput,
        responses={
            200: MigrationReportSerializer,
            400: OpenApiResponse(description="Bad input (problem document, errors by field)."),
            404: OpenApiResponse(description="Unknown plan or version."),
        },
    )
    def post(self, request, key: str, version: int):
        plan = get_object_or_404(Plan, key=key)
        source = get_object_or_404(PlanVersion, plan=plan, version=version)
        data = validated(PlanMigrationInput(data=request.data))
        target_plan = data.get("to_plan") or plan
        target = PlanVersion.objects.filter(plan=target_plan, version=data["to_version"]).first()
        if target is None:
            raise ValidationError(
                {"to_version": [f"Plan {target_plan.key} has no version {data['to_version']}."]}
            )
        if target.pk == source.pk:
            raise ValidationError({"to_version": [f"The subscribers are on {source} already."]})
        if target.currency != source.currency:
            raise ValidationError(
                {
                    "to_version": [
                        f"{target} is priced in {target.currency}, {source} in {source.currency}."
                    ]
                }
            )
        now = timezone.now()
        selection = {}
        if "subscriptions" in data:
            selection = migration_selection_by_keys(
                from_version=source, keys=data["subscriptions"], now=now
            )
        effective = data["effective"]
        report = call_service(
            subscriptions_migrate,
            to_version=target,
            from_version=source,
            at=None if effective == "next_period" else effective,
            at_next_period=effective == "next_period",
            dry_run=data["dry_run"],
            now=now,
            **selection,
        )
        context = {"currency": target.currency}
        return Response(MigrationReportSerializer(report, context=context).data)


def migration_selection_by_keys(*, from_version: PlanVersion, keys: list[str], now) -> dict:
    """The subscriptions of the customers named, on ``from_version`` and not ended, and the
    keys with none; a 400 naming the keys that are no customer at all."""
    keys = list(dict.fromkeys(keys))
    known = set(Customer.objects.filter(key__in=keys).values_list("key", flat=True))
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise ValidationError({"subscriptions": [f"No customer {', '.join(unknown)}."]})
    subs = [
        sub
        for sub in migration_selection(from_version=from_version, now=now)
        if sub.customer.key in known
    ]
    found = {sub.customer.key for sub in subs}
    return {"subscriptions": subs, "missing": [k for k in keys if k not in found]}
