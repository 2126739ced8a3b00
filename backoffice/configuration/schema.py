"""The shape of a configuration file: which keys each object takes and of what type.

``document_load`` parses YAML text (safe loader, duplicate keys refused);
``document_validate`` checks a parsed document against the shapes below and returns a
normalised copy (instants as aware datetimes) with every problem named by its place in
the file (``plans[1].rate_cards[0].feature: expected text, got a number``).
Deep checks that need the catalog (prices) or the database (references, overlaps) live
in ``backoffice.configuration.apply``.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml
from django.conf import settings

from customers.models import CUSTOMER_ADDRESS_FIELDS, KEY_VALIDATOR
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
ACH_SETTINGS = ("routing_number", "account_number", "account_type", "mandate_date")
RULE_KINDS = ("entitlement_threshold", "spend_threshold")
# A secret given as {env: NAME}: read from the environment when the file is applied.
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Settings that are identifiers, not numbers: unquoted, YAML would drop leading zeros.
TEXT_SETTINGS = (*ACH_SETTINGS, "netsuite_entity_id", "stripe_customer_id")


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


@dataclass(frozen=True)
class F:
    """One key of an object: its kind, whether it is required, and its allowed values."""

    kind: str
    required: bool = False
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] = ()
    shape: str = ""  # for kind "list": the shape of each item


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


def _got(value: Any) -> str:
    """How a wrongly typed value reads, with the YAML reason when it was not meant."""
    if isinstance(value, bool):
        return (
            f"{str(value).lower()} (YAML reads yes/no/on/off/true/false as booleans; "
            "quote the value if it is text)"
        )
    if isinstance(value, int | float):
        return f"the number {value} (quote it to keep it exactly as written)"
    if isinstance(value, datetime | date):
        return f"a date ({value.isoformat()}); quote it"
    if value is None:
        return "nothing"
    return {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


def _suggest(name: str, options) -> str:
    match = difflib.get_close_matches(str(name), list(options), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _decimal_problem(value: Any) -> str | None:
    if isinstance(value, bool):
        return f"expected a number, got {_got(value)}."
    if isinstance(value, float):
        # the catalog's wording: a float cannot carry a price exactly
        return f'write the number as a string ("{value}"), so it stays exact.'
    if isinstance(value, int):
        return None
    if isinstance(value, str):
        try:
            if Decimal(value.strip()).is_finite():
                return None
        except InvalidOperation:
            pass
        return f"{value!r} is not a number."
    return f"expected a number, got {_got(value)}."


def _instant(value: Any) -> tuple[datetime | None, str | None]:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = date.fromisoformat(value.strip())  # a day alone is not an instant
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            return None, f'{value!r} is not an ISO 8601 instant, e.g. "2026-10-01T00:00:00Z".'
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            return None, "give the time zone (Z or an offset such as +02:00)."
        return value, None
    if isinstance(value, date):
        return None, f'give a full instant with a time zone, e.g. "{value.isoformat()}T00:00:00Z".'
    return None, f"expected an ISO 8601 instant, got {_got(value)}."


def _json_problem(value: Any) -> str | None:
    if value is None or isinstance(value, str | bool | int | float):
        return None
    if isinstance(value, list):
        return next((p for v in value if (p := _json_problem(v))), None)
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"keys must be text, got {_got(k)}."
            if problem := _json_problem(v):
                return problem
        return None
    return f"expected JSON values, got {_got(value)}."


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
            self.error(path, f"expected an object with keys, got {_got(value)}.")
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
                    f"unknown key{_suggest(name, shape)}; a {shape_name.replace('_', ' ')} "
                    f"takes: {allowed}.",
                )
        for name, field in shape.items():
            if name not in value or (value[name] is None and field.kind != "json"):
                if field.required:
                    self.error(f"{path}.{name}", "is required.")
                continue
            checked = self.field(value[name], f"{path}.{name}", field)
            if checked is not _INVALID:
                out[name] = checked
        rule = _RULES.get(shape_name)
        if rule is not None:
            rule(self, out, path, value)
        return out

    def field(self, value: Any, path: str, field: F) -> Any:  # noqa: C901 - one branch per kind
        kind = field.kind
        problem: str | None = None
        if kind in ("text", "key"):
            if not isinstance(value, str):
                problem = f"expected text, got {_got(value)}."
            elif kind == "key" and not re.match(KEY_VALIDATOR.regex, value):
                problem = f"{value!r} is not a valid key. {KEY_VALIDATOR.message}"
            else:
                choices = field.choices() if callable(field.choices) else field.choices
                if choices and value not in choices:
                    problem = (
                        f"must be one of {', '.join(choices)}, not {value!r}"
                        f"{_suggest(value, choices)}."
                    )
        elif kind == "bool":
            if not isinstance(value, bool):
                problem = f"expected true or false, got {_got(value)}."
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                problem = f"expected a whole number, got {_got(value)}."
        elif kind in ("decimal", "number"):
            problem = _decimal_problem(value)
        elif kind == "number_list":
            if not isinstance(value, list):
                problem = f"expected a list of numbers, got {_got(value)}."
            else:
                for i, item in enumerate(value):
                    if (p := _decimal_problem(item)) is not None:
                        self.error(f"{path}[{i}]", p)
                        return _INVALID
        elif kind == "instant":
            value, problem = _instant(value)
        elif kind == "text_map":
            if not isinstance(value, dict):
                problem = f"expected an object of names to text, got {_got(value)}."
            else:
                bad = [(k, v) for k, v in value.items() if not isinstance(v, str)]
                for k, v in bad:
                    self.error(f"{path}.{k}", f"expected text, got {_got(v)}.")
                if bad:
                    return _INVALID
        elif kind == "rail_settings":
            if not isinstance(value, dict):
                problem = f"expected an object of settings, got {_got(value)}."
            else:
                bad = False
                for k, v in value.items():
                    if k in TEXT_SETTINGS and not isinstance(v, str):
                        p = f"expected text, got {_got(v)}."
                    else:
                        p = _json_problem(v)
                    if p is not None:
                        self.error(f"{path}.{k}", p)
                        bad = True
                if bad:
                    return _INVALID
        elif kind == "filters":
            if not isinstance(value, dict):
                problem = f'expected an object of dimension to values, e.g. {{status: ["200"]}}, got {_got(value)}.'
            else:
                for k, v in value.items():
                    if not isinstance(v, list) or not v:
                        self.error(f"{path}.{k}", "give a non-empty list of values.")
                        return _INVALID
                    for i, item in enumerate(v):
                        if isinstance(item, bool) or not isinstance(item, str | int):
                            self.error(f"{path}.{k}[{i}]", f"expected text, got {_got(item)}.")
                            return _INVALID
        elif kind == "text_list":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                problem = f"expected a list of text, got {_got(value)}."
        elif kind == "key_list":
            if not isinstance(value, list):
                problem = f"expected a list of keys, got {_got(value)}."
            else:
                for i, item in enumerate(value):
                    checked = self.field(item, f"{path}[{i}]", F("key"))
                    if checked is _INVALID:
                        return _INVALID
        elif kind == "secret":
            if isinstance(value, dict):
                name = value.get("env")
                if set(value) != {"env"} or not isinstance(name, str):
                    problem = (
                        "give the secret as text, or {env: NAME} to read it from the environment."
                    )
                elif not ENV_NAME.fullmatch(name):
                    problem = f"{name!r} is not an environment variable name."
            elif not isinstance(value, str):
                problem = f"expected text or {{env: NAME}}, got {_got(value)}."
        elif kind == "threshold_list":
            # each item's name and value are the rule kind's to check (backoffice.configuration.apply)
            if not isinstance(value, list) or not value:
                problem = f"expected a non-empty list such as [{{percent: 80}}], got {_got(value)}."
            else:
                for i, item in enumerate(value):
                    if not isinstance(item, dict) or len(item) != 1:
                        self.error(
                            f"{path}[{i}]",
                            f"expected one name and its value, e.g. {{percent: 80}}, got {_got(item)}.",
                        )
                        return _INVALID
        elif kind == "object":
            if not isinstance(value, dict):
                problem = f"expected an object, got {_got(value)}."
        elif kind == "json":
            problem = _json_problem(value)
        elif kind == "list":
            if not isinstance(value, list):
                self.error(path, f"expected a list, got {_got(value)}.")
                return _INVALID
            items = [self.object(item, f"{path}[{i}]", field.shape) for i, item in enumerate(value)]
            return [item for item in items if item is not None]
        if problem is not None:
            self.error(path, problem)
            return _INVALID
        return value


_INVALID = object()


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
                f"unknown section{_suggest(name, SECTIONS)}; sections: {', '.join(SECTIONS)}.",
            )
    for section in SECTIONS:
        value = document.get(section)
        if value is None:
            continue
        checked = checker.field(value, section, F("list", shape=SECTION_SHAPES[section]))
        if checked is not _INVALID:
            out[section] = checked
    return out, checker.errors
