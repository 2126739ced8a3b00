"""The admin site: the product's name on every page, the operator's dashboard on its
home, and the admin pages that are not one model's (the customer overview, a
customer's entitlements, the audit trail), ahead of the model admins' own URLs.

Django loads this class by dotted path (``BackofficeAdminConfig.default_site``) the
first time an app's admin module registers a model on ``admin.site``, while the other
admin modules are still being imported. So this module imports none of them: it names
its pages' views by dotted path too, resolved when the URLs are built (after every
admin module is loaded).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import admin
from django.urls import URLPattern, path
from django.utils.module_loading import import_string


@dataclass(frozen=True)
class Page:
    route: str  # under /admin/
    view: str  # dotted path of a view taking the request (and the route's arguments)
    name: str  # reversed as admin:<name>


PAGES = (
    # the overview before the customer admin's own <path:object_id>/ catch-all
    Page(
        "customers/customer/<int:pk>/overview/",
        "backoffice.customer_overview.customer_overview_view",
        "customers_customer_overview",
    ),
    Page(
        "billing/entitlements/<str:key>/",
        "billing.entitlements.admin.entitlement_status_view",
        "billing_entitlement_status",
    ),
    Page(
        "billing/receivables/aging/",
        "billing.invoicing.admin.aging.aging_view",
        "billing_receivables_aging",
    ),
    Page(
        "billing/receivables/aging.csv",
        "billing.invoicing.admin.aging.aging_csv_view",
        "billing_receivables_aging_csv",
    ),
    Page("audit/history/", "audit.admin.recent_view", "audit_recent"),
    Page(
        "audit/history/<str:app_label>/<str:model_name>/<str:pk>/",
        "audit.admin.history_view",
        "audit_history",
    ),
)


class BackofficeSite(admin.AdminSite):
    # The admin names the product, and its "View site" link opens the landing page.
    site_header = "Usage billing"
    site_title = "Usage billing"
    index_title = "Dashboard"
    site_url = "/"
    # The operator's dashboard above the usual list of apps.
    index_template = "admin/backoffice/index.html"

    pages = PAGES

    def get_urls(self) -> list[URLPattern]:
        return [
            *(
                path(page.route, self.admin_view(import_string(page.view)), name=page.name)
                for page in self.pages
            ),
            *super().get_urls(),
        ]
