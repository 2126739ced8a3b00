from django.urls import path

from metering.api import ingest_views

urlpatterns = [
    path("events", ingest_views.EventIngest.as_view(), name="event-ingest"),
]
