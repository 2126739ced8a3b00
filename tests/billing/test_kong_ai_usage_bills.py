"""AI usage bills: Kong AI Gateway traffic, from the gateway to the customer's upcoming
invoice, priced per input and output token as examples/catalog.yaml prices them.

Two ways Kong reports the tokens: the HTTP Log plugin's logs posted to the receiver
(the ``llm_tokens`` meter of the catalog and of the one-click template), and Kong's
Metering & Billing plugin posting CloudEvents to OpenMeter's v3 path (the
``kong_llm_tokens`` template)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.utils import timezone

from backoffice.configuration.apply import config_apply
from metering.meter_templates import template_apply
from metering.models import Event
from metering.services import usage_rollup

pytestmark = pytest.mark.django_db(transaction=True)  # the rollup reads committed rows

CATALOG = Path(settings.BASE_DIR) / "examples" / "catalog.yaml"
KONG_AI_LOG = Path(settings.BASE_DIR) / "tests" / "metering" / "fixtures" / "kong_ai_proxy.json"
CALLS = 100  # of the fixture's 1,234 prompt and 377 completion tokens each


def catalog(**customers_and_more) -> dict:
    """The example catalog's meters, features and plans, with the customers given (its
    own customers carry rail settings that are the rails' tests' business)."""
    document = yaml.safe_load(CATALOG.read_text())
    document = {key: document[key] for key in ("meters", "features", "plans")}
    return document | customers_and_more


def acme_on(plan: str) -> dict:
    """Acme, whose Kong consumer's custom_id is the fixture's, subscribed to ``plan``."""
    return {
        "key": "acme",
        "name": "Acme",
        "currency": "USD",
        "consumers": [{"key": "acme-app-1"}],
        "subscriptions": [{"plan": plan, "start": "2026-10-01T00:00:00Z"}],
    }


def apply(document: dict) -> None:
    assert config_apply(document=document, dry_run=False).changed


def kong_ai_calls(count: int) -> list[dict]:
    """A batch of Kong AI Gateway logs (ai-proxy with log_statistics), each its own
    request, started just now: in the subscription's current period on any date."""
    log = json.loads(KONG_AI_LOG.read_text())
    started_at = int(timezone.now().timestamp() * 1000)
    batch = []
    for i in range(count):
        call = copy.deepcopy(log)
        call["request"]["id"] = f"{i:032x}"
        call["started_at"] = started_at
        batch.append(call)
    return batch


def upcoming_lines(api, customer: str) -> dict[str, dict]:
    response = api.get(f"/api/v1/customers/{customer}/upcoming-invoice")
    assert response.status_code == 200, response.content
    return {line["feature"]: line for line in response.json()["lines"] if line["feature"]}


def test_kong_ai_gateway_logs_bill_input_and_output_tokens_at_the_catalogs_prices(
    api_client_for,
):
    apply(catalog(customers=[acme_on("pro")]))
    kong, api = api_client_for("ingest"), api_client_for("read")
    batch = kong_ai_calls(CALLS)

    response = kong.post(
        "/api/v1/gateways/kong/http-log", data=json.dumps(batch), content_type="application/json"
    )
    assert response.status_code == 204, response.content
    # Kong's queue sends a batch again when it saw no answer: it counts once
    response = kong.post(
        "/api/v1/gateways/kong/http-log", data=json.dumps(batch), content_type="application/json"
    )
    assert response.status_code == 204, response.content
    usage_rollup(now=timezone.now())

    lines = upcoming_lines(api, "acme")

    # Pro: input tokens in packages of 100,000 at $1.00, so 123,400 tokens are 2 packages
    llm_input = lines["llm_input_tokens"]
    assert (llm_input["quantity"], llm_input["amount"]) == ("123400", "2.00")
    # output tokens graduated, $0.00002 each up to 100,000: 37,700 × 0.00002 = 0.754
    llm_output = lines["llm_output_tokens"]
    assert (llm_output["quantity"], llm_output["amount"]) == ("37700", "0.75")
    assert [(t["quantity"], t["unit_price"]) for t in llm_output["tier_breakdown"]] == [
        ("37700", "0.00002")
    ]
    # and the same logs are the customer's API calls, within Pro's 1,000 included
    assert (lines["api_calls"]["quantity"], lines["api_calls"]["amount"]) == ("100", "0.00")


def test_kong_metering_and_billing_plugin_token_events_bill_on_its_templates_features(
    api_client_for,
):
    """Kong's Metering & Billing plugin (meter_ai_token_usage) posts two CloudEvents per
    AI call to the v3 path: ``kong.llm_request``, type ``request`` (prompt tokens) and
    ``response`` (completion tokens). Its template's features priced as Pro prices the
    catalog's."""
    template_apply(name="kong_llm_tokens")
    document = catalog(customers=[acme_on("pro")])
    [pro] = [plan for plan in document["plans"] if plan["key"] == "pro"]
    for card in pro["rate_cards"]:
        if card.get("feature", "").startswith("llm_"):
            card["feature"] = "kong_" + card["feature"]
    apply(document)
    kong, api = api_client_for("ingest"), api_client_for("read")
    now = timezone.now().isoformat()
    events = [
        {
            "specversion": "1.0",
            "id": f"{call}-{kind}",
            "source": "kong-gateway",
            "type": "kong.llm_request",
            "subject": "acme-app-1",
            "time": now,
            "data": {"tokens": tokens, "type": kind, "model": "gpt-4o", "provider": "openai"},
        }
        for call in range(CALLS)
        for kind, tokens in (("request", 1234), ("response", 377))
    ]

    response = kong.post(
        "/api/v3/openmeter/events",
        data=json.dumps(events),
        content_type="application/cloudevents-batch+json",
    )
    assert response.status_code == 202, response.content
    assert Event.objects.filter(type="kong.llm_request").count() == 2 * CALLS
    usage_rollup(now=timezone.now())

    lines = upcoming_lines(api, "acme")

    assert (
        lines["kong_llm_input_tokens"]["quantity"],
        lines["kong_llm_input_tokens"]["amount"],
    ) == (
        "123400",
        "2.00",
    )
    assert (
        lines["kong_llm_output_tokens"]["quantity"],
        lines["kong_llm_output_tokens"]["amount"],
    ) == ("37700", "0.75")
