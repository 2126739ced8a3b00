"""Configuration as code: billing_apply and billing_export on the example catalog."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from backoffice.configuration import config_export
from billing.models import Plan, PlanVersion, RateCard, Subscription, WebhookEndpoint
from billing.notifications.models import NotificationRule
from customers.models import ConsumerMapping, ConsumerMappingChange, Customer
from metering.models import Feature, Meter
from metering.services import meter_create
from rails.settings_hooks import bank_account_protect
from tests.factories import ConsumerMappingFactory, CustomerFactory
from tests.metering.conftest import cloud_event

pytestmark = pytest.mark.django_db

EXAMPLE = Path(settings.BASE_DIR) / "examples" / "catalog.yaml"
MODELS = (
    Meter,
    Feature,
    Plan,
    PlanVersion,
    RateCard,
    WebhookEndpoint,
    NotificationRule,
    Customer,
    ConsumerMapping,
    Subscription,
)


@pytest.fixture(autouse=True)
def _rails_validate_nothing(settings):
    """Rail settings are the rails' to check (their own tests do); here they are stored
    as given, so these tests are about the file, not about a rail's rules. All but a
    bank account number: whatever the rail it is encrypted (and exported encrypted)."""
    settings.CUSTOMER_RAIL_SETTINGS_HOOK = "tests.backoffice.test_configuration.stored_as_given"


def stored_as_given(*, rail: str, rail_settings: dict, previous: dict | None = None) -> dict:
    return bank_account_protect(rail_settings=rail_settings, previous=previous)


def last4_hook(*, rail: str, rail_settings: dict, previous: dict | None = None) -> dict:
    """A rail that derives a setting of its own when it stores them."""
    if rail == "ach":
        return rail_settings | {"account_last4": rail_settings["account_number"][-4:]}
    return rail_settings


def counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in MODELS}


def apply(tmp_path: Path, text: str | None = None, *options: str) -> list[str]:
    """Run billing_apply on ``text`` (the example when None); return its output lines."""
    path = EXAMPLE
    if text is not None:
        path = tmp_path / "config.yaml"
        path.write_text(text)
    out = StringIO()
    call_command("billing_apply", str(path), *options, stdout=out, stderr=StringIO())
    return out.getvalue().splitlines()


def apply_failing(tmp_path: Path, text: str) -> list[str]:
    """Run billing_apply expecting it to refuse ``text``; return the errors it printed."""
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    err = StringIO()
    with pytest.raises(CommandError, match="nothing was changed"):
        call_command("billing_apply", str(path), stdout=StringIO(), stderr=err)
    return err.getvalue().splitlines()


def export_text(tmp_path: Path) -> str:
    path = tmp_path / "export.yaml"
    call_command("billing_export", "--out", str(path), stderr=StringIO())
    return path.read_text()


def edited(*replacements: tuple[str, str]) -> str:
    text = EXAMPLE.read_text()
    for old, new in replacements:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


OPS_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the example's
RULES = """
notification_rules:
  - key: api-calls-usage
    kind: entitlement_threshold
    feature: api_calls
    thresholds: [{percent: 80}, {percent: 100}, {usage: 1000000}]
    endpoints: [ops]
  - key: globex-spend
    kind: spend_threshold
    customer: globex
    thresholds: [{amount: "10000.00"}]
    endpoints: [ops]
"""


def with_rules(text: str | None = None, rules: str = RULES) -> str:
    """The example (or ``text``) with notification rules added."""
    return (EXAMPLE.read_text() if text is None else text) + rules


def empty_the_database() -> None:
    NotificationRule.objects.all().delete()
    Subscription.objects.all().delete()
    ConsumerMapping.objects.all().delete()
    ConsumerMappingChange.objects.all().delete()
    RateCard.objects.all().delete()
    PlanVersion.objects.all().delete()
    Plan.objects.all().delete()
    Feature.objects.all().delete()
    Meter.objects.all().delete()
    WebhookEndpoint.objects.all().delete()
    while Customer.objects.exists():  # leaves first: a parent is protected by its children
        Customer.objects.filter(subsidiaries__isnull=True).delete()


def test_applying_the_example_creates_the_catalog_and_the_customer_trees(tmp_path):
    lines = apply(tmp_path)

    assert "+ meter llm_tokens" in lines
    assert "+ feature flights_api_calls" in lines
    assert "+ plan pro (version 1)" in lines
    assert "+ webhook endpoint ops" in lines
    assert "+ customer globex-eu-research" in lines
    assert "+ consumer globex-eu-gw → globex-eu from 2000-01-01T00:00:00Z" in lines
    assert (
        "+ consumer shared-gw → globex-eu from 2026-10-01T00:00:00Z until 2026-10-15T00:00:00Z"
        in lines
    )
    assert "+ subscription globex on enterprise v1 from 2026-10-01T00:00:00Z" in lines
    assert lines[-1].startswith("Applied ")
    globex_eu = Customer.objects.get(key="globex-eu")
    assert globex_eu.parent.key == "globex"
    assert globex_eu.bill_to_parent is True
    assert globex_eu.currency == "USD"
    assert Customer.objects.get(key="globex-apac").bill_to_parent is False
    initech = Customer.objects.get(key="initech")
    assert initech.rail == "ach"
    assert initech.rail_settings["routing_number"] == "021000021"
    enterprise = PlanVersion.objects.get(plan__key="enterprise")
    assert str(enterprise.minimum_commitment.amount.normalize()) == "5E+3"
    assert enterprise.rate_cards.get(key="llm_input_tokens").price == {
        "model": "package",
        "package_size": 1000000,
        "package_price": "5",
        "included": 2000000,
    }
    assert enterprise.entitlements[1]["config"] == {
        "models": ["large", "small"],
        "max_context": 200000,
    }
    pro = PlanVersion.objects.get(plan__key="pro")
    assert pro.rate_cards.get(key="platform_fee").price["timing"] == "in_advance"
    assert Subscription.objects.get(customer__key="initech").plan_version == pro


def test_a_second_apply_of_the_same_file_reports_no_changes(tmp_path):
    apply(tmp_path)
    before = counts()

    assert apply(tmp_path) == ["No changes."]
    assert counts() == before


def test_apply_export_apply_reports_no_changes(tmp_path):
    apply(tmp_path)

    exported = export_text(tmp_path)

    assert apply(tmp_path, exported) == ["No changes."]
    assert 'unit_price: "0.002"' in exported  # decimals travel as strings


def test_an_export_applied_to_an_empty_database_recreates_the_configuration(tmp_path, monkeypatch):
    apply(tmp_path, with_rules())
    exported = export_text(tmp_path)
    before = config_export()
    empty_the_database()
    monkeypatch.setenv("WEBHOOK_SECRET_OPS", OPS_SECRET)  # where the secret lives

    apply(tmp_path, exported)

    assert config_export() == before
    assert export_text(tmp_path) == exported
    assert WebhookEndpoint.objects.get(key="ops").secret == OPS_SECRET


def test_a_dry_run_prints_the_changes_and_changes_nothing(tmp_path):
    lines = apply(tmp_path, None, "--dry-run")

    assert "+ meter api_requests" in lines
    assert lines[-1].startswith("Dry run:") and lines[-1].endswith("nothing was changed.")
    assert set(counts().values()) == {0}
    assert not ConsumerMappingChange.objects.exists()


def test_a_dry_run_of_an_edit_shows_it_without_making_it(tmp_path):
    apply(tmp_path)
    text = edited(("email: ap@globex.example", "email: payables@globex.example"))

    assert apply(tmp_path, text, "--dry-run")[0] == "~ customer globex: email"
    assert Customer.objects.get(key="globex").email == "ap@globex.example"


def test_a_changed_field_is_reported_by_name(tmp_path):
    apply(tmp_path)
    text = edited(
        ("email: ap@globex.example", "email: payables@globex.example"),
        ("name: LLM tokens", "name: Language model tokens"),
    )

    lines = apply(tmp_path, text)

    assert lines[:2] == ["~ meter llm_tokens: name", "~ customer globex: email"]
    assert Customer.objects.get(key="globex").email == "payables@globex.example"


def test_editing_a_plan_with_subscribers_makes_a_new_version(tmp_path):
    apply(tmp_path)
    text = edited(('unit_price: "0.002", included: 1000', 'unit_price: "0.003", included: 1000'))

    lines = apply(tmp_path, text)

    assert lines[0] == (
        "~ plan pro: new version 2 (subscribers stay on version 1); changed: rate card api_calls"
    )
    assert Subscription.objects.get(customer__key="initech").plan_version.version == 1
    v2 = PlanVersion.objects.get(plan__key="pro", version=2)
    assert v2.rate_cards.get(key="api_calls").price["unit_price"] == "0.003"
    assert apply(tmp_path, text) == ["No changes."]
    exported = export_text(tmp_path)
    assert '{plan: pro, start: "2026-10-01T00:00:00Z", version: 1}' in exported
    assert apply(tmp_path, exported) == ["No changes."]


def test_editing_a_plan_without_subscribers_changes_its_version_in_place(tmp_path):
    text = edited(('    subscriptions:\n      - {plan: free, start: "2026-10-01T00:00:00Z"}\n', ""))
    apply(tmp_path, text)
    text = text.replace('{model: unit, unit_price: "0"}', '{model: unit, unit_price: "0.0001"}')

    lines = apply(tmp_path, text)

    assert lines[0] == (
        "~ plan free: version 1 changed in place (no subscribers); changed: rate card api_calls"
    )
    assert PlanVersion.objects.filter(plan__key="free").count() == 1


def test_things_not_in_the_file_are_kept_and_said_so(tmp_path):
    apply(tmp_path)
    meter_create(key="legacy_requests", event_type="legacy", aggregation="COUNT")
    CustomerFactory(key="umbrella")

    lines = apply(tmp_path)

    assert lines == [
        "kept (not in file): meters legacy_requests",
        "kept (not in file): customers umbrella",
        "No changes.",
    ]
    assert Meter.objects.filter(key="legacy_requests").exists()


@pytest.mark.parametrize(
    ("replacements", "expected"),
    [
        (
            [
                (
                    "    meter: api_requests\n    filters: {status",
                    "    meter: api_requestz\n    filters: {status",
                )
            ],
            "features[0].meter: no meter 'api_requestz' (did you mean 'api_requests'?)",
        ),
        (
            [
                (
                    '- {up_to: null, unit_price: "0.00001"}',
                    '- {up_to: 200000, unit_price: "0.00001"}',
                )
            ],
            "plans[1].rate_cards[2].price.tiers[1].up_to: the last tier must be open-ended",
        ),
        (
            [('unit_price: "0.002"', "unit_price: 0.002")],
            'plans[1].rate_cards[1].price.unit_price: write the number as a string ("0.002"), '
            "so it stays exact.",
        ),
        (
            [("    event_type: llm\n", "    evnt_type: llm\n")],
            "meters[1].evnt_type: unknown key (did you mean 'event_type'?)",
        ),
        (
            [("    country: SG\n", "    country: NO\n")],
            "customers[0].subsidiaries[1].country: expected text, got false",
        ),
        (
            [
                (
                    '- {key: shared-gw, valid_from: "2026-10-15T00:00:00Z"}',
                    '- {key: shared-gw, valid_from: "2026-10-14T00:00:00Z"}',
                )
            ],
            "customers[0].subsidiaries[0].subsidiaries[0].consumers[0].valid_from: overlaps "
            "customers[0].subsidiaries[0].consumers[1] ('shared-gw' → globex-eu)",
        ),
        (
            [("limit: 1000, period: monthly, ", "")],
            "plans[0].entitlements[0].limit: is required for a metered entitlement.",
        ),
        (
            [('mandate_date: "2026-09-15"', "mandate_date: 2026-09-15")],
            "customers[1].rail_settings.mandate_date: expected text, got a date (2026-09-15)",
        ),
        (
            [('{plan: pro, start: "2026-10-15T00:00:00Z"}', '{plan: pro, start: "2026-10-15"}')],
            'customers[2].subscriptions[0].start: give a full instant with a time zone, e.g. "2026-10-15T00:00:00Z".',
        ),
        (
            [("      - {plan: enterprise, start", "      - {plan: enterprize, start")],
            "customers[0].subscriptions[0].plan: no plan 'enterprize' (did you mean 'enterprise'?)",
        ),
        (
            [
                (
                    '    rail: netsuite\n    rail_settings: {netsuite_entity_id: "1234"}\n',
                    '    rail: netsuite\n    rail_settings: {netsuite_entity_id: "1234"}\n'
                    "    bill_to_parent: true\n",
                )
            ],
            "customers[0].bill_to_parent: a top-level customer has no parent to be billed to",
        ),  # fmt: skip
    ],
)
def test_an_error_names_its_place_in_the_file_and_changes_nothing(tmp_path, replacements, expected):
    errors = apply_failing(tmp_path, edited(*replacements))

    assert any(line.startswith(expected) for line in errors), errors
    assert set(counts().values()) == {0}


def test_every_error_in_the_file_is_reported_at_once(tmp_path):
    text = edited(
        (
            "    meter: api_requests\n    filters: {status",
            "    meter: api_requestz\n    filters: {status",
        ),
        ('package_price: "1.00"', "package_price: 1.00"),
        ("    timezone: America/Chicago\n", "    timezone: America/Chicagoo\n"),
    )

    errors = apply_failing(tmp_path, text)

    assert errors[0] == "features[0].meter: no meter 'api_requestz' (did you mean 'api_requests'?)"
    assert errors[1].startswith("plans[1].rate_cards[3].price.package_price: write the number")
    assert errors[2].startswith(
        "customers[1].timezone: 'America/Chicagoo' is not an IANA time zone"
    )
    assert set(counts().values()) == {0}


def test_a_consumer_overlapping_a_stored_mapping_names_both(tmp_path):
    other = ConsumerMappingFactory(consumer_key="shared-gw", customer=CustomerFactory(key="acme"))
    before = counts()

    errors = apply_failing(tmp_path, EXAMPLE.read_text())

    assert errors[0].startswith(
        "customers[0].subsidiaries[0].consumers[1].valid_from: "
        f"overlaps mapping #{other.pk} of 'shared-gw' to acme from 2026-01-01T00:00:00+00:00"
    )
    assert counts() == before


def test_changing_a_locked_meter_field_names_its_place(tmp_path, ingest):
    apply(tmp_path)
    ingest(cloud_event("t-1", type="llm", subject="globex-hq-gw", tokens=10, direction="input"))
    text = edited(("    aggregation: SUM\n", "    aggregation: MAX\n"))
    before = counts()

    errors = apply_failing(tmp_path, text)

    assert errors == [
        "meters[1].aggregation: aggregation cannot change once the meter has data; "
        "create a new meter instead."
    ]
    assert Meter.objects.get(key="llm_tokens").aggregation == "SUM"
    assert counts() == before


def test_a_file_can_end_a_subscription_but_not_reopen_it(tmp_path):
    apply(tmp_path)
    ended = edited(
        (
            '{plan: pro, start: "2026-10-15T00:00:00Z"}',
            '{plan: pro, start: "2026-10-15T00:00:00Z", end: "2027-01-15T00:00:00Z"}',
        )
    )

    lines = apply(tmp_path, ended)

    assert lines[0] == (
        "~ subscription hooli-dev on pro v1 from 2026-10-15T00:00:00Z: end 2027-01-15T00:00:00Z"
    )
    errors = apply_failing(tmp_path, EXAMPLE.read_text())
    assert errors == [
        "customers[2].subscriptions[0].end: the subscription ends 2027-01-15T00:00:00Z; a file "
        "can end a subscription sooner, but not extend or reopen it."
    ]


def test_a_consumer_key_handed_to_another_customer_in_one_file(tmp_path):
    apply(tmp_path)
    text = edited(
        (
            "      - {key: hooli-app-1}\n",
            '      - {key: hooli-app-1, valid_to: "2026-12-01T00:00:00Z"}\n',
        ),
        (
            "      - {key: pp-laptop}\n",
            '      - {key: pp-laptop}\n      - {key: hooli-app-1, valid_from: "2026-12-01T00:00:00Z"}\n',
        ),
    )

    lines = apply(tmp_path, text)

    assert lines[:2] == [
        "~ consumer hooli-app-1 → hooli-dev from 2000-01-01T00:00:00Z until 2026-12-01T00:00:00Z: valid_to",
        "+ consumer hooli-app-1 → pied-piper from 2026-12-01T00:00:00Z",
    ]


def test_yaml_mistakes_are_refused_with_their_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("meters:\n  - key: a\n    key: b\n")
    with pytest.raises(CommandError, match="line 3, column 5: 'key' is given twice"):
        call_command("billing_apply", str(path), stdout=StringIO(), stderr=StringIO())
    path.write_text("meters: [\n")
    with pytest.raises(CommandError, match="line 2"):
        call_command("billing_apply", str(path), stdout=StringIO(), stderr=StringIO())
    errors = apply_failing(tmp_path, "meter:\n  - key: a\n")
    assert errors[0].startswith("meter: unknown section (did you mean 'meters'?)")


def test_settings_a_rail_normalises_are_compared_as_the_rail_stores_them(tmp_path, settings):
    settings.CUSTOMER_RAIL_SETTINGS_HOOK = "tests.backoffice.test_configuration.last4_hook"
    apply(tmp_path)
    assert Customer.objects.get(key="initech").rail_settings["account_last4"] == "6789"

    assert apply(tmp_path) == ["No changes."]


# -- notification rules and webhook endpoints ------------------------------------------


def test_notification_rules_are_created_with_their_feature_customer_and_endpoints(tmp_path):
    lines = apply(tmp_path, with_rules())

    assert "+ notification rule api-calls-usage" in lines
    assert "+ notification rule globex-spend" in lines
    usage = NotificationRule.objects.get(key="api-calls-usage")
    assert (usage.kind, usage.feature.key, usage.customer) == (
        "entitlement_threshold",
        "api_calls",
        None,
    )
    assert usage.thresholds == [{"percent": 80}, {"percent": 100}, {"usage": 1000000}]
    assert [e.key for e in usage.endpoints.all()] == ["ops"]
    spend = NotificationRule.objects.get(key="globex-spend")
    assert (spend.customer.key, spend.feature, spend.thresholds) == (
        "globex",
        None,
        [{"amount": "10000.00"}],
    )
    assert apply(tmp_path, with_rules()) == ["No changes."]


def test_a_changed_rule_is_reported_by_field_and_a_rule_not_in_the_file_is_kept(tmp_path):
    apply(tmp_path, with_rules())
    text = with_rules().replace("{percent: 100}, ", "").replace('    endpoints: [ops]\n"""', "")
    text = text.replace(
        "    kind: spend_threshold\n    customer: globex\n",
        "    kind: spend_threshold\n    customer: globex\n    enabled: false\n",
    )

    lines = apply(tmp_path, text)

    assert lines[:2] == [
        "~ notification rule api-calls-usage: thresholds",
        "~ notification rule globex-spend: enabled",
    ]
    assert NotificationRule.objects.get(key="globex-spend").enabled is False
    assert apply(tmp_path, EXAMPLE.read_text()) == [
        "kept (not in file): notification rules api-calls-usage, globex-spend",
        "No changes.",
    ]


def test_apply_export_apply_with_rules_reports_no_changes_and_writes_no_secret(tmp_path):
    apply(tmp_path, with_rules())

    exported = export_text(tmp_path)

    assert OPS_SECRET not in exported
    assert "secret: {env: WEBHOOK_SECRET_OPS}" in exported
    assert "notification_rules:\n  - key: api-calls-usage\n" in exported
    assert apply(tmp_path, exported) == ["No changes."]
    assert WebhookEndpoint.objects.get(key="ops").secret == OPS_SECRET  # kept as stored


def test_a_secret_from_the_environment_replaces_the_stored_one(tmp_path, monkeypatch):
    apply(tmp_path)
    text = EXAMPLE.read_text().replace(f"secret: {OPS_SECRET}", "secret: {env: OPS_HOOK_SECRET}")
    monkeypatch.setenv("OPS_HOOK_SECRET", "whsec_rotated")

    lines = apply(tmp_path, text)

    assert lines[0] == "~ webhook endpoint ops: secret"
    assert "whsec_rotated" not in "\n".join(lines)
    assert WebhookEndpoint.objects.get(key="ops").secret == "whsec_rotated"


def test_a_new_endpoint_whose_secret_variable_is_not_set_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("WEBHOOK_SECRET_OPS", raising=False)
    text = EXAMPLE.read_text().replace(f"secret: {OPS_SECRET}", "secret: {env: WEBHOOK_SECRET_OPS}")

    errors = apply_failing(tmp_path, text)

    assert errors == [
        "webhook_endpoints[0].secret: the environment variable WEBHOOK_SECRET_OPS is not "
        "set; a new endpoint needs its signing secret."
    ]
    assert set(counts().values()) == {0}


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (
            RULES.replace("feature: api_calls", "feature: api_callz"),
            "notification_rules[0].feature: no feature 'api_callz' (did you mean 'api_calls'?)",
        ),
        (
            RULES.replace("customer: globex", "customer: globx"),
            "notification_rules[1].customer: no customer 'globx' (did you mean 'globex'?)",
        ),
        (
            RULES.replace("endpoints: [ops]\n  - key: globex", "endpoints: [opz]\n  - key: globex"),
            "notification_rules[0].endpoints[0]: no webhook endpoint 'opz' (did you mean 'ops'?)",
        ),
        (
            RULES.replace('{amount: "10000.00"}', "{amount: 10000.00}"),
            "notification_rules[1].thresholds[0].amount: a positive number (money as a string)",
        ),
        (
            RULES.replace("{usage: 1000000}", "{amount: 5}"),
            "notification_rules[0].thresholds[2]: one of percent, usage",
        ),
        (
            RULES.replace("    customer: globex\n", "    feature: api_calls\n"),
            "notification_rules[1].feature: a spend threshold watches the whole invoice",
        ),
        (
            RULES.replace("customer: globex", "customer: globex-eu"),
            "notification_rules[1].customer: globex-eu is billed on globex: a rule watches a "
            "billing account; name globex.",
        ),
        (
            RULES.replace("kind: spend_threshold", "kind: spend"),
            "notification_rules[1].kind: must be one of entitlement_threshold, spend_threshold",
        ),
        (
            RULES.replace(
                "thresholds: [{percent: 80}, {percent: 100}, {usage: 1000000}]", "thresholds: [80]"
            ),
            "notification_rules[0].thresholds[0]: expected one name and its value",
        ),
        (
            RULES
            + '  - key: api-calls-usage\n    kind: spend_threshold\n    thresholds: [{amount: "1"}]\n',
            "notification_rules[2].key: 'api-calls-usage' appears twice (also notification_rules[0]).",
        ),
    ],
)
def test_a_rule_error_names_its_place_in_the_file_and_changes_nothing(tmp_path, rules, expected):
    errors = apply_failing(tmp_path, with_rules(rules=rules))

    assert any(line.startswith(expected) for line in errors), errors
    assert set(counts().values()) == {0}


def test_a_dry_run_shows_new_rules_and_makes_none(tmp_path):
    apply(tmp_path)

    lines = apply(tmp_path, with_rules(), "--dry-run")

    assert lines[:2] == ["+ notification rule api-calls-usage", "+ notification rule globex-spend"]
    assert not NotificationRule.objects.exists()


def test_a_meter_path_postgresql_cannot_evaluate_is_named_by_its_place(tmp_path):
    text = edited(
        ("    value: $.tokens\n", '    value: "$.tokens b"\n'),
        (
            "group_by: {route: $.route, status: $.status}",
            'group_by: {route: "$.r[", status: $.status}',
        ),
    )

    errors = apply_failing(tmp_path, text)

    assert errors[0].startswith("meters[0].group_by: route: '$.r[' is not a JSONPath"), errors
    assert errors[1].startswith("meters[1].value: '$.tokens b' is not a JSONPath"), errors
    assert set(counts().values()) == {0}
