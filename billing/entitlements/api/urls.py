from django.urls import path

import billing.entitlements.api.views as views
from billing.entitlements.api.gateway_authorize import GatewayAuthorizeView

urlpatterns = [
    path("gateways/authorize", GatewayAuthorizeView.as_view(), name="gateway-authorize"),
    path(
        "customers/<str:key>/entitlements",
        views.CustomerEntitlementsView.as_view(),
        name="customer-entitlements",
    ),
    path(
        "customers/<str:key>/entitlements/override",
        views.CustomerOverrideView.as_view(),
        name="entitlement-override",
    ),
    path(
        "customers/<str:key>/entitlements/<str:feature>/value",
        views.EntitlementValueView.as_view(),
        name="entitlement-value",
    ),
    path("customers/<str:key>/grants", views.CustomerGrantsView.as_view(), name="customer-grants"),
    path("grants/<int:pk>/void", views.GrantVoidView.as_view(), name="grant-void"),
    path(
        "entitlements/check",
        views.EntitlementBulkCheckView.as_view(),
        name="entitlement-bulk-check",
    ),
]
