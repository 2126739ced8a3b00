"""SQL fragments that read a meter's value and dimensions out of an event's data.

Simple JSONPaths (``$.a`` or ``$.a.b``) become the ``->`` / ``->>`` operators, which are
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


def _keys(path: str) -> list[str] | None:
    match = _SIMPLE.match(path)
    return match.group(1).lstrip(".").split(".") if match else None


def json_expr(path: str, params: dict, *, column: str = "e.data") -> str:
    """A SQL expression (jsonb) for ``path`` in ``column``; adds its named parameters."""
    keys = _keys(path)
    if keys:
        return "(" + column + "".join(f" -> {_bind(params, key)}::text" for key in keys) + ")"
    return f"jsonb_path_query_first({column}, {_bind(params, path)}::jsonpath)"


def text_expr(path: str, params: dict, *, column: str = "e.data") -> str:
    """A SQL expression (text) for the value at ``path``: strings unquoted, others as JSON,
    a JSON null as NULL."""
    keys = _keys(path)
    if keys:  # ->> on the last key: no jsonb copy of the value per row
        steps = [f" -> {_bind(params, key)}::text" for key in keys[:-1]]
        return f"({column}{''.join(steps)} ->> {_bind(params, keys[-1])}::text)"
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


def dims_columns(meter: Meter, params: dict, *, column: str = "e.data") -> list[tuple[str, str]]:
    """The meter's group-by dimensions as ``(bound name, text expression)`` pairs, sorted
    by name: ``jsonb_build_object`` of them, in order, equals ``dims_expr``. Grouping by
    the text values and building the object once per group is cheaper than one object
    per event."""
    return [
        (_bind(params, name), text_expr(meter.group_by[name], params, column=column))
        for name in sorted(meter.group_by or {})
    ]


def value_expr(meter: Meter, params: dict, *, column: str = "e.data") -> str:
    """The event's numeric value for the meter (NULL when missing or not a number)."""
    if meter.aggregation == Aggregation.COUNT or not meter.value_property:
        return "NULL::numeric"
    return f"metering_numeric({json_expr(meter.value_property, params, column=column)})"


def unique_expr(meter: Meter, params: dict, *, column: str = "e.data") -> str:
    """The event's value as text, for distinct counting."""
    return text_expr(meter.value_property or "$", params, column=column)
