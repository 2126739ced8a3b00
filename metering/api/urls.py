from django.urls import path

from metering.api import gateway_views, ingest_views

urlpatterns = [
    path("events", ingest_views.EventIngest.as_view(), name="event-ingest"),
    path("gateways/kong/http-log", gateway_views.KongHttpLogReceiver.as_view(), name="kong-http-log"),
]
