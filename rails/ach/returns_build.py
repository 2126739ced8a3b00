"""Build the NACHA return file a bank would send back for some entries of a file we
sent: for tests and the sandbox (a demo's returns), never for production.

One batch per SEC code and returning bank (RDFI), whose first 8 routing digits start the
return trace numbers; the header names us as destination and the ODFI as origin. Text as
``nacha_file_build`` writes it (94 characters, CRLF, blocked).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from rails.ach.nacha import AchOriginator, NachaEntry, NachaFile
from rails.ach.nacha_records import (
    alphanumeric_field,
    batch_control_record,
    batch_header_record,
    blocked,
    file_control_record,
    file_header_record,
    file_text,
    numeric_field,
    yymmdd,
)

# A debit's transaction code -> its return's (checking 27 -> 26, savings 37 -> 36).
_RETURN_TRANSACTION_CODES = {"27": "26", "37": "36"}


@dataclass(frozen=True)
class AchReturnInstruction:
    """For `nacha_return_file_build`: return the entry with this trace number."""

    original_trace_number: str
    return_code: str
    addenda_information: str = ""
    date_of_death: date | None = None


def _instructions_checked(
    original: NachaFile, returns: Sequence[AchReturnInstruction]
) -> dict[str, NachaEntry]:
    """The original file's entries by trace number, once each return is checked."""
    by_trace = {entry.trace_number: entry for entry in original.entries}
    seen: set[str] = set()
    for item in returns:
        if item.original_trace_number not in by_trace:
            raise ValueError(
                f"trace number {item.original_trace_number!r} is not in the original file"
            )
        if item.original_trace_number in seen:
            raise ValueError(f"trace number {item.original_trace_number!r} is returned twice")
        if not re.fullmatch(r"R[0-9]{2}", item.return_code):
            raise ValueError(f"return code {item.return_code!r} must be R and two digits")
        seen.add(item.original_trace_number)
    if not returns:
        raise ValueError("a return file needs at least one return")
    return by_trace


def _return_file_header(
    originator: AchOriginator, created_at: datetime, file_id_modifier: str
) -> str:
    """The file header of a return file: from the ODFI back to us (the originator)."""
    return file_header_record(
        destination=originator.immediate_origin,
        origin=originator.immediate_destination,
        created_at=created_at,
        file_id_modifier=file_id_modifier,
        destination_name=originator.immediate_origin_name,
        origin_name=originator.immediate_destination_name,
    )


def return_entry_record(*, entry: NachaEntry, odfi_routing: str, trace: str) -> str:
    """The return entry (6) of ``entry``, sent back to the ODFI, with its addenda."""
    return (
        "6"
        + _RETURN_TRANSACTION_CODES[entry.transaction_code]
        + odfi_routing
        + entry.account_number.ljust(17)
        + numeric_field(entry.amount_minor, 10, what="amount")
        + entry.receiver_id.ljust(15)
        + entry.receiver_name.ljust(22)
        + "  "  # discretionary data
        + "1"  # addenda record indicator
        + trace
    )


def return_addenda_record(*, entry: NachaEntry, item: AchReturnInstruction, trace: str) -> str:
    """The return addenda (7, type 99): R-code, original trace, the receiver's bank."""
    return (
        "7"
        + "99"
        + item.return_code
        + entry.trace_number
        + (yymmdd(item.date_of_death) if item.date_of_death else " " * 6)
        + entry.routing_number[:8]
        + alphanumeric_field(item.addenda_information, 44, what="addenda_information")
        + trace
    )


def nacha_return_file_build(
    *,
    original: NachaFile,
    returns: Sequence[AchReturnInstruction],
    created_at: datetime,
    file_id_modifier: str = "A",
) -> str:
    """The return file the ODFI would hand us for `returns` of entries in `original`.

    One batch per SEC code and returning bank (RDFI), whose first 8 routing digits
    start the return trace numbers; the header names us as destination and the ODFI
    as origin. Text as `nacha_file_build` writes it (94 characters, CRLF, blocked).

    Raises ValueError for an unknown or repeated trace number, or a malformed R-code.
    """
    by_trace = _instructions_checked(original, returns)
    originator = original.originator
    description = alphanumeric_field(original.company_entry_description, 10, what="description")
    company_name = alphanumeric_field(originator.company_name, 16, what="company_name")
    company_id = alphanumeric_field(originator.company_id, 10, what="company_id", truncate=False)
    records = [_return_file_header(originator, created_at, file_id_modifier)]
    groups: dict[tuple[str, str], list[AchReturnInstruction]] = {}
    for item in returns:
        entry = by_trace[item.original_trace_number]
        groups.setdefault((entry.sec_code, entry.routing_number[:8]), []).append(item)

    sequence = file_count = file_hash = file_debit = 0
    odfi8 = originator.odfi_routing[:8]  # the return entries' receiving bank
    for batch_number, ((sec_code, rdfi8), items) in enumerate(sorted(groups.items()), start=1):
        records.append(
            batch_header_record(
                company_name=company_name,
                company_id=company_id,
                sec_code=sec_code,
                description=description,
                effective_date=created_at.date(),
                odfi8=rdfi8,  # the returning bank originates the return entries
                batch_number=batch_number,
                settlement_day=created_at.strftime("%j"),
            )
        )
        batch_debit = 0
        for item in items:
            entry = by_trace[item.original_trace_number]
            sequence += 1
            trace = rdfi8 + numeric_field(sequence, 7, what="trace sequence")
            records.append(
                return_entry_record(entry=entry, odfi_routing=originator.odfi_routing, trace=trace)
            )
            records.append(return_addenda_record(entry=entry, item=item, trace=trace))
            batch_debit += entry.amount_minor
        batch_hash = len(items) * int(odfi8)
        records.append(
            batch_control_record(
                count=2 * len(items),
                entry_hash=batch_hash,
                debit_minor=batch_debit,
                company_id=company_id,
                odfi8=rdfi8,
                batch_number=batch_number,
            )
        )
        file_count += 2 * len(items)
        file_hash += batch_hash
        file_debit += batch_debit

    records.append(
        file_control_record(
            batch_count=len(groups),
            record_count=len(records) + 1,
            count=file_count,
            entry_hash=file_hash,
            debit_minor=file_debit,
        )
    )
    return file_text(blocked(records))
