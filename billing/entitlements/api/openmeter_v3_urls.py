"""OpenMeter v3's paths that Kong's Metering & Billing and Entitlement Enforcement
plugins call, mounted under /api/v3/openmeter/."""

from django.urls import path

from billing.entitlements.api.openmeter_v3 import EntitlementAccessQueryView
from metering.api.openmeter_v3 import OpenMeterV3EventIngest

urlpatterns = [
    path("events", OpenMeterV3EventIngest.as_view(), name="openmeter-v3-events"),
    path(
        "entitlement-access/query",
        EntitlementAccessQueryView.as_view(),
        name="openmeter-v3-entitlement-access-query",
    ),
]
