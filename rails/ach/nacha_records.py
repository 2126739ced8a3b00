"""NACHA record layouts and field formats, shared by the origination file
(``rails.ach.nacha``) and return files (``rails.ach.returns``).

Each record layout is one function that reads, field by field and in order, as the NACHA
rules' record format table does; they are kept whole on purpose. Pure: no Django, no clock.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from datetime import date, datetime

RECORD_LENGTH = 94
BLOCKING_FACTOR = 10
LINE_ENDING = "\r\n"
SERVICE_CLASS_DEBITS_ONLY = "225"

ALLOWED_TEXT_CHARACTERS = frozenset(
    string.ascii_uppercase + string.digits + " &'()*+,-./:;=?@!#%_$"
)
_ABA_WEIGHTS = (3, 7, 1, 3, 7, 1, 3, 7)
# ABA-assigned prefixes: 00 U.S. Government, 01-12 Federal Reserve districts,
# 21-32 thrift institutions, 61-72 electronic transactions.
_ROUTING_PREFIXES = frozenset(range(0, 13)) | frozenset(range(21, 33)) | frozenset(range(61, 73))
_DIGITS_8 = re.compile(r"[0-9]{8}")
DIGITS_9 = re.compile(r"[0-9]{9}")


# --- field formats -----------------------------------------------------------------


def aba_check_digit(first8: str) -> int:
    """The ABA check digit for the first 8 digits of a routing number: weights 3, 7, 1
    repeated, and the digit that brings the weighted sum to a multiple of 10.

    Raises ValueError unless `first8` is exactly 8 ASCII digits.
    """
    if not isinstance(first8, str) or not _DIGITS_8.fullmatch(first8):
        raise ValueError(f"expected the first 8 digits of a routing number, got {first8!r}")
    total = sum(int(digit) * weight for digit, weight in zip(first8, _ABA_WEIGHTS, strict=True))
    return (10 - total % 10) % 10


def routing_number_validate(routing: str) -> None:
    """Check a 9-digit ABA routing number: digits only, an ABA-assigned prefix, and
    the check digit (3-7-1 weights).

    Raises ValueError saying what is wrong.
    """
    if not isinstance(routing, str) or not DIGITS_9.fullmatch(routing):
        raise ValueError(f"routing number {routing!r} must be exactly 9 digits")
    if routing == "000000000" or int(routing[:2]) not in _ROUTING_PREFIXES:
        raise ValueError(
            f"routing number {routing!r} does not start with an ABA-assigned prefix "
            "(00-12, 21-32 or 61-72)"
        )
    expected = aba_check_digit(routing[:8])
    if int(routing[8]) != expected:
        raise ValueError(
            f"routing number {routing!r} fails the ABA check digit "
            f"(last digit should be {expected}, not {routing[8]})"
        )


def numeric_field(value: int, width: int, *, what: str) -> str:
    """`value` right-justified and zero-filled to `width` digits.

    Raises ValueError if it is negative or does not fit.
    """
    if value < 0 or len(str(value)) > width:
        raise ValueError(f"{what} {value} does not fit in {width} digits")
    return str(value).zfill(width)


def alphanumeric_field(value: str, width: int, *, what: str, truncate: bool = True) -> str:
    """`value` normalised (upper-case, single spaces), checked against the allowed
    characters, then cut (if `truncate`) and space-filled to `width`.

    Raises ValueError for a non-string, a disallowed character, or (when not
    truncating) a value longer than `width`.
    """
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    cleaned = " ".join(value.split()).upper()
    bad = sorted({ch for ch in cleaned if ch not in ALLOWED_TEXT_CHARACTERS})
    if bad:
        raise ValueError(
            f"{what} {value!r} contains characters NACHA files cannot carry: {''.join(bad)!r}"
        )
    if len(cleaned) > width and not truncate:
        raise ValueError(f"{what} {value!r} is longer than its {width}-character field")
    return cleaned[:width].ljust(width)


def yymmdd(d: date) -> str:
    return d.strftime("%y%m%d")


def blocked(records: Sequence[str]) -> list[str]:
    """`records` padded with lines of 94 nines to a multiple of the blocking factor."""
    padding = -len(records) % BLOCKING_FACTOR
    return [*records, *(["9" * RECORD_LENGTH] * padding)]


def file_text(records: Sequence[str]) -> str:
    """The file's text: every record checked at 94 characters and ended by CRLF."""
    for index, record in enumerate(records, start=1):
        if len(record) != RECORD_LENGTH:  # a bug in this module, never bad input
            raise AssertionError(f"record {index} is {len(record)} characters: {record!r}")
    return "".join(record + LINE_ENDING for record in records)


# --- record layouts ----------------------------------------------------------------


def file_header_record(
    *,
    destination: str,
    origin: str,
    created_at: datetime,
    file_id_modifier: str,
    destination_name: str,
    origin_name: str,
) -> str:
    """The file header (1). A 9-digit `destination` or `origin` is blank-prefixed."""
    return (
        "1"
        + "01"  # priority code
        + destination.rjust(10)
        + origin.rjust(10)
        + yymmdd(created_at)
        + created_at.strftime("%H%M")
        + file_id_modifier
        + f"{RECORD_LENGTH:03d}"
        + f"{BLOCKING_FACTOR:02d}"
        + "1"  # format code
        + alphanumeric_field(destination_name, 23, what="immediate_destination_name")
        + alphanumeric_field(origin_name, 23, what="immediate_origin_name")
        + " " * 8  # reference code
    )


def batch_header_record(
    *,
    company_name: str,
    company_id: str,
    sec_code: str,
    description: str,
    effective_date: date,
    odfi8: str,
    batch_number: int,
    settlement_day: str = "   ",
) -> str:
    """A batch header (5), service class 225. Text arguments come at their widths."""
    return (
        "5"
        + SERVICE_CLASS_DEBITS_ONLY
        + company_name
        + " " * 20  # company discretionary data
        + company_id
        + sec_code
        + description
        + " " * 6  # company descriptive date
        + yymmdd(effective_date)
        + settlement_day  # Julian day, filled in by the ACH operator: blank when originating
        + "1"  # originator status code: a depository financial institution
        + odfi8
        + numeric_field(batch_number, 7, what="batch number")
    )


def batch_control_record(
    *, count: int, entry_hash: int, debit_minor: int, company_id: str, odfi8: str, batch_number: int
) -> str:
    """A batch control (8) for a debits-only batch; raises ValueError on overflow."""
    what = f"batch {batch_number}"
    return (
        "8"
        + SERVICE_CLASS_DEBITS_ONLY
        + numeric_field(count, 6, what=f"{what} entry/addenda count")
        + numeric_field(entry_hash % 10**10, 10, what="entry hash")
        + numeric_field(debit_minor, 12, what=f"{what} total debit amount")
        + numeric_field(0, 12, what="total credit amount")
        + company_id
        + " " * 19  # message authentication code
        + " " * 6  # reserved
        + odfi8
        + numeric_field(batch_number, 7, what="batch number")
    )


def file_control_record(
    *, batch_count: int, record_count: int, count: int, entry_hash: int, debit_minor: int
) -> str:
    """The file control (9); `record_count` counts every record but the padding,
    this one included. Raises ValueError on overflow."""
    block_count = -(-record_count // BLOCKING_FACTOR)
    return (
        "9"
        + numeric_field(batch_count, 6, what="batch count")
        + numeric_field(block_count, 6, what="block count")
        + numeric_field(count, 8, what="file entry/addenda count")
        + numeric_field(entry_hash % 10**10, 10, what="entry hash")
        + numeric_field(debit_minor, 12, what="file total debit amount")
        + numeric_field(0, 12, what="total credit amount")
        + " " * 39  # reserved
    )


def entry_detail_record(
    *,
    transaction_code: str,
    routing_number: str,
    account: str,
    amount: str,
    receiver_id: str,
    name: str,
    has_addenda: bool,
    trace: str,
) -> str:
    """An entry detail (6). Text arguments come at their widths."""
    return (
        "6"
        + transaction_code
        + routing_number
        + account
        + amount
        + receiver_id
        + name
        + "  "  # discretionary data
        + ("1" if has_addenda else "0")
        + trace
    )


def addenda_record(*, info: str, trace: str) -> str:
    """The 05 addenda (7) of the entry whose trace number is ``trace``; ``info`` (the
    payment related information) comes at its 80 characters."""
    return "7" + "05" + info + "0001" + trace[-7:]
