"""A correctly signed Stripe webhook that is not a usable event (no id, an id that is not
text, no type, data that is not an object...) is a 400 and nothing is stored: never a
500, and never a row keyed by "None" that swallows the next malformed delivery."""

from __future__ import annotations

import json

import pytest
import stripe
from django.urls import include, path

from config.urls import urlpatterns as project_urlpatterns
from rails.models import InboundWebhook
from tests.rails.conftest import WEBHOOK_SECRET

urlpatterns = [*project_urlpatterns, path("webhooks/", include("rails.urls"))]
pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

WEBHOOK_URL = "/webhooks/stripe"
EVENT = {
    "id": "evt_1",
    "object": "event",
    "type": "invoice.paid",
    "data": {"object": {"id": "in_1", "object": "invoice"}},
}


@pytest.fixture(autouse=True)
def _secret(settings):
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET


def post_signed(client, body):
    payload = body if isinstance(body, str) else json.dumps(body)
    header = stripe.WebhookSignature.generate_signature_header(payload, WEBHOOK_SECRET)
    return client.post(
        WEBHOOK_URL, data=payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
    )


def without(key: str) -> dict:
    return {k: v for k, v in EVENT.items() if k != key}


@pytest.mark.parametrize(
    "body",
    [
        without("id"),
        EVENT | {"id": None},
        EVENT | {"id": ""},
        EVENT | {"id": 12345},
        EVENT | {"id": "evt_" + "x" * 300},
        without("type"),
        EVENT | {"type": ["invoice.paid"]},
        EVENT | {"data": ["not", "an", "object"]},
        EVENT | {"data": {"object": "in_1"}},
        [EVENT],
        "null",
        '"evt_1"',
    ],
    ids=[
        "no-id",
        "null-id",
        "empty-id",
        "number-id",
        "long-id",
        "no-type",
        "list-type",
        "list-data",
        "text-object",
        "a-list",
        "null",
        "a-string",
    ],
)
def test_a_signed_body_that_is_not_a_usable_event_is_a_400_and_stores_nothing(client, body):
    response = post_signed(client, body)

    assert response.status_code == 400, response.content
    assert "event" in response.json()["detail"]
    assert not InboundWebhook.objects.exists()


def test_a_signed_event_without_an_id_is_a_400_saying_so(client):
    response = post_signed(client, without("id"))

    assert response.status_code == 400
    assert response.json() == {"detail": "Not a Stripe event: it has no id."}


def test_a_well_formed_signed_event_is_still_accepted(client):
    response = post_signed(client, EVENT)

    assert response.status_code == 200
    assert InboundWebhook.objects.get().event_id == "evt_1"


def test_a_body_that_is_not_utf8_is_a_400_even_unsigned(client):
    response = client.post(
        WEBHOOK_URL,
        data=b'{"id": "evt_\xff"}',
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE="t=1,v1=00",
    )

    assert response.status_code == 400
    assert not InboundWebhook.objects.exists()
