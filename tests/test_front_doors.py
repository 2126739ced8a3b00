"""The product's front doors: what a newcomer opens first (``/``, ``/api/v1/``, the
admin's sign-in) names the product and leads somewhere, and is never a debug page."""

from __future__ import annotations

import re

import pytest
from django.test import override_settings
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_the_landing_page_says_what_the_product_is_and_links_every_door(client):
    response = client.get("/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "<title>Usage billing</title>" in html
    assert "turns API and AI traffic into paid invoices" in html
    for door, href in [
        ("landing-admin", "/admin/"),
        ("landing-api-docs", "/api/docs/"),
        ("landing-api", "/api/v1/"),
        ("landing-portal", "/portal/"),
    ]:
        assert f'<a href="{href}" id="{door}">' in html, door
    # each door opens (the portal's sign-in, the docs, the index); the admin asks to sign in
    assert client.get("/portal/").status_code == 200
    assert client.get("/api/docs/").status_code == 200
    assert client.get("/admin/").status_code == 302


def test_the_api_index_lists_its_resources_without_authentication(client):
    response = client.get("/api/v1/")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"name", "version", "authentication", "resources", "schema", "docs"}
    assert body["schema"] == "http://testserver/api/schema/"
    assert body["docs"] == "http://testserver/api/docs/"
    resources = body["resources"]
    for name in [
        "events",
        "meters",
        "features",
        "customers",
        "consumer-mappings",
        "invoices",
        "credit-notes",
        "plans",
        "subscriptions",
        "tax-rates",
        "usage/unattributed",
    ]:
        assert resources[name] == f"http://testserver/api/v1/{name}", name
    # only routes that take no parameter: "meters/<key>" is the meters' business
    assert not any("<" in url or "{" in url for url in resources.values())


def test_every_resource_the_api_index_lists_is_mounted(client, api):
    resources = client.get("/api/v1/").json()["resources"]

    for name, url in resources.items():
        path = url.removeprefix("http://testserver")
        # a listed resource answers: a GET, 405 for the ones that only take a POST, or 400
        # for one that needs a query parameter (gateways/authorize asks for its feature)
        assert api.get(path).status_code in (200, 400, 405), name


def test_the_api_index_answers_json_to_a_browser_and_a_problem_to_a_post(client, api):
    browser = client.get("/api/v1/", HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")
    assert browser.status_code == 200 and browser["Content-Type"] == "application/json"
    # a bearer key, even a wrong one, changes nothing: the index is public
    wrong_key = client.get("/api/v1/", HTTP_AUTHORIZATION="Bearer ubk_not_a_key")
    assert wrong_key.status_code == 200 and "resources" in wrong_key.json()

    refused = api.post("/api/v1/", {}, format="json")
    assert refused.status_code == 405
    assert refused["Content-Type"] == "application/problem+json"
    assert refused.json()["title"] == "Method not allowed"


def test_the_api_index_is_in_the_openapi_schema(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert "get" in schema["paths"]["/api/v1/"]


@pytest.mark.parametrize("debug", [False, True])
def test_the_front_doors_resolve_in_development_and_production(client, debug):
    with override_settings(DEBUG=debug):
        assert client.get("/").status_code == 200
        assert client.get("/api/v1/").status_code == 200


def test_a_missing_page_is_a_plain_404_not_a_debug_page(client):
    response = client.get("/no-such-page/")

    assert response.status_code == 404
    html = response.content.decode()
    assert "Using the URLconf" not in html and "Django" not in html
    assert client.get("/api/v1/no-such-resource").status_code == 404


def test_the_admin_sign_in_names_the_product(client):
    html = client.get(reverse("admin:login")).content.decode()

    assert "<title>Log in | Usage billing</title>" in html
    assert re.search(r'<div id="site-name"><a href="/admin/">Usage billing</a></div>', html)
    assert "Django administration" not in html


def test_the_admins_view_site_link_opens_the_landing_page(admin_client):
    html = admin_client.get(reverse("admin:index")).content.decode()

    assert '<a href="/">View site</a>' in html
    assert "<title>Dashboard | Usage billing</title>" in html
    assert "Django administration" not in html and "Django site admin" not in html
