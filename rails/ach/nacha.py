"""NACHA (ACH) origination file builder for invoice debits.

Pure: no Django, no clock (the creation time and the effective date are arguments),
frozen dataclasses in and out, money in integer minor units (cents) only.

What a built file looks like:

- 94-character records, each ended by CRLF (also the last one). Bank implementation
  guides ask for CRLF (or accept both); CRLF survives Windows-side tooling and FTP
  ASCII transfers unchanged, and every parser that takes LF takes CRLF.
- File header (1); one batch per SEC code, CCD before PPD, numbered from 1, each a
  batch header (5), its entries (6) in the order given, each followed by its addenda
  (7) if it has one, and a batch control (8); the file control (9); then records of
  94 nines up to a multiple of 10 records (blocking factor 10).
- Service class 225 (debits only); transaction code 27 (checking) or 37 (savings).
- CCD entries are CCD+: one 05 addenda whose payment related information is
  ``INV <invoice number>`` (or the debit's own `addenda` text). A PPD entry has an
  addenda only when the debit gives one.
- Trace numbers are the ODFI's first 8 routing digits and a 7-digit sequence that runs
  across the whole file from `first_trace_sequence`, so each is unique in the file and
  ascending in its batch. They come back in return files: `NachaFile.entries` links
  each trace number to its invoice.

Text fields are upper-cased, runs of whitespace become one space, and only A-Z, 0-9,
space and ``& ' ( ) * + , - . / : ; = ? @ ! # % _ $`` are accepted (what every bank's
edit checks let through). Names and descriptions are truncated to their widths;
identifiers (routing, account, company id, invoice number) are never truncated:
one too long is an error, because a cut identifier would name something else.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

from rails.ach.calendar import is_banking_day

RECORD_LENGTH = 94
BLOCKING_FACTOR = 10
LINE_ENDING = "\r\n"
SERVICE_CLASS_DEBITS_ONLY = "225"
SEC_CODES = ("CCD", "PPD")
TRANSACTION_CODES = {"checking": "27", "savings": "37"}
MAX_ENTRY_AMOUNT_MINOR = 9_999_999_999  # 10 digits
MAX_TRACE_SEQUENCE = 9_999_999  # 7 digits

ALLOWED_TEXT_CHARACTERS = frozenset(
    string.ascii_uppercase + string.digits + " &'()*+,-./:;=?@!#%_$"
)
_ABA_WEIGHTS = (3, 7, 1, 3, 7, 1, 3, 7)
# ABA-assigned prefixes: 00 U.S. Government, 01-12 Federal Reserve districts,
# 21-32 thrift institutions, 61-72 electronic transactions.
_ROUTING_PREFIXES = frozenset(range(0, 13)) | frozenset(range(21, 33)) | frozenset(range(61, 73))
_DIGITS_8 = re.compile(r"[0-9]{8}")
_DIGITS_9 = re.compile(r"[0-9]{9}")
_ACCOUNT = re.compile(r"[A-Z0-9-]{1,17}")
_ORIGIN_ALNUM = re.compile(r"[A-Z0-9]{10}")
_FILE_ID_MODIFIER = re.compile(r"[A-Z0-9]")


# --- field helpers (shared with rails.ach.returns) ---------------------------------


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
    if not isinstance(routing, str) or not _DIGITS_9.fullmatch(routing):
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


# --- inputs and outputs ------------------------------------------------------------


@dataclass(frozen=True)
class AchOriginator:
    """Who sends the file (us) and to which bank (the ODFI)."""

    immediate_destination: str  # the ODFI's routing number (9 digits)
    immediate_destination_name: str  # the ODFI's name, up to 23 characters
    immediate_origin: str  # 10 characters (e.g. "1" + EIN) or a 9-digit routing number
    immediate_origin_name: str  # our name, up to 23 characters
    company_name: str  # up to 16 characters; shown on the receiver's statement
    company_id: str  # up to 10 characters, assigned by the ODFI
    odfi_routing: str  # the ODFI's routing number; its first 8 digits start trace numbers


@dataclass(frozen=True)
class AchDebit:
    """One invoice to collect by ACH debit."""

    invoice_number: str
    amount_minor: int  # cents, > 0
    receiver_name: str  # the account holder, up to 22 characters
    receiver_id: str  # our customer key, shown to the receiver, up to 15 characters
    routing_number: str
    account_number: str = field(repr=False)
    account_type: Literal["checking", "savings"]
    sec_code: Literal["CCD", "PPD"]
    addenda: str | None = None  # payment related information; CCD defaults to "INV <number>"


@dataclass(frozen=True)
class NachaEntry:
    """One entry of a built file, to link its trace number to its invoice."""

    invoice_number: str
    trace_number: str  # 15 digits
    batch_number: int
    sec_code: str
    transaction_code: str
    amount_minor: int
    receiver_id: str  # as written in the file (upper-cased, cut to 15)
    receiver_name: str  # as written in the file (upper-cased, cut to 22)
    routing_number: str
    account_number: str = field(repr=False)

    @property
    def account_last4(self) -> str:
        return self.account_number[-4:]


@dataclass(frozen=True)
class NachaFile:
    """A built NACHA file: its text and what it contains."""

    content: str
    entries: tuple[NachaEntry, ...]
    originator: AchOriginator
    created_at: datetime
    effective_date: date
    file_id_modifier: str
    company_entry_description: str
    batch_count: int
    block_count: int
    entry_addenda_count: int
    entry_hash: int
    total_debit_minor: int
    total_credit_minor: int

    @property
    def lines(self) -> tuple[str, ...]:
        """The records without their line endings."""
        return tuple(self.content.split(LINE_ENDING)[:-1])

    @property
    def trace_numbers_by_invoice(self) -> Mapping[str, str]:
        return {entry.invoice_number: entry.trace_number for entry in self.entries}

    def encode(self) -> bytes:
        """The bytes to hand the bank (ASCII)."""
        return self.content.encode("ascii")


# --- building ----------------------------------------------------------------------


def _originator_checked(originator: AchOriginator) -> None:
    for name in ("immediate_destination", "odfi_routing"):
        try:
            routing_number_validate(getattr(originator, name))
        except ValueError as exc:
            raise ValueError(f"originator.{name}: {exc}") from None
    origin = originator.immediate_origin
    if not isinstance(origin, str) or not (
        _DIGITS_9.fullmatch(origin) or _ORIGIN_ALNUM.fullmatch(origin)
    ):
        raise ValueError(
            f"originator.immediate_origin {origin!r} must be 10 letters or digits "
            "(e.g. '1' and the EIN) or a 9-digit routing number"
        )
    if not isinstance(originator.company_id, str) or not originator.company_id.strip():
        raise ValueError("originator.company_id must not be blank")
    if not originator.company_name.strip():
        raise ValueError("originator.company_name must not be blank")


def _entry_fields(index: int, debit: AchDebit) -> dict[str, str]:
    """The debit's fields at their widths. Raises ValueError naming the entry."""
    label = f"debit #{index}"
    if isinstance(debit.invoice_number, str) and debit.invoice_number.strip():
        label = f"debit #{index} (invoice {debit.invoice_number!r})"

    def fail(message: str) -> ValueError:
        return ValueError(f"{label}: {message}")

    if not isinstance(debit.invoice_number, str) or not debit.invoice_number.strip():
        raise fail("invoice_number must not be blank")
    amount = debit.amount_minor
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise fail(f"amount_minor must be an int of cents, got {type(amount).__name__} {amount!r}")
    if amount <= 0:
        raise fail(f"amount_minor must be > 0, got {amount}")
    if amount > MAX_ENTRY_AMOUNT_MINOR:
        raise fail(f"amount_minor {amount} does not fit the 10-digit amount field")
    if debit.sec_code not in SEC_CODES:
        raise fail(f"sec_code must be one of {', '.join(SEC_CODES)}, got {debit.sec_code!r}")
    if debit.account_type not in TRANSACTION_CODES:
        raise fail(f"account_type must be 'checking' or 'savings', got {debit.account_type!r}")
    try:
        routing_number_validate(debit.routing_number)
    except ValueError as exc:
        raise fail(str(exc)) from None
    account = debit.account_number.strip().upper() if isinstance(debit.account_number, str) else ""
    if not _ACCOUNT.fullmatch(account):
        raise fail("account_number must be 1 to 17 letters, digits or hyphens")
    try:
        name = alphanumeric_field(debit.receiver_name, 22, what="receiver_name")
        receiver_id = alphanumeric_field(debit.receiver_id, 15, what="receiver_id")
        invoice = alphanumeric_field(
            debit.invoice_number, 76, what="invoice_number", truncate=False
        )
        addenda = debit.addenda
        if addenda is None and debit.sec_code == "CCD":
            addenda = f"INV {invoice.strip()}"
        info = None if addenda is None else alphanumeric_field(addenda, 80, what="addenda")
    except ValueError as exc:
        raise fail(str(exc)) from None
    if not name.strip():
        raise fail("receiver_name must not be blank")
    if info is not None and not info.strip():
        raise fail("addenda must not be blank (pass None for no addenda)")
    fields = {
        "transaction_code": TRANSACTION_CODES[debit.account_type],
        "account": account.ljust(17),
        "amount": numeric_field(amount, 10, what="amount"),
        "receiver_id": receiver_id,
        "name": name,
        "invoice": invoice.strip(),
    }
    if info is not None:
        fields["addenda"] = info
    return fields


def nacha_file_build(
    *,
    originator: AchOriginator,
    debits: Sequence[AchDebit],
    created_at: datetime,
    effective_date: date,
    file_id_modifier: str,
    company_entry_description: str = "INVOICE",
    first_trace_sequence: int = 1,
) -> NachaFile:
    """Build the NACHA file that debits each of `debits` on `effective_date`.

    `created_at` is written as the file creation date and time, as given (pass the
    time in the zone the bank expects). `file_id_modifier` (A-Z, 0-9) tells apart
    files sent the same day. `first_trace_sequence` starts the 7-digit trace sequence;
    pass a counter that never repeats to keep trace numbers unique across files.

    Raises ValueError, naming the debit or the originator field, for: no debits, a
    duplicate invoice number, a routing number that fails its check, an amount that
    is not a positive int of cents or does not fit 10 digits, an unsupported SEC code
    or account type, disallowed characters, an identifier too long for its field, an
    effective date that is not a banking day or is before the creation date, or a
    batch too large for its control totals.
    """
    if not debits:
        raise ValueError("a NACHA file needs at least one debit")
    _originator_checked(originator)
    if not isinstance(file_id_modifier, str) or not _FILE_ID_MODIFIER.fullmatch(file_id_modifier):
        raise ValueError(
            f"file_id_modifier must be one character A-Z or 0-9, got {file_id_modifier!r}"
        )
    if not isinstance(created_at, datetime) or type(effective_date) is not date:
        raise ValueError("created_at must be a datetime and effective_date a date")
    if not is_banking_day(effective_date):
        raise ValueError(f"effective_date {effective_date.isoformat()} is not a banking day")
    if effective_date < created_at.date():
        raise ValueError(
            f"effective_date {effective_date.isoformat()} is before the file creation date "
            f"{created_at.date().isoformat()}"
        )
    if isinstance(first_trace_sequence, bool) or not isinstance(first_trace_sequence, int):
        raise ValueError("first_trace_sequence must be an int")
    if first_trace_sequence < 1 or first_trace_sequence + len(debits) - 1 > MAX_TRACE_SEQUENCE:
        raise ValueError(
            f"trace sequence {first_trace_sequence}..{first_trace_sequence + len(debits) - 1} "
            f"does not fit 1..{MAX_TRACE_SEQUENCE}"
        )
    description = alphanumeric_field(
        company_entry_description, 10, what="company_entry_description"
    )
    if not description.strip():
        raise ValueError("company_entry_description must not be blank")

    checked = [(debit, _entry_fields(index, debit)) for index, debit in enumerate(debits, start=1)]
    seen: set[str] = set()
    for index, (_, fields) in enumerate(checked, start=1):
        if fields["invoice"] in seen:
            raise ValueError(
                f"debit #{index}: invoice {fields['invoice']!r} appears more than once"
            )
        seen.add(fields["invoice"])

    odfi8 = originator.odfi_routing[:8]
    company_name = alphanumeric_field(originator.company_name, 16, what="originator.company_name")
    company_id = alphanumeric_field(
        originator.company_id, 10, what="originator.company_id", truncate=False
    )
    records = [
        file_header_record(
            destination=originator.immediate_destination,
            origin=originator.immediate_origin,
            created_at=created_at,
            file_id_modifier=file_id_modifier,
            destination_name=originator.immediate_destination_name,
            origin_name=originator.immediate_origin_name,
        )
    ]
    entries: list[NachaEntry] = []
    sequence = first_trace_sequence
    file_hash = file_debit = file_count = batch_number = 0
    for sec_code in SEC_CODES:
        batch = [(debit, fields) for debit, fields in checked if debit.sec_code == sec_code]
        if not batch:
            continue
        batch_number += 1
        records.append(
            batch_header_record(
                company_name=company_name,
                company_id=company_id,
                sec_code=sec_code,
                description=description,
                effective_date=effective_date,
                odfi8=odfi8,
                batch_number=batch_number,
            )
        )
        batch_hash = batch_debit = batch_count = 0
        for debit, fields in batch:
            trace = odfi8 + numeric_field(sequence, 7, what="trace sequence")
            sequence += 1
            has_addenda = "addenda" in fields
            records.append(
                "6"
                + fields["transaction_code"]
                + debit.routing_number
                + fields["account"]
                + fields["amount"]
                + fields["receiver_id"]
                + fields["name"]
                + "  "  # discretionary data
                + ("1" if has_addenda else "0")
                + trace
            )
            if has_addenda:
                records.append("7" + "05" + fields["addenda"] + "0001" + trace[-7:])
            batch_count += 2 if has_addenda else 1
            batch_hash += int(debit.routing_number[:8])
            batch_debit += debit.amount_minor
            entries.append(
                NachaEntry(
                    invoice_number=debit.invoice_number,  # as billing knows it: the link back
                    trace_number=trace,
                    batch_number=batch_number,
                    sec_code=sec_code,
                    transaction_code=fields["transaction_code"],
                    amount_minor=debit.amount_minor,
                    receiver_id=fields["receiver_id"].rstrip(),
                    receiver_name=fields["name"].rstrip(),
                    routing_number=debit.routing_number,
                    account_number=fields["account"].rstrip(),
                )
            )
        records.append(
            batch_control_record(
                count=batch_count,
                entry_hash=batch_hash,
                debit_minor=batch_debit,
                company_id=company_id,
                odfi8=odfi8,
                batch_number=batch_number,
            )
        )
        file_hash += batch_hash
        file_debit += batch_debit
        file_count += batch_count

    records.append(
        file_control_record(
            batch_count=batch_number,
            record_count=len(records) + 1,
            count=file_count,
            entry_hash=file_hash,
            debit_minor=file_debit,
        )
    )
    return NachaFile(
        content=file_text(blocked(records)),
        entries=tuple(entries),
        originator=originator,
        created_at=created_at,
        effective_date=effective_date,
        file_id_modifier=file_id_modifier,
        company_entry_description=description.rstrip(),
        batch_count=batch_number,
        block_count=-(-len(records) // BLOCKING_FACTOR),
        entry_addenda_count=file_count,
        entry_hash=file_hash % 10**10,
        total_debit_minor=file_debit,
        total_credit_minor=0,
    )
