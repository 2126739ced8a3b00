"""The project's URLs plus the catalog API where metering/api/urls.py will mount it, for
tests that run before it does: ``@pytest.mark.urls("tests.metering.catalog_urls")``."""

from django.urls import include, path

from config.urls import urlpatterns as project_urlpatterns
from metering.api import catalog_views

catalog_urlpatterns = [
    path("meters", catalog_views.MeterListCreate.as_view(), name="meter-list"),
    path("meters/<str:key>", catalog_views.MeterDetail.as_view(), name="meter-detail"),
    path("features", catalog_views.FeatureListCreate.as_view(), name="feature-list"),
    path("features/<str:key>", catalog_views.FeatureDetail.as_view(), name="feature-detail"),
    path(
        "usage/unattributed",
        catalog_views.UnattributedUsageList.as_view(),
        name="usage-unattributed",
    ),
]

urlpatterns = [*project_urlpatterns, path("api/v1/", include(catalog_urlpatterns))]
