from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.views import ApiRoot, landing

# admin.site is the back office's site (backoffice.sites.BackofficeSite, made the
# default by backoffice.apps.BackofficeAdminConfig): its branding and extra pages.
handler404 = "config.views.not_found"
handler500 = "config.views.server_error"

urlpatterns = [
    path("", landing, name="landing"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    # the gateways' hot paths first: URLs are resolved by trying each pattern in turn
    path("api/v1/", include("billing.entitlements.api.urls")),
    path("api/v3/openmeter/", include("billing.entitlements.api.openmeter_v3_urls")),
    path("api/v1/", include("metering.api.urls")),
    path("api/v1/", include("customers.api.urls")),
    path("api/v1/", include("billing.invoicing.api.urls")),
    path("api/v1/", include("billing.catalog.api.urls")),
    path("api/v1/", ApiRoot.as_view(), name="api-root"),  # the index, after the hot paths
    path("webhooks/", include("rails.urls")),
    path("", include("billing.documents.portal_urls")),
]
