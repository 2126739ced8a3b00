"""Apply a configuration document: make the database match the file.

Creates and updates; never deletes (what is in the database but not in the file is left
alone and reported as kept). Everything happens in one transaction: a file with any
error changes nothing, and a dry run makes every change, reports it and rolls back, so
what it prints is exactly what an apply would do.
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from backoffice.configuration.apply_customers import CustomerApplier
from backoffice.configuration.apply_rules import NotificationRuleApplier
from backoffice.configuration.report import (
    ApplyReport,
    ApplyRun,
    ConfigError,
    error_messages,
    kept_line,
    no_such,
)
from backoffice.configuration.schema import document_validate
from billing.catalog.services import (
    PlanVersionSpec,
    RateCardSpec,
    plan_latest_version,
    plan_save,
    rate_cards_validate,
)
from billing.models import Plan, PlanVersion, WebhookEndpoint
from core.money import UnknownCurrency, currency_validate
from metering.models import Feature, Meter
from metering.services import feature_create, feature_update, meter_create, meter_update

# model field → key in the file, where they differ (None: the item itself)
METER_NAMES: dict[str, str | None] = {"value_property": "value"}
PLAN_NAMES: dict[str, str | None] = {"plan": None}


def config_apply(*, document: Any, dry_run: bool) -> ApplyReport:
    """Make the database match ``document`` (a parsed configuration file).

    Creates and updates meters, features, plans (a plan with subscribers gets a new
    version), webhook endpoints, notification rules, customers, consumer mappings and
    subscriptions; deletes nothing. One transaction: raises ``ConfigError`` listing every problem found, each
    named by its place in the file, and then nothing is changed. With ``dry_run`` the
    changes are made, reported and rolled back.
    """
    doc, errors = document_validate(document)
    if errors:
        raise ConfigError(errors)
    run = ApplyRun()
    with transaction.atomic():
        catalog = _CatalogApplier(run, doc)
        customers = CustomerApplier(run, doc["customers"])
        rules = NotificationRuleApplier(run, doc["notification_rules"])
        catalog.check()
        customers.check(plan_keys=catalog.known("plans"))
        rules.check(
            features=catalog.known("features"),
            endpoints=catalog.known("webhook_endpoints"),
            customers=customers.known(),
        )
        catalog.apply()
        customers.apply(plans=catalog.plans)
        rules.apply()  # last: a rule names features, endpoints and customers
        kept = [*catalog.kept(), *rules.kept(), *customers.kept()]
        if run.errors or dry_run:
            transaction.set_rollback(True)
    if run.errors:
        raise ConfigError(run.errors)
    return ApplyReport(changes=tuple(run.changes), kept=tuple(kept), dry_run=dry_run)


class _CatalogApplier:
    """Meters, features, plans and webhook endpoints."""

    MODELS: dict[str, Any] = {
        "meters": Meter,
        "features": Feature,
        "plans": Plan,
        "webhook_endpoints": WebhookEndpoint,
    }

    def __init__(self, run: ApplyRun, doc: dict[str, list[dict]]) -> None:
        self.run = run
        self.doc = doc
        self.meters: dict[str, Meter] = {}
        self.features: dict[str, Feature] = {}
        self.plans: dict[str, Plan] = {}

    def known(self, section: str) -> set[str]:
        """Keys of ``section`` in the file or the database."""
        in_db = self.MODELS[section].objects.values_list("key", flat=True)
        return {item["key"] for item in self.doc[section]} | set(in_db)

    # -- checks before any write --------------------------------------------------

    def check(self) -> None:
        for section in self.MODELS:
            first: dict[str, int] = {}
            for i, item in enumerate(self.doc[section]):
                if item["key"] in first:
                    self.run.error(
                        f"{section}[{i}].key",
                        f"'{item['key']}' appears twice (also {section}[{first[item['key']]}]).",
                    )
                first.setdefault(item["key"], i)
        meters = self.known("meters")
        for i, feature in enumerate(self.doc["features"]):
            if feature["meter"] not in meters:
                self.run.error(f"features[{i}].meter", no_such("meter", feature["meter"], meters))
        features = self.known("features")
        for i, plan in enumerate(self.doc["plans"]):
            self._plan_check(f"plans[{i}]", plan, features)

    def _plan_check(self, path: str, plan: dict, features: set[str]) -> None:
        try:
            currency_validate(plan["currency"])
        except UnknownCurrency as exc:
            self.run.error(f"{path}.currency", str(exc))
        if Decimal(str(plan.get("minimum_commitment", 0))) < 0:
            self.run.error(f"{path}.minimum_commitment", "must not be negative.")
        stand_ins: dict[str, Feature] = {}
        cards = []
        for j, card in enumerate(plan.get("rate_cards", [])):
            key = card.get("feature")
            if not card.get("key") and not key:
                self.run.error(
                    f"{path}.rate_cards[{j}].key",
                    "is required for a rate card without a feature (a flat fee).",
                )
            if key is not None and key not in features:
                self.run.error(f"{path}.rate_cards[{j}].feature", no_such("feature", key, features))
            if key is not None and key not in stand_ins:
                # rate_cards_validate only reads key and pk: one stand-in per feature key
                stand_ins[key] = Feature(pk=-1 - len(stand_ins), key=key)
            cards.append(self._card_spec(card, stand_ins.get(key) if key else None))
        try:
            rate_cards_validate(currency=plan["currency"], rate_cards=tuple(cards))
        except ValidationError as exc:
            self.run.errors += error_messages(path, exc, {})
        for k, entitlement in enumerate(plan.get("entitlements", [])):
            if entitlement["feature"] not in features:
                self.run.error(
                    f"{path}.entitlements[{k}].feature",
                    no_such("feature", entitlement["feature"], features),
                )

    @staticmethod
    def _card_spec(card: dict, feature: Feature | None) -> RateCardSpec:
        return RateCardSpec(
            key=card.get("key") or card.get("feature") or "",
            name=card.get("name", ""),
            feature=feature,
            price=card["price"],
        )

    # -- writes -------------------------------------------------------------------

    def apply(self) -> None:
        for i, item in enumerate(self.doc["meters"]):
            self._meter(f"meters[{i}]", item)
        for i, item in enumerate(self.doc["features"]):
            self._feature(f"features[{i}]", item)
        for i, item in enumerate(self.doc["plans"]):
            self._plan(f"plans[{i}]", item)
        for i, item in enumerate(self.doc["webhook_endpoints"]):
            self._webhook(f"webhook_endpoints[{i}]", item)

    def _meter(self, path: str, item: dict) -> None:
        key = item["key"]
        fields = {
            "name": item.get("name", ""),
            "description": item.get("description", ""),
            "event_type": item["event_type"],
            "aggregation": item["aggregation"],
            "value_property": item.get("value", ""),
            "group_by": item.get("group_by") or {},
        }
        existing = Meter.objects.filter(key=key).first()
        if existing is None:
            meter = self.run.attempt(path, lambda: meter_create(key=key, **fields), METER_NAMES)
            if meter is not None:
                self.run.change("+", f"meter {key}")
        else:
            changed = {n: v for n, v in fields.items() if getattr(existing, n) != v}
            meter = existing
            if changed:
                meter = self.run.attempt(
                    path, lambda: meter_update(meter=existing, **changed), METER_NAMES
                )
                if meter is not None:
                    names = ", ".join(METER_NAMES.get(n) or n for n in changed)
                    self.run.change("~", f"meter {key}: {names}")
        if meter is not None:
            self.meters[key] = meter

    def _meter_ref(self, key: str) -> Meter | None:
        if key not in self.meters and not any(m["key"] == key for m in self.doc["meters"]):
            meter = Meter.objects.filter(key=key).first()
            if meter is not None:
                self.meters[key] = meter
        return self.meters.get(key)  # None: missing or failed, reported already

    def _feature_ref(self, key: str) -> Feature | None:
        if key not in self.features and not any(f["key"] == key for f in self.doc["features"]):
            feature = Feature.objects.filter(key=key).first()
            if feature is not None:
                self.features[key] = feature
        return self.features.get(key)

    def _feature(self, path: str, item: dict) -> None:
        key = item["key"]
        meter = self._meter_ref(item["meter"])
        if meter is None:
            return
        fields = {
            "name": item.get("name", ""),
            "meter": meter,
            "filters": {k: [str(v) for v in vs] for k, vs in (item.get("filters") or {}).items()},
        }
        existing = Feature.objects.filter(key=key).first()
        if existing is None:
            feature = self.run.attempt(path, lambda: feature_create(key=key, **fields))
            if feature is not None:
                self.run.change("+", f"feature {key}")
        else:
            changed = {
                n: v
                for n, v in fields.items()
                if (existing.meter_id != meter.pk if n == "meter" else getattr(existing, n) != v)
            }
            feature = existing
            if changed:
                feature = self.run.attempt(
                    path, lambda: feature_update(feature=existing, **changed)
                )
                if feature is not None:
                    self.run.change("~", f"feature {key}: {', '.join(changed)}")
        if feature is not None:
            self.features[key] = feature

    def _plan(self, path: str, item: dict) -> None:
        key = item["key"]
        cards = []
        for card in item.get("rate_cards", []):
            feature = None
            if card.get("feature"):
                feature = self._feature_ref(card["feature"])
                if feature is None:
                    return
            cards.append(self._card_spec(card, feature))
        currency = item["currency"].upper()
        spec = PlanVersionSpec(
            currency=currency,
            cadence=item.get("cadence", "monthly"),
            minimum_commitment=Decimal(str(item.get("minimum_commitment", 0))),
            rate_cards=tuple(cards),
            entitlements=tuple(item.get("entitlements", [])),
        )
        name, description = item["name"], item.get("description", "")
        existing = Plan.objects.filter(key=key).first()
        latest = plan_latest_version(plan=existing) if existing else None
        before = _version_snapshot(latest) if latest else None
        renamed = [
            n
            for n, v in (("name", name), ("description", description))
            if existing is not None and getattr(existing, n) != v
        ]
        saved = self.run.attempt(
            path,
            lambda: plan_save(key=key, name=name, description=description, spec=spec),
            PLAN_NAMES,
        )
        if saved is None:
            return
        plan, version, outcome = saved
        self.plans[key] = plan
        if outcome == "created":
            self.run.change("+", f"plan {key} (version {version.version})")
            return
        if outcome == "unchanged":
            if renamed:
                self.run.change("~", f"plan {key}: {', '.join(renamed)}")
            return
        if outcome == "new_version" and latest is not None:
            text = (
                f"plan {key}: new version {version.version} "
                f"(subscribers stay on version {latest.version})"
            )
        elif outcome == "new_version":
            text = f"plan {key}: new version {version.version}"
        else:
            text = f"plan {key}: version {version.version} changed in place (no subscribers)"
        details = renamed + (_version_diff(before, version) if before else [])
        self.run.change("~", text + (f"; changed: {', '.join(details)}" if details else ""))

    def _webhook(self, path: str, item: dict) -> None:
        key = item["key"]
        endpoint = WebhookEndpoint.objects.filter(key=key).first()
        fields = {
            "url": item["url"],
            "secret": item["secret"],
            "events": item.get("events", []),
            "enabled": item.get("enabled", True),
        }
        if isinstance(item["secret"], dict):  # {env: NAME}, as an export writes it
            name = item["secret"]["env"]
            secret = os.environ.get(name, "")
            if secret:
                fields["secret"] = secret
            elif endpoint is not None:
                del fields["secret"]  # the stored secret stays: an export applies as is
            else:
                self.run.error(
                    f"{path}.secret",
                    f"the environment variable {name} is not set; a new endpoint needs "
                    "its signing secret.",
                )
                return
        changed = (
            list(fields)
            if endpoint is None
            else [n for n, v in fields.items() if getattr(endpoint, n) != v]
        )
        if not changed:
            return

        def save() -> WebhookEndpoint:
            target = endpoint or WebhookEndpoint(key=key)
            for name, value in fields.items():
                setattr(target, name, value)
            target.full_clean()
            target.save()
            return target

        if self.run.attempt(path, save) is not None:
            if endpoint is None:
                self.run.change("+", f"webhook endpoint {key}")
            else:
                self.run.change("~", f"webhook endpoint {key}: {', '.join(changed)}")

    def kept(self) -> list[str]:
        lines = []
        for section, model in self.MODELS.items():
            in_file = [item["key"] for item in self.doc[section]]
            keys = list(
                model.objects.exclude(key__in=in_file).order_by("key").values_list("key", flat=True)
            )
            lines += kept_line(section.replace("_", " "), keys)
        return lines


def _version_snapshot(version: PlanVersion) -> dict[str, Any]:
    return {
        "currency": version.currency,
        "cadence": version.cadence,
        "minimum_commitment": version.minimum_commitment.amount,
        "entitlements": list(version.entitlements),
        "rate_cards": [
            (c.key, c.name, c.feature_id, c.price) for c in version.rate_cards.order_by("position")
        ],
    }


def _version_diff(before: dict[str, Any], version: PlanVersion) -> list[str]:
    """What differs between a version's earlier snapshot and ``version`` now."""
    after = _version_snapshot(version)
    out = [
        name
        for name in ("currency", "cadence", "minimum_commitment", "entitlements")
        if before[name] != after[name]
    ]
    old = {card[0]: card for card in before["rate_cards"]}
    new = {card[0]: card for card in after["rate_cards"]}
    out += [f"rate card {k} added" for k in new if k not in old]
    out += [f"rate card {k} removed" for k in old if k not in new]
    out += [f"rate card {k}" for k in new if k in old and new[k] != old[k]]
    if not out and [c[0] for c in before["rate_cards"]] != [c[0] for c in after["rate_cards"]]:
        out.append("rate card order")
    return out
