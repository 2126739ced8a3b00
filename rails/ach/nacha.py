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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

from rails.ach.calendar import is_banking_day
from rails.ach.nacha_records import (
    BLOCKING_FACTOR,
    DIGITS_9,
    LINE_ENDING,
    addenda_record,
    alphanumeric_field,
    batch_control_record,
    batch_header_record,
    blocked,
    entry_detail_record,
    file_control_record,
    file_header_record,
    file_text,
    numeric_field,
    routing_number_validate,
)

SEC_CODES = ("CCD", "PPD")
TRANSACTION_CODES = {"checking": "27", "savings": "37"}
MAX_ENTRY_AMOUNT_MINOR = 9_999_999_999  # 10 digits
MAX_TRACE_SEQUENCE = 9_999_999  # 7 digits
_ACCOUNT = re.compile(r"[A-Z0-9-]{1,17}")
_ORIGIN_ALNUM = re.compile(r"[A-Z0-9]{10}")
_FILE_ID_MODIFIER = re.compile(r"[A-Z0-9]")


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
        DIGITS_9.fullmatch(origin) or _ORIGIN_ALNUM.fullmatch(origin)
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


def _build_arguments_checked(
    *,
    originator: AchOriginator,
    debits: Sequence[AchDebit],
    created_at: datetime,
    effective_date: date,
    file_id_modifier: str,
    company_entry_description: str,
    first_trace_sequence: int,
) -> str:
    """Check the originator and the file's own arguments (each debit is checked on its
    own); answer the company entry description at its width."""
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
    return description


def _file_header(originator: AchOriginator, created_at: datetime, file_id_modifier: str) -> str:
    """The file header: from the originator (us) to its bank (the ODFI)."""
    return file_header_record(
        destination=originator.immediate_destination,
        origin=originator.immediate_origin,
        created_at=created_at,
        file_id_modifier=file_id_modifier,
        destination_name=originator.immediate_destination_name,
        origin_name=originator.immediate_origin_name,
    )


def _debits_checked(debits: Sequence[AchDebit]) -> list[tuple[AchDebit, dict[str, str]]]:
    """Each debit with its fields at their widths; an invoice may appear only once."""
    checked = [(debit, _entry_fields(index, debit)) for index, debit in enumerate(debits, start=1)]
    seen: set[str] = set()
    for index, (_, fields) in enumerate(checked, start=1):
        if fields["invoice"] in seen:
            raise ValueError(
                f"debit #{index}: invoice {fields['invoice']!r} appears more than once"
            )
        seen.add(fields["invoice"])
    return checked


@dataclass
class _Batch:
    """One batch as built: its records (header to control), entries and control totals."""

    records: list[str]
    entries: list[NachaEntry]
    count: int  # entries and addenda
    entry_hash: int
    debit_minor: int


def _batch_build(
    batch: list[tuple[AchDebit, dict[str, str]]],
    *,
    header: str,
    sec_code: str,
    batch_number: int,
    odfi8: str,
    company_id: str,
    first_sequence: int,
) -> _Batch:
    """A batch's entries (each with its addenda, if any) between its header and its
    control, trace numbers running on from ``first_sequence``."""
    built = _Batch(records=[header], entries=[], count=0, entry_hash=0, debit_minor=0)
    sequence = first_sequence
    for debit, fields in batch:
        trace = odfi8 + numeric_field(sequence, 7, what="trace sequence")
        sequence += 1
        has_addenda = "addenda" in fields
        built.records.append(
            entry_detail_record(
                transaction_code=fields["transaction_code"],
                routing_number=debit.routing_number,
                account=fields["account"],
                amount=fields["amount"],
                receiver_id=fields["receiver_id"],
                name=fields["name"],
                has_addenda=has_addenda,
                trace=trace,
            )
        )
        if has_addenda:
            built.records.append(addenda_record(info=fields["addenda"], trace=trace))
        built.count += 2 if has_addenda else 1
        built.entry_hash += int(debit.routing_number[:8])
        built.debit_minor += debit.amount_minor
        built.entries.append(
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
    built.records.append(
        batch_control_record(
            count=built.count,
            entry_hash=built.entry_hash,
            debit_minor=built.debit_minor,
            company_id=company_id,
            odfi8=odfi8,
            batch_number=batch_number,
        )
    )
    return built


def _batches_build(
    checked: list[tuple[AchDebit, dict[str, str]]],
    *,
    odfi8: str,
    company_name: str,
    company_id: str,
    description: str,
    effective_date: date,
    first_sequence: int,
) -> list[_Batch]:
    """One batch per SEC code present, CCD first, numbered from 1; trace numbers run on
    across the batches from ``first_sequence``. Text arguments come at their widths."""
    batches: list[_Batch] = []
    sequence = first_sequence
    for sec_code in SEC_CODES:
        batch = [(debit, fields) for debit, fields in checked if debit.sec_code == sec_code]
        if not batch:
            continue
        batch_number = len(batches) + 1
        header = batch_header_record(
            company_name=company_name,
            company_id=company_id,
            sec_code=sec_code,
            description=description,
            effective_date=effective_date,
            odfi8=odfi8,
            batch_number=batch_number,
        )
        batches.append(
            _batch_build(
                batch,
                header=header,
                sec_code=sec_code,
                batch_number=batch_number,
                odfi8=odfi8,
                company_id=company_id,
                first_sequence=sequence,
            )
        )
        sequence += len(batch)
    return batches


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
    description = _build_arguments_checked(
        originator=originator,
        debits=debits,
        created_at=created_at,
        effective_date=effective_date,
        file_id_modifier=file_id_modifier,
        company_entry_description=company_entry_description,
        first_trace_sequence=first_trace_sequence,
    )
    checked = _debits_checked(debits)
    company_name = alphanumeric_field(originator.company_name, 16, what="originator.company_name")
    company_id = alphanumeric_field(
        originator.company_id, 10, what="originator.company_id", truncate=False
    )
    records = [_file_header(originator, created_at, file_id_modifier)]
    batches = _batches_build(
        checked,
        odfi8=originator.odfi_routing[:8],
        company_name=company_name,
        company_id=company_id,
        description=description,
        effective_date=effective_date,
        first_sequence=first_trace_sequence,
    )
    records += [record for batch in batches for record in batch.records]
    entries = [entry for batch in batches for entry in batch.entries]
    file_count = sum(batch.count for batch in batches)
    file_hash = sum(batch.entry_hash for batch in batches)
    file_debit = sum(batch.debit_minor for batch in batches)
    records.append(
        file_control_record(
            batch_count=len(batches),
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
        batch_count=len(batches),
        block_count=-(-len(records) // BLOCKING_FACTOR),
        entry_addenda_count=file_count,
        entry_hash=file_hash % 10**10,
        total_debit_minor=file_debit,
        total_credit_minor=0,
    )
