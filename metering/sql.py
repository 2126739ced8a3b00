"""SQL fragments that read a meter's value and dimensions out of an event's data.

Simple JSONPaths (``$.a`` or ``$.a.b``) become the ``->`` / ``#>`` operators, which are
several times faster than evaluating a JSONPath per row; anything else is evaluated with
``jsonb_path_query_first``. Paths are passed as bound parameters, never interpolated.
"""

from __future__ import annotations

import re

from metering.models import Aggregation, Meter

_SIMPLE = re.compile(r"^\$((?:\.[A-Za-z_][A-Za-z0-9_]*)+)$")


def _bind(params: dict, value) -> str:
    name = f"p{len(params)}"
    params[name] = value
    return f"%({name})s"


def json_expr(path: str, params: dict, *, column: str = "e.data") -> str:
    """A SQL expression (jsonb) for ``path`` in ``column``; adds its named parameters."""
    match = _SIMPLE.match(path)
    if match:
        keys = match.group(1).lstrip(".").split(".")
        return f"({column} #> {_bind(params, keys)}::text[])"
    return f"jsonb_path_query_first({column}, {_bind(params, path)}::jsonpath)"


def text_expr(path: str, params: dict, *, column: str = "e.data") -> str:
    """A SQL expression (text) for the value at ``path``: strings unquoted, others as JSON."""
    return f"({json_expr(path, params, column=column)} #>> '{{}}')"


def dims_expr(meter: Meter, params: dict, *, column: str = "e.data") -> str:
    """A jsonb object of the meter's group-by dimensions, each value as text (or null)."""
    if not meter.group_by:
        return "'{}'::jsonb"
    parts = []
    for name in sorted(meter.group_by):
        parts.append(
            f"{_bind(params, name)}::text, {text_expr(meter.group_by[name], params, column=column)}"
        )
    return f"jsonb_build_object({', '.join(parts)})"


def value_expr(meter: Meter, params: dict, *, column: str = "e.data") -> str:
    """The event's numeric value for the meter (NULL when missing or not a number)."""
    if meter.aggregation == Aggregation.COUNT or not meter.value_property:
        return "NULL::numeric"
    return f"metering_numeric({json_expr(meter.value_property, params, column=column)})"


def unique_expr(meter: Meter, params: dict, *, column: str = "e.data") -> str:
    """The event's value as text, for distinct counting."""
    return text_expr(meter.value_property or "$", params, column=column)
