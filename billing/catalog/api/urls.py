"""Billing's catalog API, mounted under ``/api/v1/`` by ``config/urls.py``."""

from django.urls import path

import billing.catalog.api.plans as views
import billing.catalog.api.subscriptions as subscription_views

urlpatterns = [
    path("plans", views.PlanListCreate.as_view(), name="plan-list"),
    path("plans/<str:key>", views.PlanDetail.as_view(), name="plan-detail"),
    path("plans/<str:key>/versions", views.PlanVersionList.as_view(), name="plan-version-list"),
    path(
        "plans/<str:key>/versions/<int:version>",
        views.PlanVersionDetail.as_view(),
        name="plan-version-detail",
    ),
    path(
        "plans/<str:key>/versions/<int:version>/migrations",
        subscription_views.PlanVersionMigration.as_view(),
        name="plan-version-migrations",
    ),
    path("tax-rates", views.TaxRateListCreate.as_view(), name="tax-rate-list"),
    path("tax-rates/<str:key>", views.TaxRateDetail.as_view(), name="tax-rate-detail"),
    path(
        "subscriptions",
        subscription_views.SubscriptionListCreate.as_view(),
        name="subscription-list",
    ),
    path(
        "subscriptions/<int:pk>",
        subscription_views.SubscriptionDetail.as_view(),
        name="subscription-detail",
    ),
    path(
        "subscriptions/<int:pk>/change-plan",
        subscription_views.SubscriptionChangePlan.as_view(),
        name="subscription-change-plan",
    ),
    path(
        "subscriptions/<int:pk>/cancel",
        subscription_views.SubscriptionCancel.as_view(),
        name="subscription-cancel",
    ),
    path(
        "customers/<str:key>/custom-contract",
        subscription_views.CustomContractCreate.as_view(),
        name="customer-custom-contract",
    ),
    path(
        "customers/<str:key>/upcoming-invoice",
        subscription_views.UpcomingInvoiceView.as_view(),
        name="customer-upcoming-invoice",
    ),
]
