"""The shape of a configuration file: which keys each object takes and of what type.

``document_load`` parses YAML text (safe loader, duplicate keys refused);
``document_validate`` checks a parsed document against the shapes below and returns a
normalised copy (instants as aware datetimes) with every problem named by its place in
the file (``plans[1].rate_cards[0].feature: expected text, got a number``). How each
kind of value is checked lives in ``backoffice.configuration.values``.
Deep checks that need the catalog (prices) or the database (references, overlaps) live
in ``backoffice.configuration.apply``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import yaml
from django.conf import settings

from backoffice.configuration.values import (
    ACH_SETTINGS,
    INVALID,
    KIND_CHECKS,
    F,
    suggestion,
    value_got,
)
from customers.models import CUSTOMER_ADDRESS_FIELDS
from metering.models import Aggregation

# A consumer listed without valid_from has belonged to its customer since this instant:
# before any usage, and fixed, so the same file always means the same mappings.
CONSUMER_VALID_FROM_DEFAULT = datetime.fromisoformat("2000-01-01T00:00:00+00:00")

SECTIONS = (
    "meters",
    "features",
    "plans",
    "webhook_endpoints",
    "notification_rules",
    "customers",
)
ENTITLEMENT_TYPES = ("metered", "boolean", "static")
ENTITLEMENT_PERIODS = ("daily", "weekly", "monthly", "yearly")
RULE_KINDS = ("entitlement_threshold", "spend_threshold")


class DuplicateKeyError(yaml.YAMLError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """The safe loader, refusing a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | bool):
                continue
            if key in seen:
                mark = key_node.start_mark
                raise DuplicateKeyError(
                    f"line {mark.line + 1}, column {mark.column + 1}: "
                    f"'{key}' is given twice in the same object."
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def document_load(text: str) -> Any:
    """Parse YAML text; raises ``ValueError`` with the line and column of a syntax error."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except DuplicateKeyError as exc:
        raise ValueError(str(exc)) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValueError(f"{where}not valid YAML: {problem}.") from exc


def _rails() -> tuple[str, ...]:
    return tuple(settings.BILLING_RAILS)


_CUSTOMER = {
    "key": F("key", True),
    "name": F("text", True),
    "email": F("text"),
    "currency": F("text"),
    "timezone": F("text"),
    "rail": F("text", choices=_rails),
    "rail_settings": F("rail_settings"),
    **{name: F("text") for name in CUSTOMER_ADDRESS_FIELDS},
    "consumers": F("list", shape="consumer"),
    "subscriptions": F("list", shape="subscription"),
    "subsidiaries": F("list", shape="subsidiary"),
}

SHAPES: dict[str, dict[str, F]] = {
    "meter": {
        "key": F("key", True),
        "name": F("text"),
        "description": F("text"),
        "event_type": F("text", True),
        "aggregation": F("text", True, choices=tuple(Aggregation.values)),
        "value": F("text"),
        "group_by": F("text_map"),
    },
    "feature": {
        "key": F("key", True),
        "name": F("text"),
        "meter": F("key", True),
        "filters": F("filters"),
    },
    "plan": {
        "key": F("key", True),
        "name": F("text", True),
        "description": F("text"),
        "currency": F("text", True),
        "cadence": F("text", choices=("monthly", "yearly")),
        "minimum_commitment": F("decimal"),
        "rate_cards": F("list", shape="rate_card"),
        "entitlements": F("list", shape="entitlement"),
    },
    "rate_card": {
        "key": F("key"),
        "name": F("text"),
        "feature": F("key"),
        "price": F("object", True),
    },
    "entitlement": {
        "feature": F("key", True),
        "type": F("text", True, choices=ENTITLEMENT_TYPES),
        "limit": F("number"),
        "period": F("text", choices=ENTITLEMENT_PERIODS),
        "hard": F("bool"),
        "thresholds": F("number_list"),
        "config": F("json"),
    },
    "webhook_endpoint": {
        "key": F("key", True),
        "url": F("text", True),
        "secret": F("secret", True),
        "events": F("text_list"),
        "enabled": F("bool"),
    },
    "notification_rule": {
        "key": F("key", True),
        "kind": F("text", True, choices=RULE_KINDS),
        "feature": F("key"),
        "customer": F("key"),
        "thresholds": F("threshold_list", True),
        "endpoints": F("key_list"),
        "enabled": F("bool"),
    },
    "customer": _CUSTOMER,
    "subsidiary": {**_CUSTOMER, "bill_to_parent": F("bool")},
    "consumer": {
        "key": F("text", True),
        "valid_from": F("instant"),
        "valid_to": F("instant"),
    },
    "subscription": {
        "plan": F("key", True),
        "start": F("instant", True),
        "end": F("instant"),
        "version": F("int"),
    },
}
SECTION_SHAPES = {
    "meters": "meter",
    "features": "feature",
    "plans": "plan",
    "webhook_endpoints": "webhook_endpoint",
    "notification_rules": "notification_rule",
    "customers": "customer",
}


# Keys that belong to another shape: refused saying why, rather than as unknown.
MISPLACED = {
    ("customer", "bill_to_parent"): "a top-level customer has no parent to be billed to; "
    "bill_to_parent is for subsidiaries (on by default).",
}


class _Checker:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def object(self, value: Any, path: str, shape_name: str) -> dict | None:
        if not isinstance(value, dict):
            self.error(path, f"expected an object with keys, got {value_got(value)}.")
            return None
        shape = SHAPES[shape_name]
        out: dict[str, Any] = {}
        for name in value:
            if (shape_name, name) in MISPLACED:
                self.error(f"{path}.{name}", MISPLACED[(shape_name, name)])
            elif name not in shape:
                allowed = ", ".join(shape)
                self.error(
                    f"{path}.{name}",
                    f"unknown key{suggestion(name, shape)}; a {shape_name.replace('_', ' ')} "
                    f"takes: {allowed}.",
                )
        for name, field in shape.items():
            if name not in value or (value[name] is None and field.kind != "json"):
                if field.required:
                    self.error(f"{path}.{name}", "is required.")
                continue
            checked = self.field(value[name], f"{path}.{name}", field)
            if checked is not INVALID:
                out[name] = checked
        rule = _RULES.get(shape_name)
        if rule is not None:
            rule(self, out, path, value)
        return out

    def field(self, value: Any, path: str, field: F) -> Any:
        """``value`` checked as ``field``'s kind, as it is kept; ``INVALID`` (and the
        problem recorded at its place) when it is wrong."""
        check = KIND_CHECKS.get(field.kind)
        if check is None:
            return value
        value, problem = check(self, value, path, field)
        if problem is not None:
            self.error(path, problem)
            return INVALID
        return value


def _entitlement_rule(checker: _Checker, item: dict, path: str, raw: dict) -> None:
    kind = item.get("type")
    if kind == "metered":
        for name in ("limit", "period"):
            if name not in item:
                checker.error(f"{path}.{name}", "is required for a metered entitlement.")
    elif kind in ("boolean", "static"):
        for name in ("limit", "period", "hard", "thresholds"):
            if name in item:
                checker.error(f"{path}.{name}", f"applies to metered entitlements, not {kind}.")
    if kind != "static" and "config" in item:
        checker.error(f"{path}.config", "applies to static entitlements only.")
    if kind == "static" and "config" not in item:
        checker.error(f"{path}.config", "is required for a static entitlement.")


def _customer_rule(checker: _Checker, item: dict, path: str, raw: dict) -> None:
    settings_ = item.get("rail_settings") or {}
    if item.get("rail") != "ach" or ("rail_settings" in raw and "rail_settings" not in item):
        return  # not ACH, or the settings are malformed (reported already)
    for name in ACH_SETTINGS:
        # an exported file carries the account number encrypted, as stored
        given = settings_.get(name) or (
            settings_.get("account_number_encrypted") if name == "account_number" else None
        )
        if not given:
            checker.error(f"{path}.rail_settings.{name}", "is required for the ach rail.")
    routing = settings_.get("routing_number")
    if routing and not re.fullmatch(r"\d{9}", routing):
        checker.error(f"{path}.rail_settings.routing_number", "must be 9 digits.")
    account_type = settings_.get("account_type")
    if account_type and account_type not in ("checking", "savings"):
        checker.error(
            f"{path}.rail_settings.account_type",
            f"must be checking or savings, not {account_type!r}.",
        )
    mandate = settings_.get("mandate_date")
    if mandate:
        try:
            date.fromisoformat(mandate)
        except ValueError:
            checker.error(
                f"{path}.rail_settings.mandate_date", f"{mandate!r} is not a date (YYYY-MM-DD)."
            )


def _notification_rule_rule(checker: _Checker, item: dict, path: str, raw: dict) -> None:
    if item.get("kind") == "spend_threshold" and "feature" in item:
        checker.error(
            f"{path}.feature", "a spend threshold watches the whole invoice; leave the feature out."
        )


def _interval_rule(start: str, end: str) -> Callable[[_Checker, dict, str, dict], None]:
    def rule(checker: _Checker, item: dict, path: str, raw: dict) -> None:
        if item.get(start) and item.get(end) and item[end] <= item[start]:
            checker.error(f"{path}.{end}", f"must be after {start}.")

    return rule


# Checks across the keys of one object: (checker, checked item, path, item as written)
_RULES: dict[str, Callable[[_Checker, dict, str, dict], None]] = {
    "entitlement": _entitlement_rule,
    "notification_rule": _notification_rule_rule,
    "customer": _customer_rule,
    "subsidiary": _customer_rule,
    "consumer": _interval_rule("valid_from", "valid_to"),
    "subscription": _interval_rule("start", "end"),
}


def document_validate(document: Any) -> tuple[dict[str, list[dict]], list[str]]:
    """Check ``document`` (parsed YAML) against the shapes; return it normalised, and
    the problems found, each prefixed by its place in the file. An empty file is an
    empty document."""
    checker = _Checker()
    if document is None:
        document = {}
    if not isinstance(document, dict):
        return {}, [f"the file must be an object with sections ({', '.join(SECTIONS)})."]
    out: dict[str, list[dict]] = {section: [] for section in SECTIONS}
    for name in document:
        if name not in SECTIONS:
            checker.error(
                str(name),
                f"unknown section{suggestion(name, SECTIONS)}; sections: {', '.join(SECTIONS)}.",
            )
    for section in SECTIONS:
        value = document.get(section)
        if value is None:
            continue
        checked = checker.field(value, section, F("list", shape=SECTION_SHAPES[section]))
        if checked is not INVALID:
            out[section] = checked
    return out, checker.errors
