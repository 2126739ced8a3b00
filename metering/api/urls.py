from django.urls import path

from metering.api import catalog_views, gateway_views, ingest_views, query_views

urlpatterns = [
    path("events", ingest_views.EventIngest.as_view(), name="event-ingest"),
    path("meters", catalog_views.MeterListCreate.as_view(), name="meter-list"),
    path("meters/<str:key>", catalog_views.MeterDetail.as_view(), name="meter-detail"),
    path("features", catalog_views.FeatureListCreate.as_view(), name="feature-list"),
    path("features/<str:key>", catalog_views.FeatureDetail.as_view(), name="feature-detail"),
    path(
        "usage/unattributed",
        catalog_views.UnattributedUsageList.as_view(),
        name="usage-unattributed",
    ),
    path("meters/<str:key>/query", query_views.MeterQueryView.as_view(), name="meter-query"),
    path(
        "gateways/kong/http-log", gateway_views.KongHttpLogReceiver.as_view(), name="kong-http-log"
    ),
    # Kong's http-log drops its endpoint's query string: the subject header rides the path
    path(
        "gateways/kong/http-log/subject-header/<str:subject_header>",
        gateway_views.KongHttpLogSubjectHeaderReceiver.as_view(),
        name="kong-http-log-subject-header",
    ),
]
