"""NACHA return files: parse a bank's returns (and notifications of change). Building one
from a file we sent, for tests and the sandbox, is ``rails.ach.returns_build``'s.

Pure: no Django, no clock, frozen dataclasses out.

A return entry (transaction code 21/26/31/36/...: second digit 1 or 6) carries the
original entry's account, amount and names; its 99 addenda names the R-code, the
original trace number (the link to our invoice) and the first 8 digits of the
receiver's bank. A notification of change (addenda 98, SEC code COR) moves no money:
it tells us a corrected routing or account number to use from now on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

from rails.ach.nacha_records import (
    RECORD_LENGTH,
    aba_check_digit,
)

RETURN_REASONS: dict[str, str] = {
    "R01": "Insufficient funds",
    "R02": "Account closed",
    "R03": "No account / unable to locate account",
    "R04": "Invalid account number structure",
    "R05": "Unauthorized debit to consumer account using corporate SEC code",
    "R06": "Returned per ODFI's request",
    "R07": "Authorization revoked by customer",
    "R08": "Payment stopped",
    "R09": "Uncollected funds",
    "R10": "Customer advises originator is not known to receiver and/or is not "
    "authorized by receiver to debit receiver's account",
    "R11": "Customer advises entry not in accordance with the terms of the authorization",
    "R12": "Account sold to another DFI",
    "R13": "Invalid ACH routing number",
    "R14": "Representative payee deceased or unable to continue in that capacity",
    "R15": "Beneficiary or account holder (other than a representative payee) deceased",
    "R16": "Account frozen / entry returned per OFAC instruction",
    "R17": "File record edit criteria / entry with invalid account number initiated "
    "under questionable circumstances",
    "R18": "Improper effective entry date",
    "R19": "Amount field error",
    "R20": "Non-transaction account",
    "R21": "Invalid company identification",
    "R22": "Invalid individual ID number",
    "R23": "Credit entry refused by receiver",
    "R24": "Duplicate entry",
    "R25": "Addenda error",
    "R26": "Mandatory field error",
    "R27": "Trace number error",
    "R28": "Routing number check digit error",
    "R29": "Corporate customer advises not authorized",
    "R30": "RDFI not participant in check truncation program",
    "R31": "Permissible return entry (CCD and CTX only)",
    "R32": "RDFI non-settlement",
    "R33": "Return of XCK entry",
    "R34": "Limited participation DFI",
    "R35": "Return of improper debit entry",
    "R36": "Return of improper credit entry",
    "R37": "Source document presented for payment",
    "R38": "Stop payment on source document",
    "R39": "Improper source document / source document presented for payment",
    "R40": "Return of ENR entry by federal government agency",
    "R41": "Invalid transaction code (ENR)",
    "R42": "Routing number / check digit error (ENR)",
    "R43": "Invalid DFI account number (ENR)",
    "R44": "Invalid individual ID number / identification number (ENR)",
    "R45": "Invalid individual name / company name (ENR)",
    "R46": "Invalid representative payee indicator (ENR)",
    "R47": "Duplicate enrollment (ENR)",
    "R50": "State law affecting RCK acceptance",
    "R51": "Item related to RCK entry is ineligible or RCK entry is improper",
    "R52": "Stop payment on item related to RCK entry",
    "R53": "Item and RCK entry presented for payment",
    "R61": "Misrouted return",
    "R62": "Return of erroneous or reversing debit",
    "R67": "Duplicate return",
    "R68": "Untimely return",
    "R69": "Field error(s)",
    "R70": "Permissible return entry not accepted / return not requested by ODFI",
    "R71": "Misrouted dishonored return",
    "R72": "Untimely dishonored return",
    "R73": "Timely original return",
    "R74": "Corrected return",
    "R75": "Return not a duplicate",
    "R76": "No errors found",
    "R77": "Non-acceptance of R62 dishonored return",
    "R80": "IAT entry coding error",
    "R81": "Non-participant in IAT program",
    "R82": "Invalid foreign receiving DFI identification",
    "R83": "Foreign receiving DFI unable to settle",
    "R84": "Entry not processed by gateway",
    "R85": "Incorrectly coded outbound international payment",
}
CHANGE_REASONS: dict[str, str] = {
    "C01": "Incorrect DFI account number",
    "C02": "Incorrect routing number",
    "C03": "Incorrect routing number and DFI account number",
    "C04": "Incorrect individual name / receiving company name",
    "C05": "Incorrect transaction code",
    "C06": "Incorrect DFI account number and transaction code",
    "C07": "Incorrect routing number, DFI account number and transaction code",
    "C08": "Incorrect receiving DFI identification (IAT only)",
    "C09": "Incorrect individual identification number",
    "C10": "Incorrect company name",
    "C11": "Incorrect company identification",
    "C12": "Incorrect company name and company identification",
    "C13": "Addenda format error",
    "C14": "Incorrect SEC code for outbound international payment",
}
# NACHA lets an originator re-present a debit returned for these, at most twice.
RETRY_PERMITTED_CODES = frozenset({"R01", "R09"})
_PADDING = "9" * RECORD_LENGTH
_DIGITS = re.compile(r"[0-9]+")
_REASON_CODE = re.compile(r"[RC][0-9]{2}")


class NachaParseError(ValueError):
    """A malformed return file; `line_number` (1-based) says where, when known."""

    def __init__(self, line_number: int | None, message: str) -> None:
        self.line_number = line_number
        super().__init__(f"line {line_number}: {message}" if line_number else message)


@dataclass(frozen=True)
class AchReturn:
    """One returned entry."""

    original_trace_number: str  # the trace number of our debit: the link to its invoice
    return_code: str  # R01, R02, ...
    reason: str  # RETURN_REASONS' description, or "Unrecognized return reason code"
    amount_minor: int  # cents, as in the original entry
    routing: str  # the receiver's bank (9 digits: the addenda's 8 and their check digit)
    account_last4: str
    return_trace_number: str  # the return entry's own trace number
    transaction_code: str  # of the return entry, e.g. 26 for a returned checking debit
    sec_code: str
    company_id: str
    receiver_id: str
    receiver_name: str
    addenda_information: str
    date_of_death: date | None
    effective_date: date | None  # the return batch's effective entry date
    line_number: int  # of the return entry record

    @property
    def retry_permitted(self) -> bool:
        """True when NACHA lets the debit be re-presented (R01, R09)."""
        return self.return_code in RETRY_PERMITTED_CODES


@dataclass(frozen=True)
class AchNotificationOfChange:
    """One notification of change (NOC): correct these details before the next debit."""

    original_trace_number: str
    change_code: str  # C01, C02, ...
    reason: str
    corrected_data: str  # e.g. the new account number (C01) or routing number (C02)
    routing: str
    account_last4: str
    return_trace_number: str
    line_number: int


@dataclass(frozen=True)
class AchReturnFile:
    created_at: datetime  # the file header's creation date and time (midnight if no time)
    returns: tuple[AchReturn, ...]
    notifications_of_change: tuple[AchNotificationOfChange, ...]


# --- parsing -----------------------------------------------------------------------


def _digits(line_number: int, record: str, start: int, end: int, what: str) -> str:
    """Positions `start`..`end` (1-based, inclusive) as a string of digits."""
    value = record[start - 1 : end]
    if not _DIGITS.fullmatch(value):
        raise NachaParseError(
            line_number, f"{what} (positions {start}-{end}) must be digits, got {value!r}"
        )
    return value


def _date(line_number: int, value: str, what: str) -> date:
    try:
        return datetime.strptime(value, "%y%m%d").date()
    except ValueError:
        raise NachaParseError(line_number, f"{what} {value!r} is not a YYMMDD date") from None


def _optional_date(line_number: int, value: str, what: str) -> date | None:
    return _date(line_number, value, what) if value.strip() else None


def _is_debit(transaction_code: str) -> bool:
    return transaction_code[1] in "6789"


def _records(text: str) -> list[tuple[int, str]]:
    if not isinstance(text, str):
        raise NachaParseError(None, f"expected the file's text, got {type(text).__name__}")
    lines = text.split("\n")
    while lines and not lines[-1].strip("\r"):
        lines.pop()
    if not lines:
        raise NachaParseError(None, "the file is empty")
    records: list[tuple[int, str]] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.removesuffix("\r")
        if len(line) != RECORD_LENGTH:
            raise NachaParseError(
                number, f"record is {len(line)} characters long, expected {RECORD_LENGTH}"
            )
        if not line.isascii():
            raise NachaParseError(number, "record contains non-ASCII characters")
        records.append((number, line))
    return records


@dataclass
class _Batch:
    """A batch being read, or (for the file control) the whole file's sums."""

    sec_code: str
    company_id: str
    effective_date: date | None
    count: int = 0
    entry_hash: int = 0
    debit: int = 0
    credit: int = 0


def _created_at(header_line: int, header: str) -> datetime:
    """The file header's creation date and time (midnight when the time is left out)."""
    if header[0] != "1":
        raise NachaParseError(
            header_line, f"a NACHA file starts with a file header (1), not {header[0]!r}"
        )
    try:
        return datetime.strptime(header[23:33], "%y%m%d%H%M")
    except ValueError:  # the creation time is optional; the date is not
        created_date = _date(header_line, header[23:29], "file creation date")
        return datetime.combine(created_date, datetime.min.time())


class _Reader:
    """A return file read record by record after its header: the batch open, the entry
    waiting for its addenda, the returns and NOCs found, and the file's running sums."""

    def __init__(self) -> None:
        self.returns: list[AchReturn] = []
        self.changes: list[AchNotificationOfChange] = []
        self.batch: _Batch | None = None
        self.entry: tuple[int, str] | None = None  # the entry record waiting for its addenda
        self.batches = 0
        self.totals = _Batch("", "", None)  # the whole file's sums, for the file control
        self.control_line: int | None = None

    def read(self, number: int, record: str) -> None:
        kind = record[0]
        if self.control_line is not None:
            if record != _PADDING:
                raise NachaParseError(
                    number, "only records of 94 nines may follow the file control record"
                )
            return
        if self.entry is not None and kind != "7":
            raise NachaParseError(
                self.entry[0], "entry has its addenda record indicator set but no addenda follows"
            )
        if kind == "1":
            raise NachaParseError(number, "a second file header (1); a file has exactly one")
        read = {
            "5": self._batch_header,
            "6": self._entry,
            "7": self._addenda,
            "8": self._batch_control,
            "9": self._file_control,
        }.get(kind)
        if read is None:
            raise NachaParseError(
                number, f"unknown record type {kind!r} (expected 1, 5, 6, 7, 8 or 9)"
            )
        read(number, record)

    def _batch_header(self, number: int, record: str) -> None:
        if self.batch is not None:
            raise NachaParseError(number, "batch header before the previous batch's control (8)")
        self.batch = _Batch(
            sec_code=record[50:53],
            company_id=record[40:50].strip(),
            effective_date=_optional_date(number, record[69:75], "effective entry date"),
        )

    def _entry(self, number: int, record: str) -> None:
        batch = self.batch
        if batch is None:
            raise NachaParseError(number, "entry detail (6) outside a batch")
        code = _digits(number, record, 2, 3, "transaction code")
        if code[1] not in "16":
            raise NachaParseError(
                number,
                f"transaction code {code} is not a return or notification of change "
                "(its second digit must be 1 or 6); is this an origination file?",
            )
        amount = int(_digits(number, record, 30, 39, "amount"))
        _digits(number, record, 4, 12, "receiving DFI routing number")
        _digits(number, record, 80, 94, "trace number")
        if record[78] != "1":
            raise NachaParseError(
                number,
                "a return entry must have an addenda (indicator at position 79 must be 1)",
            )
        batch.count += 1
        batch.entry_hash += int(record[3:11])
        if _is_debit(code):
            batch.debit += amount
        else:
            batch.credit += amount
        self.entry = (number, record)

    def _addenda(self, number: int, record: str) -> None:
        if self.entry is None or self.batch is None:
            raise NachaParseError(number, "addenda (7) without an entry detail record before it")
        self.batch.count += 1
        item = _addenda_parse(number, record, self.entry[0], self.entry[1], self.batch)
        self.entry = None
        if isinstance(item, AchReturn):
            self.returns.append(item)
        else:
            self.changes.append(item)

    def _batch_control(self, number: int, record: str) -> None:
        batch = self.batch
        if batch is None:
            raise NachaParseError(number, "batch control (8) without a batch header")
        _control_check(
            number, record[4:10], record[10:20], record[20:32], record[32:44], batch, "batch"
        )
        self.batches += 1
        self.totals.count += batch.count
        self.totals.entry_hash += batch.entry_hash
        self.totals.debit += batch.debit
        self.totals.credit += batch.credit
        self.batch = None

    def _file_control(self, number: int, record: str) -> None:
        if self.batch is not None:
            raise NachaParseError(number, "file control (9) before the last batch's control (8)")
        _control_check(
            number, record[13:21], record[21:31], record[31:43], record[43:55], self.totals, "file"
        )
        if int(_digits(number, record, 2, 7, "batch count")) != self.batches:
            raise NachaParseError(
                number,
                f"file control batch count {record[1:7]} but the file has {self.batches} batches",
            )
        _digits(number, record, 8, 13, "block count")  # checked once the padding is read
        self.control_line = number


def nacha_return_file_parse(text: str) -> AchReturnFile:
    """Parse a NACHA return file (LF or CRLF) into its returns and NOCs.

    Checks the record layout and order, every field it reads, and each batch and the
    file control's counts, entry hashes and totals, so a truncated or edited file is
    refused rather than half applied.

    Raises NachaParseError (a ValueError) naming the line of the first problem.
    """
    records = _records(text)
    created_at = _created_at(*records[0])
    reader = _Reader()
    for number, record in records[1:]:
        reader.read(number, record)
    control_line = reader.control_line
    if control_line is None:
        raise NachaParseError(records[-1][0], "the file ends without a file control (9) record")
    block_count = records[control_line - 1][1][7:13]
    if int(block_count) != -(-len(records) // 10):
        raise NachaParseError(
            control_line,
            f"file control block count {block_count} but the file has {len(records)} records",
        )
    return AchReturnFile(
        created_at=created_at,
        returns=tuple(reader.returns),
        notifications_of_change=tuple(reader.changes),
    )


def _control_check(
    number: int, count: str, hash_: str, debit: str, credit: str, totals: _Batch, what: str
) -> None:
    """A batch or file control's count, hash and totals against what its records add up to."""
    fields = (
        (count, totals.count, "entry/addenda count"),
        (hash_, totals.entry_hash % 10**10, "entry hash"),
        (debit, totals.debit, "total debit"),
        (credit, totals.credit, "total credit"),
    )
    for value, _, label in fields:
        if not _DIGITS.fullmatch(value):
            raise NachaParseError(number, f"{what} control {label} must be digits, got {value!r}")
    mismatches = [
        f"{label} {int(value)} but the records add up to {actual}"
        for value, actual, label in fields
        if int(value) != actual
    ]
    if mismatches:
        raise NachaParseError(
            number, f"{what} control does not match its records: " + "; ".join(mismatches)
        )


def _addenda_parse(
    number: int, record: str, entry_line: int, entry: str, batch: _Batch
) -> AchReturn | AchNotificationOfChange:
    addenda_type = record[1:3]
    if addenda_type not in ("98", "99"):
        raise NachaParseError(
            number,
            f"addenda type {addenda_type!r} is neither a return (99) nor a notification of change (98)",
        )
    code = record[3:6]
    if not _REASON_CODE.fullmatch(code) or code[0] != ("R" if addenda_type == "99" else "C"):
        raise NachaParseError(
            number,
            f"{'return reason' if addenda_type == '99' else 'change'} code {code!r} is malformed",
        )
    original_trace = _digits(number, record, 7, 21, "original entry trace number")
    routing8 = _digits(number, record, 28, 35, "original receiving DFI identification")
    common = {
        "original_trace_number": original_trace,
        "routing": routing8 + str(aba_check_digit(routing8)),
        "account_last4": entry[12:29].strip()[-4:],
        "return_trace_number": entry[79:94],
        "line_number": entry_line,
    }
    if addenda_type == "98":
        return AchNotificationOfChange(
            change_code=code,
            reason=CHANGE_REASONS.get(code, "Unrecognized change code"),
            corrected_data=record[35:64].strip(),
            **common,
        )
    return AchReturn(
        return_code=code,
        reason=RETURN_REASONS.get(code, "Unrecognized return reason code"),
        amount_minor=int(entry[29:39]),
        transaction_code=entry[1:3],
        sec_code=batch.sec_code,
        company_id=batch.company_id,
        receiver_id=entry[39:54].strip(),
        receiver_name=entry[54:76].strip(),
        addenda_information=record[35:79].strip(),
        date_of_death=_optional_date(number, record[21:27], "date of death"),
        effective_date=batch.effective_date,
        **common,
    )
