"""The kinds of value a configuration file holds, and how each is checked.

A key's ``F`` names its kind (``text``, ``key``, ``decimal``, ``instant``, ``list`` of a
shape, ...); ``KIND_CHECKS`` holds one function per kind that answers the value as it is
kept (an instant as an aware datetime) and the problem with it, if any, in words an
operator reads next to the key's place in the file. Which keys each object takes is
``backoffice.configuration.schema``'s.
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

from customers.models import KEY_VALIDATOR

ACH_SETTINGS = ("routing_number", "account_number", "account_type", "mandate_date")
# A secret given as {env: NAME}: read from the environment when the file is applied.
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Settings that are identifiers, not numbers: unquoted, YAML would drop leading zeros.
TEXT_SETTINGS = (*ACH_SETTINGS, "netsuite_entity_id", "stripe_customer_id")
# A value already reported as wrong (its problem named at its own place): left out.
INVALID = object()


@dataclass(frozen=True)
class F:
    """One key of an object: its kind, whether it is required, and its allowed values."""

    kind: str
    required: bool = False
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] = ()
    shape: str = ""  # for kind "list": the shape of each item


def value_got(value: Any) -> str:
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


def suggestion(name: str, options) -> str:
    """A hint naming the closest of ``options`` ("did you mean ...?"), or nothing."""
    match = difflib.get_close_matches(str(name), list(options), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


def decimal_problem(value: Any) -> str | None:
    """What is wrong with ``value`` as an exact number (a float is: it may not be exact)."""
    if isinstance(value, bool):
        return f"expected a number, got {value_got(value)}."
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
    return f"expected a number, got {value_got(value)}."


def instant_parse(value: Any) -> tuple[datetime | None, str | None]:
    """``value`` as an aware datetime, or what is wrong with it."""
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
    return None, f"expected an ISO 8601 instant, got {value_got(value)}."


def json_problem(value: Any) -> str | None:
    """What keeps ``value`` from being stored as JSON (non-text keys, other types)."""
    if value is None or isinstance(value, str | bool | int | float):
        return None
    if isinstance(value, list):
        return next((p for v in value if (p := json_problem(v))), None)
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"keys must be text, got {value_got(k)}."
            if problem := json_problem(v):
                return problem
        return None
    return f"expected JSON values, got {value_got(value)}."


# ------------------------------------------------------------------ one check per kind
# Each takes (checker, value, path, field) and answers (value as kept, problem or None);
# a check that reports problems at inner places itself answers (INVALID, None).


def _text(checker, value: Any, path: str, field: F) -> tuple[Any, str | None]:
    if not isinstance(value, str):
        return value, f"expected text, got {value_got(value)}."
    if field.kind == "key" and not re.match(KEY_VALIDATOR.regex, value):
        return value, f"{value!r} is not a valid key. {KEY_VALIDATOR.message}"
    choices = field.choices() if callable(field.choices) else field.choices
    if choices and value not in choices:
        return (
            value,
            f"must be one of {', '.join(choices)}, not {value!r}{suggestion(value, choices)}.",
        )
    return value, None


def _bool(checker, value: Any, path: str, field: F) -> tuple[Any, str | None]:
    if not isinstance(value, bool):
        return value, f"expected true or false, got {value_got(value)}."
    return value, None


def _int(checker, value: Any, path: str, field: F) -> tuple[Any, str | None]:
    if isinstance(value, bool) or not isinstance(value, int):
        return value, f"expected a whole number, got {value_got(value)}."
    return value, None


def _decimal(checker, value: Any, path: str, field: F) -> tuple[Any, str | None]:
    return value, decimal_problem(value)


def _number_list(checker, value: Any, path: str, field: F) -> tuple[Any, str | None]:
    if not isinstance(value, list):
        return value, f"expected a list of numbers, got {value_got(value)}."
    for i, item in enumerate(value):
        if (p := decimal_problem(item)) is not None:
            checker.error(f"{path}[{i}]", p)
            return INVALID, None
    return value, None


def _instant(checker, value: Any, path: str, field: F) -> tuple[Any, str | None]:
    return instant_parse(value)


def _text_map(checker, value: Any, path: str, field: F) -> tuple[Any, str | None]:
    if not isinstance(value, dict):
        return value, f"expected an object of names to text, got {value_got(value)}."
    bad = [(k, v) for k, v in value.items() if not isinstance(v, str)]
    for k, v in bad:
        checker.error(f"{path}.{k}", f"expected text, got {value_got(v)}.")
    return (INVALID if bad else value), None


def _rail_settings(checker, value: Any, path: str, field: F) -> tuple[Any, str | None]:
    if not isinstance(value, dict):
        return value, f"expected an object of settings, got {value_got(value)}."
    bad = False
    for k, v in value.items():
        if k in TEXT_SETTINGS and not isinstance(v, str):
            p = f"expected text, got {value_got(v)}."
        else:
            p = json_problem(v)
        if p is not None:
            checker.error(f"{path}.{k}", p)
            bad = True
    return (INVALID if bad else value), None


def _filters(checker, value: Any, path: str, field: F) -> tuple[Any, str | None]:
    if not isinstance(value, dict):
        return value, (
            'expected an object of dimension to values, e.g. {status: ["200"]}, '
            f"got {value_got(value)}."
        )
    for k, v in value.items():
        if not isinstance(v, list) or not v:
            checker.error(f"{path}.{k}", "give a non-empty list of values.")
            return INVALID, None
        for i, item in enumerate(v):
            if isinstance(item, bool) or not isinstance(item, str | int):
                checker.error(f"{path}.{k}[{i}]", f"expected text, got {value_got(item)}.")
                return INVALID, None
    return value, None


def _text_list(checker, value: Any, path: str, field: F) -> tuple[Any, str | None]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return value, f"expected a list of text, got {value_got(value)}."
    return value, None


def _key_list(checker, value: Any, path: str, field: F) -> tuple[Any, str | None]:
    if not isinstance(value, list):
        return value, f"expected a list of keys, got {value_got(value)}."
    for i, item in enumerate(value):
        if checker.field(item, f"{path}[{i}]", F("key")) is INVALID:
            return INVALID, None
    return value, None


def _secret(checker, value: Any, path: str, field: F) -> tuple[Any, str | None]:
    if isinstance(value, dict):
        name = value.get("env")
        if set(value) != {"env"} or not isinstance(name, str):
            return value, "give the secret as text, or {env: NAME} to read it from the environment."
        if not ENV_NAME.fullmatch(name):
            return value, f"{name!r} is not an environment variable name."
        return value, None
    if not isinstance(value, str):
        return value, f"expected text or {{env: NAME}}, got {value_got(value)}."
    return value, None


def _threshold_list(checker, value: Any, path: str, field: F) -> tuple[Any, str | None]:
    # each item's name and value are the rule kind's to check (backoffice.configuration.apply)
    if not isinstance(value, list) or not value:
        return (
            value,
            f"expected a non-empty list such as [{{percent: 80}}], got {value_got(value)}.",
        )
    for i, item in enumerate(value):
        if not isinstance(item, dict) or len(item) != 1:
            checker.error(
                f"{path}[{i}]",
                f"expected one name and its value, e.g. {{percent: 80}}, got {value_got(item)}.",
            )
            return INVALID, None
    return value, None


def _object(checker, value: Any, path: str, field: F) -> tuple[Any, str | None]:
    if not isinstance(value, dict):
        return value, f"expected an object, got {value_got(value)}."
    return value, None


def _json(checker, value: Any, path: str, field: F) -> tuple[Any, str | None]:
    return value, json_problem(value)


def _list(checker, value: Any, path: str, field: F) -> tuple[Any, str | None]:
    """A list of objects of ``field.shape``; items that are not objects are left out."""
    if not isinstance(value, list):
        return value, f"expected a list, got {value_got(value)}."
    items = [checker.object(item, f"{path}[{i}]", field.shape) for i, item in enumerate(value)]
    return [item for item in items if item is not None], None


KIND_CHECKS: dict[str, Callable[[Any, Any, str, F], tuple[Any, str | None]]] = {
    "text": _text,
    "key": _text,
    "bool": _bool,
    "int": _int,
    "decimal": _decimal,
    "number": _decimal,
    "number_list": _number_list,
    "instant": _instant,
    "text_map": _text_map,
    "rail_settings": _rail_settings,
    "filters": _filters,
    "text_list": _text_list,
    "key_list": _key_list,
    "secret": _secret,
    "threshold_list": _threshold_list,
    "object": _object,
    "json": _json,
    "list": _list,
}
