from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from core.models import ApiKey
from core.services import api_key_create, api_key_revoke

pytestmark = pytest.mark.django_db

URL = "/api/v1/customers"


def test_the_secret_is_stored_only_as_a_hash():
    issued = api_key_create(name="gateway", scopes=["ingest"])
    stored = ApiKey.objects.get(pk=issued.api_key.pk)
    assert issued.secret not in (stored.secret_hash, stored.prefix)
    assert issued.secret.startswith(f"ubk_{stored.prefix}_")


def test_a_request_without_a_key_is_401_with_a_bearer_challenge():
    response = APIClient().get(URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize(
    "header", ["Bearer nope", "Bearer ubk_000000000000_wrong", "Bearer", "Basic abc"]
)
def test_a_wrong_or_malformed_key_is_401(header):
    api_key_create(name="real", scopes=["read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    assert client.get(URL).status_code == 401


def test_a_revoked_key_is_refused():
    issued = api_key_create(name="old", scopes=["read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    assert client.get(URL).status_code == 200
    api_key_revoke(api_key=issued.api_key, now=timezone.now())
    assert client.get(URL).status_code == 401


def test_reading_needs_the_read_scope_and_writing_the_write_scope(api_client_for):
    ingest_only = api_client_for("ingest")
    response = ingest_only.get(URL)
    assert response.status_code == 403
    assert "read" in response.json()["detail"]

    reader = api_client_for("read")
    assert reader.get(URL).status_code == 200
    response = reader.post(URL, {"key": "acme", "name": "Acme"}, format="json")
    assert response.status_code == 403
    assert "write" in response.json()["detail"]

    writer = api_client_for("write")
    assert writer.post(URL, {"key": "acme", "name": "Acme"}, format="json").status_code == 201


def test_last_used_is_recorded_but_not_on_every_request(api_client_for):
    client = api_client_for("read")
    assert client.api_key.last_used_at is None
    client.get(URL)
    first = ApiKey.objects.get(pk=client.api_key.pk).last_used_at
    assert first is not None
    client.get(URL)
    assert ApiKey.objects.get(pk=client.api_key.pk).last_used_at == first

    ApiKey.objects.filter(pk=client.api_key.pk).update(last_used_at=first - timedelta(minutes=5))
    client.get(URL)
    assert ApiKey.objects.get(pk=client.api_key.pk).last_used_at > first - timedelta(minutes=5)


def test_create_api_key_prints_only_the_secret(capsys):
    call_command("create_api_key", "kong-eu", "--scopes", "ingest,read")
    out = capsys.readouterr().out.strip()
    key = ApiKey.objects.get(name="kong-eu")
    assert out.startswith(f"ubk_{key.prefix}_")
    assert "\n" not in out
    assert key.scopes == ["ingest", "read"]


def test_create_api_key_refuses_an_unknown_scope():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="admin"):
        call_command("create_api_key", "x", "--scopes", "admin")
    assert not ApiKey.objects.exists()
