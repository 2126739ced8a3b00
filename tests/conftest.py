from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from core.services import api_key_create


@pytest.fixture
def api_client_for(db):
    """An API client authenticated with a new key holding ``scopes``."""

    def make(*scopes: str) -> APIClient:
        issued = api_key_create(name="test", scopes=scopes or ["read", "write", "ingest"])
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
        client.api_key = issued.api_key
        return client

    return make


@pytest.fixture
def api(api_client_for) -> APIClient:
    """A client whose key holds every scope."""
    return api_client_for("ingest", "read", "write")


def pytest_configure(config):
    # Tasks run in-process unless a test is about the queue (those start a real worker).
    from config.celery import app

    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
