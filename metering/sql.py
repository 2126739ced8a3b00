"""SQL fragments that read a meter's value and dimensions out of an event's data.

Simple JSONPaths (``$.a`` or ``$.a.b``) become the ``->`` / ``->>`` operators, which are
several times faster than evaluating a JSONPath per row; anything else is evaluated with
``jsonb_path_query_first``. Paths are passed as bound parameters, never interpolated.

Any other path is evaluated *silently* (``jsonb_path_query_first``'s ``silent``
argument): a path that meets the wrong shape in one event (``strict`` and a missing key,
``.double()`` of a word, a division by zero) gives that event no value, as ``->`` does
when a key is missing, instead of failing the statement that reads every event. What is
wrong with a path itself (its syntax, a variable it does not define) fails whatever the
events hold; ``path_problem`` finds that before a meter is saved, by asking PostgreSQL,
the one grammar that counts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from django.db import DatabaseError, connection, transaction

from metering.models import Aggregation, Meter

_SIMPLE = re.compile(r"^\$((?:\.[A-Za-z_][A-Za-z0-9_]*)+)$")
HOUR = timedelta(hours=1)


def floor_hour(t: datetime) -> datetime:
    """The start of the UTC hour holding ``t`` (buckets are UTC hours)."""
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def ceil_hour(t: datetime) -> datetime:
    floor = floor_hour(t)
    return floor if floor == t else floor + HOUR


def whole_hours(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The whole UTC hours inside ``[start, end)``, which the buckets answer; the rest of
    the range (the partial hours at its edges) is read from the raw events. A range
    inside one hour has none: ``(start, start)``."""
    inner_start, inner_end = ceil_hour(start), floor_hour(end)
    if inner_end < inner_start:
        return start, start
    return inner_start, inner_end


def dims_filter(
    filters: Mapping[str, Sequence], bind: Callable[[object], str], *, column: str
) -> list[str]:
    """A feature's (or a query's) dimension filters on a jsonb of dimensions (a bucket's
    ``dims``, or ``dims_expr`` of an event): each dimension one of its values, as text.
    ``bind`` adds a parameter and answers its placeholder."""
    return [
        f"({column} ->> {bind(name)}::text) = ANY({bind([str(v) for v in values])}::text[])"
        for name, values in sorted(filters.items())
    ]


def binder(params: dict) -> Callable[[object], str]:
    """``bind`` for ``dims_filter`` that adds to ``params`` as the fragments here do."""
    return lambda value: _bind(params, value)


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
    return f"jsonb_path_query_first({column}, {_bind(params, path)}::jsonpath, '{{}}', true)"


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


def path_problem(path: object) -> str | None:
    """Why ``path`` cannot be read out of an event's data by the SQL above, or None.

    A path the ``->`` operators read is fine as it is; any other is parsed and evaluated
    by PostgreSQL (on an empty object, silently, as the rollup evaluates it), in a
    savepoint, so the caller's transaction is untouched. Costs one round trip for a path
    that is not simple; raises nothing.
    """
    if not isinstance(path, str) or not path.startswith("$"):
        return "a JSONPath starting with '$', e.g. $.tokens"
    if _keys(path):
        return None
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT jsonb_path_query_first('{}'::jsonb, %s::jsonpath, '{}'::jsonb, true)",
                [path],
            )
    except DatabaseError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"{path!r} is not a JSONPath PostgreSQL can evaluate: {reason}"
    except ValueError as exc:  # NUL characters, unpaired surrogates: psycopg refuses to send
        return f"{path!r} cannot be sent to PostgreSQL: {exc}"
    return None


def meter_path_problems(meter: Meter) -> dict[str, list[str]]:
    """The meter's JSONPaths that cannot be evaluated, by field: ``value_property`` and
    ``group_by`` (each message naming its dimension). Empty when every path is fine."""
    problems: dict[str, list[str]] = {}
    if meter.value_property:
        problem = path_problem(meter.value_property)
        if problem:
            problems["value_property"] = [problem[0].upper() + problem[1:] + "."]
    if isinstance(meter.group_by, dict):
        for name, path in sorted(meter.group_by.items()):
            problem = path_problem(path)
            if problem:
                problems.setdefault("group_by", []).append(f"{name}: {problem}.")
    return problems
