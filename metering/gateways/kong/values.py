"""Reading the values in a Kong log: Kong's serializer writes whatever the request and
its plugins held, so every value is checked for its type before it is used, and a value
a meter could not store or sum is left out. ``KongLogError`` is how a reader says the
whole log must be skipped, with the reason it is counted under."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from metering.ingest_limits import VALUE_DECIMAL_PLACES, VALUE_MAX_EXCLUSIVE, number_problem
from metering.models import KongSkippedEntry

Reason = KongSkippedEntry.Reason

MAX_KEY = 255
# A count written as text: ASCII digits only (str.isdigit() also takes "²", which int()
# refuses), and few enough to stay below the limit of every metered number.
_MAX_COUNT_DIGITS = len(str(VALUE_MAX_EXCLUSIVE - 1))


class KongLogError(ValueError):
    """A log that cannot become events: ``reason`` is what it is counted under, the
    message says what exactly (shown to the operator with the log)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def as_dict(value: Any) -> dict[str, Any]:
    """The value when it is an object, else an empty one."""
    return value if isinstance(value, dict) else {}


def text(value: Any, *, keep_nul: bool = False) -> str | None:
    """A non-empty string without NUL characters (PostgreSQL's jsonb refuses them);
    ``keep_nul`` leaves them for the caller to refuse."""
    if not isinstance(value, str):
        return None
    value = (value if keep_nul else value.replace("\x00", "")).strip()
    return value or None


def header(headers: Any, name: str, *, keep_nul: bool = False) -> str | None:
    """A header's value; Kong logs names in lower case and a repeated header as a list."""
    if not isinstance(headers, dict) or not name:
        return None
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    if isinstance(value, list):
        value = next((v for v in value if text(v)), None)
    return text(value, keep_nul=keep_nul)


def number(value: Any) -> int | float | None:
    """A number a meter can sum: None for anything else, and for magnitudes of 10^15 or
    more; a fraction rounded (half to even) to the decimal places a usage bucket keeps."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float):
        value = round(value, VALUE_DECIMAL_PLACES)
    if number_problem(value):
        return None
    return int(value) if isinstance(value, float) and value.is_integer() else value


def count(value: Any) -> int | None:
    """A non-negative integer, also from the numeric strings older Kong releases logged."""
    if isinstance(value, str):
        digits = value.strip()
        if digits.isascii() and digits.isdigit() and len(digits) <= _MAX_COUNT_DIGITS:
            return int(digits)
        return None
    value = number(value)
    return value if isinstance(value, int) and value >= 0 else None


def decimal_text(value: Any) -> str | None:
    """Money travels as a decimal string; the shortest text that reads back as the
    float Kong wrote is the number Kong meant."""
    value = number(value)
    if value is None:
        return None
    return format(Decimal(repr(value)).normalize(), "f")
