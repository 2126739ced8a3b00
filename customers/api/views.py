from __future__ import annotations

from django.db.models import Q
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.times import InstantFilter, instant_query_param
from customers import services
from customers.api.serializers import (
    ConsumerKeyMoveSerializer,
    ConsumerMappingSerializer,
    ConsumerResolveSerializer,
    CustomerSerializer,
    CustomerUpdateSerializer,
)
from customers.models import ConsumerMapping, Customer
from customers.selectors import billing_account_ids, consumer_mapping_at


class CustomerFilter(filters.FilterSet):
    parent = filters.CharFilter(
        field_name="parent__key", help_text="Only subsidiaries of this customer key."
    )
    root = filters.BooleanFilter(
        field_name="parent", lookup_expr="isnull", help_text="true: only top-level customers."
    )
    rail = filters.CharFilter()
    currency = filters.CharFilter(lookup_expr="iexact")
    search = filters.CharFilter(
        method="filter_search", help_text="Key, name or consumer key contains."
    )

    class Meta:
        model = Customer
        fields = ["parent", "root", "rail", "currency", "search"]

    def filter_search(self, queryset, name, value):
        return queryset.filter(
            Q(key__icontains=value)
            | Q(name__icontains=value)
            | Q(consumer_mappings__consumer_key__icontains=value)
        ).distinct()


class _CustomerContextMixin:
    def _tree_context(self, customers: list[Customer]) -> dict:
        ids = [c.pk for c in customers]
        accounts = billing_account_ids(customer_ids=ids)
        keys = dict(Customer.objects.filter(pk__in=set(accounts.values())).values_list("pk", "key"))
        subs: dict[int, list[str]] = {}
        for parent_id, key in (
            Customer.objects.filter(parent_id__in=ids)
            .order_by("key")
            .values_list("parent_id", "key")
        ):
            subs.setdefault(parent_id, []).append(key)
        return {
            "billing_account_keys": {i: keys[a] for i, a in accounts.items()},
            "subsidiaries_by_parent": subs,
        }


def _fields(serializer) -> dict:
    return dict(serializer.validated_data)


class CustomerListCreate(_CustomerContextMixin, generics.ListCreateAPIView):
    """List customers (filter by parent, rail, currency, search) or create one."""

    serializer_class = CustomerSerializer
    queryset = Customer.objects.select_related("parent").order_by("key")
    filterset_class = CustomerFilter

    def list(self, request, *args, **kwargs):
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        serializer = self.get_serializer(
            page, many=True, context={**self.get_serializer_context(), **self._tree_context(page)}
        )
        return self.get_paginated_response(serializer.data)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        customer = services.customer_create(**_fields(serializer))
        return Response(self.get_serializer(customer).data, status=status.HTTP_201_CREATED)


class CustomerDetail(generics.RetrieveUpdateAPIView):
    """Read or change one customer, addressed by key. The key itself cannot change."""

    queryset = Customer.objects.select_related("parent")
    lookup_field = "key"
    lookup_url_kwarg = "key"

    def get_serializer_class(self):
        return CustomerSerializer if self.request.method == "GET" else CustomerUpdateSerializer

    def update(self, request, *args, **kwargs):
        customer = self.get_object()
        serializer = self.get_serializer(
            customer, data=request.data, partial=kwargs.get("partial", False)
        )
        serializer.is_valid(raise_exception=True)
        customer = services.customer_update(customer=customer, **_fields(serializer))
        return Response(CustomerSerializer(customer, context=self.get_serializer_context()).data)


class ConsumerMappingFilter(filters.FilterSet):
    consumer_key = filters.CharFilter()
    customer = filters.CharFilter(field_name="customer__key")
    at = InstantFilter(method="filter_at", help_text="Only mappings valid at this instant.")

    class Meta:
        model = ConsumerMapping
        fields = ["consumer_key", "customer", "at"]

    def filter_at(self, queryset, name, value):
        return queryset.filter(valid_from__lte=value).filter(
            Q(valid_to__isnull=True) | Q(valid_to__gt=value)
        )


class ConsumerMappingListCreate(generics.ListCreateAPIView):
    """Consumer mappings: which customer a gateway consumer key belongs to, over time."""

    serializer_class = ConsumerMappingSerializer
    queryset = ConsumerMapping.objects.select_related("customer").order_by(
        "consumer_key", "valid_from"
    )
    filterset_class = ConsumerMappingFilter

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        mapping = services.consumer_mapping_create(**_fields(serializer))
        return Response(self.get_serializer(mapping).data, status=status.HTTP_201_CREATED)


class CustomerConsumerMappingList(ConsumerMappingListCreate):
    """The consumer mappings of one customer; POST maps a new key to it."""

    def get_queryset(self):
        customer = get_object_or_404(Customer, key=self.kwargs["key"])
        return super().get_queryset().filter(customer=customer)

    def create(self, request, *args, **kwargs):
        customer = get_object_or_404(Customer, key=self.kwargs["key"])
        data = {**request.data, "customer": customer.key}
        serializer = self.get_serializer(data=data)
        serializer.is_valid(raise_exception=True)
        mapping = services.consumer_mapping_create(**_fields(serializer))
        return Response(self.get_serializer(mapping).data, status=status.HTTP_201_CREATED)


class ConsumerMappingDetail(generics.RetrieveUpdateAPIView):
    """Read or change one mapping, e.g. close it by setting ``valid_to``."""

    serializer_class = ConsumerMappingSerializer
    queryset = ConsumerMapping.objects.select_related("customer")

    def update(self, request, *args, **kwargs):
        mapping = self.get_object()
        serializer = self.get_serializer(
            mapping, data=request.data, partial=kwargs.get("partial", False)
        )
        serializer.is_valid(raise_exception=True)
        mapping = services.consumer_mapping_update(mapping=mapping, **_fields(serializer))
        return Response(self.get_serializer(mapping).data)


class ConsumerKeyMove(APIView):
    """Move a consumer key to another customer from an instant on, in one transaction."""

    @extend_schema(request=ConsumerKeyMoveSerializer, responses={201: ConsumerMappingSerializer})
    def post(self, request, consumer_key: str):
        serializer = ConsumerKeyMoveSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        mapping = services.consumer_key_move(
            consumer_key=consumer_key,
            to_customer=serializer.validated_data["customer"],
            at=serializer.validated_data["at"],
        )
        return Response(ConsumerMappingSerializer(mapping).data, status=status.HTTP_201_CREATED)


class ConsumerResolve(APIView):
    """Which customer (and billing account) a consumer key belongs to at an instant."""

    @extend_schema(
        parameters=[OpenApiParameter("time", OpenApiTypes.DATETIME, description="Default: now.")],
        responses=ConsumerResolveSerializer,
    )
    def get(self, request, consumer_key: str):
        at = instant_query_param(request.query_params, "time", default=timezone.now())
        mapping = consumer_mapping_at(consumer_key=consumer_key, at=at)
        customer = mapping.customer if mapping else None
        account = None
        if customer is not None:
            account_id = billing_account_ids(customer_ids=[customer.pk])[customer.pk]
            account = Customer.objects.values_list("key", flat=True).get(pk=account_id)
        data = {
            "consumer_key": consumer_key,
            "time": at,
            "customer": customer.key if customer else None,
            "billing_account": account,
        }
        return Response(ConsumerResolveSerializer(data).data)
