"""One-click meter and feature templates, and that they meter what the Kong receiver sends."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from metering.meter_templates import (
    SUCCESS_STATUSES,
    TEMPLATES,
    UnknownTemplate,
    template_apply,
    template_get,
)
from metering.models import Feature, Meter, UsageBucket
from metering.services import meter_create, usage_rollup

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLE_CATALOG = Path(settings.BASE_DIR) / "examples" / "catalog.yaml"


def run(*args: str) -> str:
    out = StringIO()
    call_command("metering_templates", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_api_requests_creates_a_request_counter_and_its_features():
    created = template_apply(name="api_requests")

    assert created == ["api_requests", "api_calls", "api_calls_success"]
    meter = Meter.objects.get(key="api_requests")
    assert (meter.event_type, meter.aggregation, meter.value_property) == ("request", "COUNT", "")
    assert meter.group_by == {
        "route": "$.route",
        "route_name": "$.route_name",
        "method": "$.method",
        "status": "$.status",
        "service": "$.service",
    }
    assert Feature.objects.get(key="api_calls").filters == {}
    success = Feature.objects.get(key="api_calls_success")
    assert success.meter == meter
    assert success.filters == {"status": SUCCESS_STATUSES}
    assert {"200", "201", "204"} <= set(SUCCESS_STATUSES)
    assert not {s for s in SUCCESS_STATUSES if not s.startswith("2")}


@pytest.mark.django_db
def test_llm_tokens_sums_tokens_by_direction_and_model_with_a_feature_per_direction():
    created = template_apply(name="llm_tokens")

    assert created == ["llm_tokens", "llm_input_tokens", "llm_output_tokens"]
    meter = Meter.objects.get(key="llm_tokens")
    assert (meter.event_type, meter.aggregation, meter.value_property) == ("llm", "SUM", "$.tokens")
    assert meter.group_by == {"direction": "$.direction", "model": "$.model"}
    assert {(f.key, f.meter.key, json.dumps(f.filters)) for f in Feature.objects.all()} == {
        ("llm_input_tokens", "llm_tokens", '{"direction": ["input"]}'),
        ("llm_output_tokens", "llm_tokens", '{"direction": ["output"]}'),
    }


def test_llm_tokens_is_the_example_catalogs_meter_and_features():
    """An operator who starts from the template and one who applies the example catalog
    price the same features on the same meter."""
    catalog = yaml.safe_load(EXAMPLE_CATALOG.read_text())
    [meter] = [m for m in catalog["meters"] if m["key"] == "llm_tokens"]
    template = template_get(name="llm_tokens")

    [spec] = template.meters
    assert (spec.key, spec.event_type, spec.aggregation, spec.value_property, spec.group_by) == (
        meter["key"],
        meter["event_type"],
        meter["aggregation"],
        meter["value"],
        meter["group_by"],
    )
    features = {f["key"]: (f["meter"], f["filters"]) for f in catalog["features"]}
    for feature in template.features:
        assert features[feature.key] == (feature.meter, feature.filters)


@pytest.mark.django_db
def test_kong_llm_tokens_sums_the_metering_and_billing_plugins_token_events_by_type():
    created = template_apply(name="kong_llm_tokens")

    assert created == ["kong_llm_tokens", "kong_llm_input_tokens", "kong_llm_output_tokens"]
    meter = Meter.objects.get(key="kong_llm_tokens")
    assert (meter.event_type, meter.aggregation, meter.value_property) == (
        "kong.llm_request",
        "SUM",
        "$.tokens",
    )
    assert meter.group_by == {"type": "$.type", "model": "$.model", "provider": "$.provider"}
    assert Feature.objects.get(key="kong_llm_input_tokens").filters == {"type": ["request"]}
    assert Feature.objects.get(key="kong_llm_output_tokens").filters == {"type": ["response"]}


@pytest.mark.django_db
def test_applying_a_template_again_creates_nothing():
    template_apply(name="api_requests")

    assert template_apply(name="api_requests") == []
    assert Meter.objects.count() == 1
    assert Feature.objects.count() == 2


@pytest.mark.django_db
def test_existing_keys_are_left_as_the_operator_made_them():
    meter_create(
        key="api_requests",
        name="Our own request meter",
        event_type="request",
        aggregation="COUNT",
        group_by={"status": "$.status"},
    )

    created = template_apply(name="api_requests")

    assert created == ["api_calls", "api_calls_success"]
    meter = Meter.objects.get(key="api_requests")
    assert meter.name == "Our own request meter"
    assert meter.group_by == {"status": "$.status"}


@pytest.mark.django_db
def test_an_existing_meter_without_the_filtered_dimension_is_reported_and_nothing_is_created():
    meter_create(key="api_requests", event_type="request", aggregation="COUNT", group_by={})

    with pytest.raises(ValidationError) as raised:
        template_apply(name="api_requests")

    assert "status" in str(raised.value)
    assert not Feature.objects.exists()


@pytest.mark.django_db
def test_an_unknown_template_is_refused():
    with pytest.raises(UnknownTemplate, match="api_requests, llm_tokens, kong_llm_tokens"):
        template_apply(name="stripe_charges")


def test_templates_describe_themselves_for_the_admin():
    assert [t.name for t in TEMPLATES] == ["api_requests", "llm_tokens", "kong_llm_tokens"]
    for template in TEMPLATES:
        assert template.title
        assert template.description


@pytest.mark.django_db
def test_the_command_applies_named_templates_and_prints_what_it_created():
    assert run("llm_tokens").splitlines() == [
        "llm_tokens: created llm_tokens",
        "llm_tokens: created llm_input_tokens",
        "llm_tokens: created llm_output_tokens",
    ]
    assert run("llm_tokens") == "llm_tokens: nothing to create\n"
    assert not Meter.objects.filter(key="api_requests").exists()


@pytest.mark.django_db
def test_the_command_applies_every_template_when_none_is_named():
    output = run()

    assert "api_requests: created api_calls_success" in output
    assert "llm_tokens: created llm_output_tokens" in output
    assert "kong_llm_tokens: created kong_llm_output_tokens" in output
    assert Meter.objects.count() == 3
    assert Feature.objects.count() == 6


@pytest.mark.django_db
def test_the_command_lists_templates_without_applying_them():
    output = run("--list")

    assert output.startswith("api_requests\tAPI requests: ")
    assert not Meter.objects.exists()


@pytest.mark.django_db
def test_the_command_refuses_an_unknown_template():
    with pytest.raises(CommandError, match="No template 'nope'"):
        run("nope")


@pytest.mark.django_db(transaction=True)
@pytest.mark.urls("tests.metering.kong_urls")
def test_kong_logs_fill_the_template_meters(api_client_for):
    """The receiver's events and the templates agree: requests counted per route and
    status, tokens summed per direction and model."""
    for template in TEMPLATES:
        template_apply(name=template.name)
    kong = api_client_for("ingest")
    for name in ("kong_api_call", "kong_batch", "kong_ai_proxy"):
        body = (FIXTURES / f"{name}.json").read_text()
        response = kong.post(
            "/api/v1/gateways/kong/http-log", data=body, content_type="application/json"
        )
        assert response.status_code == 204, response.content

    usage_rollup(now=datetime(2026, 11, 27, 12, 0, tzinfo=UTC))

    requests = UsageBucket.objects.filter(meter__key="api_requests")
    assert sum(b.event_count for b in requests) == 5
    assert sum(b.event_count for b in requests if b.dims["status"] in SUCCESS_STATUSES) == 4
    assert {(b.dims["route"], b.dims["method"], b.dims["status"]) for b in requests} == {
        ("flights", "GET", "200"),
        ("flights", "POST", "201"),
        ("flights", "GET", "404"),
        ("openai-chat", "POST", "200"),
    }
    # a feature filters on the Kong route's name, as the operator named it in Kong
    assert {b.dims["route_name"] for b in requests} == {"flights", "openai-chat"}
    tokens = {b.dims["direction"]: b for b in UsageBucket.objects.filter(meter__key="llm_tokens")}
    assert set(tokens) == {"input", "output"}
    assert {b.subject for b in tokens.values()} == {"acme-app-1"}
    assert {b.dims["model"] for b in tokens.values()} == {"gpt-4o"}
    assert (tokens["input"].value_sum, tokens["output"].value_sum) == (
        Decimal("1234"),
        Decimal("377"),
    )
    assert (
        json.loads((FIXTURES / "kong_ai_proxy.json").read_text())["ai"]["proxy"]["usage"][
            "total_tokens"
        ]
        == tokens["input"].value_sum + tokens["output"].value_sum
    )
