"""The Kong receiver mounted where it will live, for tests that run before (or without)
metering/api/urls.py mounting it: ``@pytest.mark.urls("tests.metering.kong_urls")``."""

from django.urls import path

from metering.api.gateway_views import KongHttpLogReceiver, KongHttpLogSubjectHeaderReceiver

urlpatterns = [
    path("api/v1/gateways/kong/http-log", KongHttpLogReceiver.as_view(), name="kong-http-log"),
    path(
        "api/v1/gateways/kong/http-log/subject-header/<str:subject_header>",
        KongHttpLogSubjectHeaderReceiver.as_view(),
        name="kong-http-log-subject-header",
    ),
]
