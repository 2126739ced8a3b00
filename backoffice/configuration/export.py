"""The current configuration as a document in the file format ``config_apply`` reads.

Applying an export changes nothing; applying it to an empty database recreates the same
configuration (plans as their latest public version; webhook signing secrets from the
environment). Everything is ordered by key so two exports of the same configuration are
identical; decimals are strings.

Webhook signing secrets are never written: each endpoint's ``secret`` is a reference,
``{env: WEBHOOK_SECRET_<KEY>}``, that ``config_apply`` reads from the environment (and
that leaves a stored secret as it is when the variable is not set).
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import yaml

from backoffice.configuration.apply_customers import rail_settings_as_stored
from backoffice.configuration.report import instant_text
from backoffice.configuration.schema import CONSUMER_VALID_FROM_DEFAULT, SECTIONS, SHAPES
from billing.catalog.prices import price_dump, price_parse
from billing.catalog.services import plan_latest_version
from billing.models import Plan, PlanVersion, Subscription, WebhookEndpoint
from billing.notifications.models import NotificationRule
from core.money import plain_decimal
from customers.models import CUSTOMER_ADDRESS_FIELDS, ConsumerMapping, Customer
from customers.rail_settings import ACCOUNT_NUMBER, rail_settings_shown
from metering.models import Feature, Meter


def _sorted(mapping: dict) -> dict:
    # JSON columns come back in the database's key order; the file reads best sorted.
    return {k: mapping[k] for k in sorted(mapping)}


def _entitlement(entitlement: dict) -> dict:
    order = list(SHAPES["entitlement"])
    return {
        k: entitlement[k]
        for k in sorted(
            entitlement, key=lambda k: (order.index(k) if k in order else len(order), k)
        )
    }


def _rail_settings(customer: Customer) -> dict:
    """The settings as stored: a bank account number encrypted, as every save stores it
    (an export applies as is to a database with the same keys). A number found in clear
    (saved before it was encrypted for every rail, or with the rails' hook off) is
    written encrypted as a save would store it, or masked when nothing can encrypt it:
    an export never prints an account number."""
    settings_ = customer.rail_settings or {}
    if not settings_.get(ACCOUNT_NUMBER):
        return settings_
    stored = rail_settings_as_stored(customer.rail, settings_)
    return rail_settings_shown(stored) if stored.get(ACCOUNT_NUMBER) else stored


def _present(**fields: Any) -> dict[str, Any]:
    """The fields with a value: empty text, lists and objects are left out."""
    return {k: v for k, v in fields.items() if v not in ("", None, [], {})}


def _meter(meter: Meter) -> dict:
    return {
        "key": meter.key,
        **_present(name=meter.name, description=meter.description),
        "event_type": meter.event_type,
        "aggregation": meter.aggregation,
        **_present(value=meter.value_property, group_by=_sorted(meter.group_by)),
    }


def _feature(feature: Feature) -> dict:
    return {
        "key": feature.key,
        **_present(name=feature.name),
        "meter": feature.meter.key,
        **_present(filters=_sorted(feature.filters)),
    }


def _plan(plan: Plan, version: PlanVersion) -> dict:
    cards = []
    for card in version.rate_cards.select_related("feature").order_by("position", "pk"):
        feature_key = card.feature.key if card.feature else None
        cards.append(
            {
                **({} if card.key == feature_key else {"key": card.key}),
                **_present(name=card.name, feature=feature_key),
                "price": price_dump(price_parse(card.price)),  # in the catalog's key order
            }
        )
    return {
        "key": plan.key,
        "name": plan.name,
        **_present(description=plan.description),
        "currency": version.currency,
        "cadence": version.cadence,
        "minimum_commitment": plain_decimal(version.minimum_commitment.amount),
        **_present(rate_cards=cards, entitlements=[_entitlement(e) for e in version.entitlements]),
    }


def webhook_secret_env(key: str) -> str:
    """The environment variable an export names for an endpoint's signing secret:
    ``ops`` → ``WEBHOOK_SECRET_OPS``, ``billing.eu-1`` → ``WEBHOOK_SECRET_BILLING_EU_1``."""
    return "WEBHOOK_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", key).upper()


def _webhook(endpoint: WebhookEndpoint) -> dict:
    return {
        "key": endpoint.key,
        "url": endpoint.url,
        "secret": {"env": webhook_secret_env(endpoint.key)},
        "events": list(endpoint.events),
        **({} if endpoint.enabled else {"enabled": False}),
    }


def _rule(rule: NotificationRule) -> dict:
    return {
        "key": rule.key,
        "kind": rule.kind,
        **_present(
            feature=rule.feature.key if rule.feature else None,
            customer=rule.customer.key if rule.customer else None,
        ),
        "thresholds": [dict(t) for t in rule.thresholds],
        **_present(endpoints=sorted(e.key for e in rule.endpoints.all())),
        **({} if rule.enabled else {"enabled": False}),
    }


class _CustomerTree:
    def __init__(self) -> None:
        self.children: dict[int | None, list[Customer]] = defaultdict(list)
        for customer in Customer.objects.order_by("key"):
            self.children[customer.parent_id].append(customer)
        self.mappings: dict[int, list[ConsumerMapping]] = defaultdict(list)
        for mapping in ConsumerMapping.objects.order_by("consumer_key", "valid_from"):
            self.mappings[mapping.customer_id].append(mapping)
        self.subscriptions: dict[int, list[Subscription]] = defaultdict(list)
        for sub in Subscription.objects.select_related("plan_version__plan").order_by("start"):
            self.subscriptions[sub.customer_id].append(sub)
        self.latest: dict[int, int | None] = {}

    def _latest_number(self, plan: Plan) -> int | None:
        if plan.pk not in self.latest:
            latest = plan_latest_version(plan=plan)
            self.latest[plan.pk] = latest.version if latest else None
        return self.latest[plan.pk]

    def _subscription(self, sub: Subscription) -> dict:
        plan = sub.plan_version.plan
        # A subscriber on an older (or custom) version says so; one on the latest does not,
        # so the file still applies after the plan's next edit and on an empty database.
        on_latest = sub.plan_version.version == self._latest_number(plan)
        return {
            "plan": plan.key,
            "start": instant_text(sub.start),
            **({"end": instant_text(sub.end)} if sub.end else {}),
            **({} if on_latest else {"version": sub.plan_version.version}),
        }

    @staticmethod
    def _consumer(mapping: ConsumerMapping) -> dict:
        out: dict[str, Any] = {"key": mapping.consumer_key}
        if mapping.valid_from != CONSUMER_VALID_FROM_DEFAULT:
            out["valid_from"] = instant_text(mapping.valid_from)
        if mapping.valid_to is not None:
            out["valid_to"] = instant_text(mapping.valid_to)
        return out

    def customer(self, customer: Customer, parent: Customer | None = None) -> dict:
        # A subsidiary's currency defaults to its parent's, its time zone to UTC.
        inherited = parent is not None and customer.currency == parent.currency
        out: dict[str, Any] = {
            "key": customer.key,
            "name": customer.name,
            **_present(email=customer.email),
            **({} if inherited else {"currency": customer.currency}),
            **(
                {}
                if parent is not None and customer.timezone == "UTC"
                else {"timezone": customer.timezone}
            ),
            **({} if customer.rail == "manual" else {"rail": customer.rail}),
            **_present(rail_settings=_sorted(_rail_settings(customer))),
            **_present(**{name: getattr(customer, name) for name in CUSTOMER_ADDRESS_FIELDS}),
        }
        if parent is not None and not customer.bill_to_parent:
            out["bill_to_parent"] = False
        return out | _present(
            consumers=[self._consumer(m) for m in self.mappings[customer.pk]],
            subscriptions=[self._subscription(s) for s in self.subscriptions[customer.pk]],
            subsidiaries=[self.customer(c, customer) for c in self.children[customer.pk]],
        )


def config_export() -> dict[str, list[dict]]:
    """The whole configuration: meters, features, plans (latest public version),
    webhook endpoints (secrets as environment references), notification rules, and
    customers as trees with their consumers and subscriptions."""
    plans = []
    for plan in Plan.objects.order_by("key"):
        version = plan_latest_version(plan=plan)
        if version is not None:  # a plan with only custom contracts has no public form
            plans.append(_plan(plan, version))
    tree = _CustomerTree()
    document = {
        "meters": [_meter(m) for m in Meter.objects.order_by("key")],
        "features": [_feature(f) for f in Feature.objects.select_related("meter").order_by("key")],
        "plans": plans,
        "webhook_endpoints": [_webhook(w) for w in WebhookEndpoint.objects.order_by("key")],
        "notification_rules": [
            _rule(r)
            for r in NotificationRule.objects.select_related("feature", "customer")
            .prefetch_related("endpoints")
            .order_by("key")
        ],
        "customers": [tree.customer(c) for c in tree.children[None]],
    }
    assert tuple(document) == SECTIONS
    return document


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False):
        return super().increase_indent(flow, False)  # indent list items under their key


def _scalar(value: Any) -> bool:
    return not isinstance(value, dict | list)


def _represent_dict(dumper: yaml.SafeDumper, data: dict) -> yaml.Node:
    # Small objects of plain values read best on one line: {up_to: 1000, unit_price: "1"}.
    flat = all(
        _scalar(v) or (isinstance(v, list) and all(_scalar(x) for x in v)) for v in data.values()
    )
    short = len(str(data)) <= 90
    return dumper.represent_mapping(
        "tag:yaml.org,2002:map", list(data.items()), flow_style=flat and short
    )


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    return dumper.represent_sequence(
        "tag:yaml.org,2002:seq", data, flow_style=all(_scalar(x) for x in data)
    )


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    # Text that plain YAML would read as something else ("0.002", "2026-10-01", "NO") or
    # that another YAML reader might (digits, e.g. an account number) is double-quoted.
    plain = dumper.resolve(yaml.ScalarNode, data, (True, False)) == "tag:yaml.org,2002:str"
    quoted = not plain or data.isdigit()
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style='"' if quoted else None)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(dict, _represent_dict)
_Dumper.add_representer(list, _represent_list)


def document_dump(document: dict) -> str:
    """The document as YAML text, in the order given."""
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
