"""What ingestion refuses, in one place: the limits an event keeps so that PostgreSQL can
store it and every meter can sum it exactly, whatever meters exist now or later.

Pure: no ORM, no clock (the receipt time is an argument). The limits and their reasons
are documented in docs/limits.md; change both together.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal
from typing import Any

import msgspec

from metering.models import UsageBucket

# ``data`` may nest objects and arrays this many levels (``{"a": 1}`` is one level).
MAX_DATA_DEPTH = 32

# Event times: not before this instant, and not later than this after the request was
# received (clocks drift; a time far ahead is a bug, and would open partitions for it).
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_TOLERANCE = timedelta(hours=24)

# New monthly partitions of the event table one request may create. The beat task keeps
# the coming months ready, so live traffic creates none; a backfill of older months is
# sent a year at a time.
MAX_NEW_PARTITIONS = 12

# Every number in ``data`` may become a meter's value (a meter made later rolls up every
# stored event), so every number must fit a usage bucket exactly: at most the bucket
# columns' decimal places, and a magnitude below 10^15, which leaves a bucket (one hour of
# one subject) room for 10^13 such values before its integer digits run out. 10^15 is also
# below 2^53, so JavaScript clients read the same integers back.
_BUCKET_VALUE = UsageBucket._meta.get_field("value_sum")
VALUE_DECIMAL_PLACES: int = _BUCKET_VALUE.decimal_places
VALUE_MAX_EXCLUSIVE = 10**15
_QUANTUM = Decimal(1).scaleb(-VALUE_DECIMAL_PLACES)
_EXACT = Context(prec=VALUE_DECIMAL_PLACES + 16)  # room for 15 integer digits and more
_OUT_OF_RANGE = (
    "out of range: a number must be less than 10^15 in magnitude "
    "(send identifiers and other large numbers as strings)"
)

NUL_ESCAPE = b"\\u0000"
_NUL_REASON = "contains a NUL character (\\u0000), which cannot be stored"


def _shape_table() -> bytes:
    """Maps JSON text to its shape for the screen below: digits to ``0``, ``e``/``E`` to
    ``e``, ``:`` and ``,`` to ``:``, ``{`` and ``[`` to ``[``; ``.`` and ``-`` stay; every
    other byte becomes ``x`` (whitespace is deleted as it is translated)."""
    table = bytearray(b"x" * 256)
    for byte in b"0123456789":
        table[byte] = ord("0")
    table[ord("e")] = table[ord("E")] = ord("e")
    table[ord(":")] = table[ord(",")] = ord(":")
    table[ord("{")] = table[ord("[")] = ord("[")
    table[ord(".")], table[ord("-")] = ord("."), ord("-")
    return bytes(table)


_SHAPE = _shape_table()
_WHITESPACE = b" \t\r\n"
_LONG_INTEGER = b"0" * len(str(VALUE_MAX_EXCLUSIVE))  # 16 digits: 10^15 or more
_LONG_FRACTION = b"." + b"0" * (VALUE_DECIMAL_PLACES + 1)
_LONG_RUN = _LONG_FRACTION[1:]  # in both of the above: one search clears most texts
# A number with an exponent, read backwards: ``e``, a digit, digits and a point, maybe a
# minus, and the ``:`` ``,`` or ``[`` a JSON number follows. Backwards, the pattern starts
# with a literal, which the regex engine finds fast; forwards it would try every colon.
_EXPONENT_BACKWARDS = re.compile(rb"e0[0.]*-?[:\[]")


def text_screen(text: bytes, *, containers: int) -> tuple[bool, bool]:
    """Screens JSON ``text`` from its bytes alone: (True when no number in it can be out
    of bounds, True when no value in it can be nested past ``MAX_DATA_DEPTH``), where
    ``containers`` is how many objects and arrays the text holds before any ``data``
    nests (one per ``data``; for a batch, also one per event and one for the array). The
    caller looks for ``NUL_ESCAPE`` itself (once per body).

    A number could be out of bounds when it has 16 or more integer digits, more decimals
    than a bucket keeps, or an exponent. A value nested n levels holds at least n ``{``
    or ``[``. Both answers err one way only: the same text inside a string (an id of 16
    digits, a route ``/items/{id}``) only sends the text to the exact check. The hot
    path: a batch of ordinary events passes on a few scans of its bytes, without
    decoding any ``data``.
    """
    shape = text.translate(_SHAPE, _WHITESPACE)
    plain = not (_LONG_RUN in shape and (_LONG_INTEGER in shape or _LONG_FRACTION in shape)) and (
        b"0e" not in shape or _EXPONENT_BACKWARDS.search(shape[::-1]) is None
    )
    limit = containers + MAX_DATA_DEPTH
    brackets = shape.count(b"[")
    # "x[": a bracket after a letter, a quote or a slash is inside a string (a route
    # "/items/{id}"): no structural bracket follows anything but ":", "," or a bracket.
    shallow = brackets < limit or brackets - shape.count(b"x[") < limit
    return plain, shallow


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_decode_exact = msgspec.json.Decoder(float_hook=Decimal)


def time_problem(time: datetime, *, received_at: datetime | None) -> str | None:
    """Why an event time is refused (without the field name), or None.

    ``received_at`` None checks only the earliest time (a trusted load, not a request).
    """
    if time < EARLIEST_TIME:
        return f"before {EARLIEST_TIME:%Y-%m-%d}, the earliest event time accepted"
    if received_at is not None and time > received_at + FUTURE_TOLERANCE:
        hours = int(FUTURE_TOLERANCE.total_seconds() // 3600)
        return f"more than {hours} hours after the request was received"
    return None


def text_problem(value: str) -> str | None:
    """Why a decoded string cannot be stored, or None."""
    return _NUL_REASON if "\x00" in value else None


def data_problem(raw: bytes) -> str | None:
    """Why ``data`` (the raw JSON of an object, valid UTF-8) cannot be stored or summed,
    naming the place (``data.tokens: ...``), or None.

    Most events pass on a screen of the raw bytes (``text_screen``); only an event
    whose text could hold a NUL, a deep nesting or an out-of-bounds number is decoded and
    walked.
    """
    plain, shallow = text_screen(raw, containers=1)
    if plain and shallow and NUL_ESCAPE not in raw:
        return None
    try:
        value = _decode_exact.decode(raw)
    except RecursionError:
        return f"data: nested deeper than {MAX_DATA_DEPTH} levels"
    except msgspec.ValidationError:  # msgspec's own bound: an integer of thousands of digits
        return f"data: {_OUT_OF_RANGE}"
    return value_problem(value)


def value_problem(value: Any, *, where: str = "data") -> str | None:
    """Why a decoded JSON value (floats as ``Decimal``) cannot be stored or summed, or
    None. Walks without recursion, so any depth is safe to check."""
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, dict):
            if depth >= MAX_DATA_DEPTH:
                return f"{where}: nested deeper than {MAX_DATA_DEPTH} levels"
            children = []
            for key, item in node.items():
                if "\x00" in key:
                    return f"{path}: a key {_NUL_REASON}"
                children.append((item, _child_path(path, key), depth + 1))
            stack.extend(reversed(children))
        elif isinstance(node, list):
            if depth >= MAX_DATA_DEPTH:
                return f"{where}: nested deeper than {MAX_DATA_DEPTH} levels"
            stack.extend(
                (item, f"{path}[{i}]", depth + 1) for i, item in reversed(list(enumerate(node)))
            )
        elif isinstance(node, str):
            if "\x00" in node:
                return f"{path}: {_NUL_REASON}"
        elif isinstance(node, bool) or node is None:
            continue
        elif isinstance(node, int | Decimal) and (reason := number_problem(node)):
            return f"{path}: {reason}"
    return None


def number_problem(number: int | Decimal | float) -> str | None:
    """Why a number cannot be a meter's value (without the field name), or None."""
    if isinstance(number, float | Decimal) and not _is_finite(number):
        return "must be a finite number"
    if not -VALUE_MAX_EXCLUSIVE < number < VALUE_MAX_EXCLUSIVE:
        return _OUT_OF_RANGE
    if isinstance(number, int):
        return None
    exact = number if isinstance(number, Decimal) else Decimal(repr(number))
    if exact != exact.quantize(_QUANTUM, context=_EXACT):
        text = str(exact)
        shown = text if len(text) <= 40 else text[:37] + "..."
        return (
            f"{shown} has more than {VALUE_DECIMAL_PLACES} decimal places, "
            "more than a usage bucket keeps"
        )
    return None


def _is_finite(number: float | Decimal) -> bool:
    return number.is_finite() if isinstance(number, Decimal) else math.isfinite(number)


def _child_path(path: str, key: str) -> str:
    if _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{msgspec.json.encode(key).decode()}]"
