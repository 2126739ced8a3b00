"""One admin site: the back office's, with the product's name, the dashboard on its home
and the pages that are not one model's, in its own URLs (nothing patches them)."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import resolve, reverse

from backoffice.sites import BackofficeSite


def test_the_project_admin_site_is_the_back_offices():
    assert isinstance(admin.site, BackofficeSite)
    # its URLs are the class's own method, not a function patched onto the instance
    assert admin.site.get_urls.__func__ is BackofficeSite.get_urls


@pytest.mark.parametrize(
    ("name", "args", "path"),
    [
        ("customers_customer_overview", [7], "/admin/customers/customer/7/overview/"),
        ("billing_entitlement_status", ["acme"], "/admin/billing/entitlements/acme/"),
        ("audit_recent", [], "/admin/audit/history/"),
        (
            "audit_history",
            ["customers", "customer", "7"],
            "/admin/audit/history/customers/customer/7/",
        ),
    ],
)
def test_the_back_office_pages_keep_their_paths(name, args, path):
    assert reverse(f"admin:{name}", args=args) == path
    assert resolve(path).url_name == name


@pytest.mark.django_db
def test_every_admin_page_names_the_product_and_links_the_landing_page(admin_client):
    text = admin_client.get("/admin/").content.decode()
    assert "<title>Dashboard | Usage billing</title>" in text
    assert 'id="operator-dashboard"' in text and 'href="/">View site</a>' in text
