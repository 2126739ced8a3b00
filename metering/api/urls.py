from django.urls import path

from metering.api import gateway_views, ingest_views, query_views

urlpatterns = [
    path("events", ingest_views.EventIngest.as_view(), name="event-ingest"),
    path("meters/<str:key>/query", query_views.MeterQueryView.as_view(), name="meter-query"),
    path("gateways/kong/http-log", gateway_views.KongHttpLogReceiver.as_view(), name="kong-http-log"),
]
