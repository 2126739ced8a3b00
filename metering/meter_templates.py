"""One-click meters and features that match what the gateway presets emit
(``metering/gateways``): apply a template and the gateway's events are metered.

``template_apply`` creates what is missing and leaves every existing key alone, so
applying a template twice, or after an operator changed one of its meters, is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction

from metering.gateways.kong.ai import INPUT, LLM_TYPE, OUTPUT
from metering.gateways.kong.log import REQUEST_TYPE
from metering.models import Aggregation, Feature, Meter
from metering.services import feature_create, meter_create

# Every 2xx status defined by RFC 9110 and its WebDAV extensions; feature filters match
# dimension values exactly, and the request events carry the status as a string.
# The event type of the AI token usage that Kong's Metering & Billing plugin (Kong 3.14+,
# ``meter_ai_token_usage``) posts to OpenMeter's v3 ingest path: two events per call, data
# ``{tokens, type, model, provider}`` with ``type`` "request" (prompt tokens) or
# "response" (completion tokens), as Kong's "Enforce entitlements on LLM traffic" guide
# meters them.
KONG_PLUGIN_LLM_TYPE = "kong.llm_request"

SUCCESS_STATUSES = ["200", "201", "202", "203", "204", "205", "206", "207", "208", "226"]


@dataclass(frozen=True)
class MeterTemplate:
    key: str
    name: str
    description: str
    event_type: str
    aggregation: str
    value_property: str = ""
    group_by: dict[str, str] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "description": self.description,
            "event_type": self.event_type,
            "aggregation": self.aggregation,
            "value_property": self.value_property,
            "group_by": dict(self.group_by),
        }


@dataclass(frozen=True)
class FeatureTemplate:
    key: str
    name: str
    meter: str
    filters: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Template:
    name: str
    title: str
    description: str
    meters: tuple[MeterTemplate, ...]
    features: tuple[FeatureTemplate, ...]


class UnknownTemplate(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"No template {name!r}; there are: {', '.join(t.name for t in TEMPLATES)}."
        )
        self.name = name


TEMPLATES: tuple[Template, ...] = (
    Template(
        name="api_requests",
        title="API requests",
        description="Count gateway requests by route, method, status and service "
        "(Kong's http-log receiver sends them as 'request' events); features for all "
        "calls and for successful (2xx) calls. Filter a feature on route_name with the "
        "name of the Kong route (flights); route is that name, or the route's first "
        "path (/flights) when it has none. The request path (path) is on every event "
        "but not grouped here: one value per URL would make a bucket per URL.",
        meters=(
            MeterTemplate(
                key="api_requests",
                name="API requests",
                description="Requests through the API gateway.",
                event_type=REQUEST_TYPE,
                aggregation=Aggregation.COUNT,
                group_by={
                    "route": "$.route",
                    "route_name": "$.route_name",
                    "method": "$.method",
                    "status": "$.status",
                    "service": "$.service",
                },
            ),
        ),
        features=(
            FeatureTemplate(key="api_calls", name="API calls", meter="api_requests"),
            FeatureTemplate(
                key="api_calls_success",
                name="Successful API calls (2xx)",
                meter="api_requests",
                filters={"status": SUCCESS_STATUSES},
            ),
        ),
    ),
    Template(
        name="llm_tokens",
        title="LLM tokens",
        description="Sum the tokens of LLM calls by direction (input: prompt, output: "
        "completion) and model: Kong's http-log receiver sends each AI Gateway call as "
        "two 'llm' events, {tokens, direction, model, provider}, the shape of "
        "OpenMeter's token meter. Features for input and output tokens filter on "
        "direction, so each has its own price. Also what examples/catalog.yaml defines.",
        meters=(
            MeterTemplate(
                key="llm_tokens",
                name="LLM tokens",
                description="Tokens sent to (input) and returned by (output) LLM providers.",
                event_type=LLM_TYPE,
                aggregation=Aggregation.SUM,
                value_property="$.tokens",
                group_by={"direction": "$.direction", "model": "$.model"},
            ),
        ),
        features=(
            FeatureTemplate(
                key="llm_input_tokens",
                name="LLM input tokens",
                meter="llm_tokens",
                filters={"direction": [INPUT]},
            ),
            FeatureTemplate(
                key="llm_output_tokens",
                name="LLM output tokens",
                meter="llm_tokens",
                filters={"direction": [OUTPUT]},
            ),
        ),
    ),
    Template(
        name="kong_llm_tokens",
        title="LLM tokens from Kong's Metering & Billing plugin",
        description="Sum the tokens that Kong's Metering & Billing plugin "
        "(meter_ai_token_usage) posts to /api/v3/openmeter/events: two "
        "'kong.llm_request' events per AI Gateway call, {tokens, type, model, "
        "provider}, type 'request' for the prompt and 'response' for the completion. "
        "Features for input and output tokens filter on type. Use it instead of "
        "llm_tokens when the plugin, not the http-log receiver, meters the AI traffic "
        "(both at once would count every call twice), and price these features.",
        meters=(
            MeterTemplate(
                key="kong_llm_tokens",
                name="LLM tokens (Kong Metering & Billing)",
                description="Tokens of AI Gateway calls, as Kong's Metering & Billing "
                "plugin reports them.",
                event_type=KONG_PLUGIN_LLM_TYPE,
                aggregation=Aggregation.SUM,
                value_property="$.tokens",
                group_by={"type": "$.type", "model": "$.model", "provider": "$.provider"},
            ),
        ),
        features=(
            FeatureTemplate(
                key="kong_llm_input_tokens",
                name="LLM input tokens (Kong Metering & Billing)",
                meter="kong_llm_tokens",
                filters={"type": ["request"]},
            ),
            FeatureTemplate(
                key="kong_llm_output_tokens",
                name="LLM output tokens (Kong Metering & Billing)",
                meter="kong_llm_tokens",
                filters={"type": ["response"]},
            ),
        ),
    ),
)


def template_get(*, name: str) -> Template:
    """The template of that name; raises ``UnknownTemplate``."""
    for template in TEMPLATES:
        if template.name == name:
            return template
    raise UnknownTemplate(name)


def template_apply(*, name: str) -> list[str]:
    """Create the template's meters and features that do not exist yet; return the keys
    created (meters first), empty when everything was already there.

    Existing meters and features are left as they are, even when they differ from the
    template. Raises ``UnknownTemplate`` for a name not in ``TEMPLATES``, and Django's
    ``ValidationError`` (nothing created) when a feature's filters name a dimension that
    an existing meter of the same key does not have.
    """
    template = template_get(name=name)
    try:
        return _template_create_missing(template)
    except IntegrityError:
        # Someone applied it at the same moment and committed first: what is left to
        # create (probably nothing) is created now, against their rows.
        return _template_create_missing(template)


def _template_create_missing(template: Template) -> list[str]:
    created: list[str] = []
    with transaction.atomic():
        meter_keys = {m.key for m in template.meters} | {f.meter for f in template.features}
        meters = {m.key: m for m in Meter.objects.filter(key__in=meter_keys)}
        for spec in template.meters:
            if spec.key not in meters:
                meters[spec.key] = meter_create(**spec.fields())
                created.append(spec.key)
        existing_features = set(
            Feature.objects.filter(key__in=[f.key for f in template.features]).values_list(
                "key", flat=True
            )
        )
        for spec in template.features:
            if spec.key not in existing_features:
                feature_create(
                    key=spec.key,
                    name=spec.name,
                    meter=meters[spec.meter],
                    filters={k: list(v) for k, v in spec.filters.items()},
                )
                created.append(spec.key)
    return created
