"""NACHA return files: a bank's returns parsed back to the invoices they undo."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime
from pathlib import Path

import pytest

from rails.ach.nacha import AchDebit, AchOriginator, NachaFile, nacha_file_build
from rails.ach.returns import RETURN_REASONS, NachaParseError, nacha_return_file_parse
from rails.ach.returns_build import AchReturnInstruction, nacha_return_file_build

GOLDEN = Path(__file__).parent / "golden"

ORIGINATOR = AchOriginator(
    immediate_destination="021000021",
    immediate_destination_name="JPMorgan Chase",
    immediate_origin="1234567890",
    immediate_origin_name="Acme Billing Inc",
    company_name="Acme Billing",
    company_id="1234567890",
    odfi_routing="021000021",
)
GLOBEX = AchDebit(
    invoice_number="INV-2026-000001",
    amount_minor=123456,
    receiver_name="Globex Corporation",
    receiver_id="globex",
    routing_number="011000015",
    account_number="000123456789",
    account_type="checking",
    sec_code="CCD",
)
JANE = AchDebit(
    invoice_number="INV-2026-000002",
    amount_minor=5000,
    receiver_name="Jane Q. Public",
    receiver_id="jane-doe",
    routing_number="121000358",
    account_number="987654321",
    account_type="savings",
    sec_code="PPD",
)
INITECH = replace(GLOBEX, invoice_number="INV-2026-000003", amount_minor=99, receiver_id="initech")


def sent() -> NachaFile:
    return nacha_file_build(
        originator=ORIGINATOR,
        debits=[GLOBEX, JANE, INITECH],
        created_at=datetime(2026, 7, 2, 14, 30),
        effective_date=date(2026, 7, 3),
        file_id_modifier="A",
    )


def returned(original: NachaFile | None = None) -> str:
    original = original or sent()
    traces = original.trace_numbers_by_invoice
    return nacha_return_file_build(
        original=original,
        returns=[
            AchReturnInstruction(traces["INV-2026-000001"], "R01"),
            AchReturnInstruction(traces["INV-2026-000002"], "R10", "Customer says no"),
        ],
        created_at=datetime(2026, 7, 7, 9, 15),
    )


# --- round trip --------------------------------------------------------------------


def test_returns_lead_back_to_the_invoices_they_undo():
    original = sent()
    invoice_by_trace = {entry.trace_number: entry.invoice_number for entry in original.entries}

    parsed = nacha_return_file_parse(returned(original))

    assert [(invoice_by_trace[r.original_trace_number], r.return_code) for r in parsed.returns] == [
        ("INV-2026-000001", "R01"),
        ("INV-2026-000002", "R10"),
    ]
    assert parsed.notifications_of_change == ()
    assert parsed.created_at == datetime(2026, 7, 7, 9, 15)


def test_a_return_carries_what_an_operator_needs_to_act_on_it():
    insufficient_funds, unauthorized = nacha_return_file_parse(returned()).returns

    assert insufficient_funds.reason == "Insufficient funds"
    assert insufficient_funds.amount_minor == 123456
    assert insufficient_funds.routing == "011000015"
    assert insufficient_funds.account_last4 == "6789"
    assert insufficient_funds.transaction_code == "26"  # a returned checking debit
    assert insufficient_funds.sec_code == "CCD"
    assert insufficient_funds.company_id == "1234567890"
    assert insufficient_funds.receiver_id == "GLOBEX"
    assert insufficient_funds.retry_permitted is True
    assert insufficient_funds.line_number == 3
    assert unauthorized.reason.startswith("Customer advises originator is not known")
    assert unauthorized.addenda_information == "CUSTOMER SAYS NO"
    assert unauthorized.routing == "121000358"
    assert unauthorized.transaction_code == "36"  # a returned savings debit
    assert unauthorized.retry_permitted is False
    assert unauthorized.return_trace_number.startswith("12100035")  # the returning bank's


def test_return_file_matches_the_hand_checked_golden_file_byte_for_byte():
    # Checked by hand: header to us (destination 1234567890) from the ODFI; one batch
    # per returning bank (011000015's CCD, 121000358's PPD), each entry code 26/36
    # to the ODFI 021000021 with the original account, amount and names, and a 99
    # addenda: R-code, original trace, original RDFI 8 digits, return trace; batch
    # hash 0002100002 (the ODFI is the return's receiver); file hash 0004200004,
    # debits 128456, 10 records, 1 block.
    assert returned().encode() == (GOLDEN / "nacha_returns.ach").read_bytes()


def test_lf_line_endings_parse_the_same_as_crlf():
    text = returned()

    assert nacha_return_file_parse(text.replace("\r\n", "\n")) == nacha_return_file_parse(text)


def test_date_of_death_is_read_for_a_deceased_account_holder():
    original = sent()
    text = nacha_return_file_build(
        original=original,
        returns=[
            AchReturnInstruction(
                original.entries[0].trace_number, "R15", date_of_death=date(2026, 6, 30)
            )
        ],
        created_at=datetime(2026, 7, 8),
    )

    (deceased,) = nacha_return_file_parse(text).returns

    assert deceased.date_of_death == date(2026, 6, 30)
    assert deceased.reason.startswith("Beneficiary or account holder")


def test_reason_table_knows_the_common_codes_and_admits_unknown_ones():
    assert RETURN_REASONS["R02"] == "Account closed"
    assert RETURN_REASONS["R03"] == "No account / unable to locate account"
    assert RETURN_REASONS["R29"] == "Corporate customer advises not authorized"
    text = returned().replace("799R01", "799R98")

    assert nacha_return_file_parse(text).returns[0].reason == "Unrecognized return reason code"


def _as_notification_of_change(text: str) -> str:
    """`text` with its first return (lines 3-4) rewritten as a C01 notification of
    change: a zero amount (taken off the batch and file debit totals) and a 98 addenda
    carrying the corrected account number."""
    lines = text.split("\r\n")
    entry, addenda, batch_control = lines[2], lines[3], lines[4]
    amount = int(entry[29:39])
    lines[2] = entry[:29] + "0" * 10 + entry[39:]
    lines[3] = "798C01" + addenda[6:35] + "1122334455".ljust(29) + " " * 15 + addenda[79:]
    lines[4] = (
        batch_control[:20] + str(int(batch_control[20:32]) - amount).zfill(12) + batch_control[32:]
    )
    file_control = lines[9]
    lines[9] = (
        file_control[:31] + str(int(file_control[31:43]) - amount).zfill(12) + file_control[43:]
    )
    return "\r\n".join(lines)


def test_a_notification_of_change_is_read_apart_from_returns():
    parsed = nacha_return_file_parse(_as_notification_of_change(returned()))

    (change,) = parsed.notifications_of_change
    assert change.change_code == "C01"
    assert change.reason == "Incorrect DFI account number"
    assert change.corrected_data == "1122334455"
    assert change.routing == "011000015"
    assert [r.return_code for r in parsed.returns] == ["R10"]


# --- malformed files ---------------------------------------------------------------


def _edit(text: str, line_number: int, start: int, replacement: str) -> str:
    """`text` with `replacement` written at 1-based `start` of 1-based `line_number`."""
    lines = text.split("\r\n")
    line = lines[line_number - 1]
    lines[line_number - 1] = line[: start - 1] + replacement + line[start - 1 + len(replacement) :]
    return "\r\n".join(lines)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (
            lambda t: t.replace(t.split("\r\n")[2], t.split("\r\n")[2][:80]),
            r"^line 3: record is 80 characters long, expected 94$",
        ),
        (lambda t: _edit(t, 2, 1, "4"), r"^line 2: unknown record type '4'"),
        (lambda t: _edit(t, 1, 1, "5"), r"^line 1: a NACHA file starts with a file header"),
        (
            lambda t: _edit(t, 4, 1, "705"),
            r"^line 4: addenda type '05' is neither a return \(99\) nor",
        ),
        (lambda t: _edit(t, 4, 4, "X01"), r"^line 4: return reason code 'X01' is malformed"),
        (
            lambda t: _edit(t, 4, 7, "02100002000000A"),
            r"^line 4: original entry trace number \(positions 7-21\) must be digits",
        ),
        (
            lambda t: _edit(t, 3, 30, "000012345X"),
            r"^line 3: amount \(positions 30-39\) must be digits",
        ),
        (lambda t: _edit(t, 3, 79, "0"), r"^line 3: a return entry must have an addenda"),
        (
            lambda t: _edit(t, 5, 5, "000003"),
            r"^line 5: batch control does not match its records: entry/addenda count 3 but the records add up to 2$",
        ),
        (
            lambda t: _edit(t, 5, 20, "3"),
            r"^line 5: batch control .*entry hash 2100003 but the records add up to 2100002",
        ),
        (
            lambda t: _edit(t, 5, 32, "7"),
            r"^line 5: batch control .*total debit 123457 but the records add up to 123456",
        ),
        (lambda t: _edit(t, 10, 43, "7"), r"^line 10: file control .*total debit 128457"),
        (
            lambda t: _edit(t, 10, 7, "3"),
            r"^line 10: file control batch count 000003 but the file has 2 batches",
        ),
        (
            lambda t: _edit(t, 10, 13, "2"),
            r"^line 10: file control block count 000002 but the file has 10 records",
        ),
        (
            lambda t: t + "9" * 93 + "8\r\n",
            r"^line 11: only records of 94 nines may follow the file control record",
        ),
        (
            lambda t: "\r\n".join(t.split("\r\n")[:9]),
            r"^line 9: the file ends without a file control \(9\) record$",
        ),
        (
            lambda t: "\r\n".join(t.split("\r\n")[:4] + t.split("\r\n")[5:]),
            r"^line 5: batch header before the previous batch's control",
        ),
        (
            lambda t: "\r\n".join(t.split("\r\n")[:3] + t.split("\r\n")[4:]),
            r"^line 3: entry has its addenda record indicator set but no addenda follows",
        ),
        (
            lambda t: "\r\n".join(t.split("\r\n")[:1] + t.split("\r\n")[2:]),
            r"^line 2: entry detail \(6\) outside a batch",
        ),
        (
            lambda t: t.replace(t.split("\r\n")[1], t.split("\r\n")[0], 1),
            r"^line 2: a second file header",
        ),
        (lambda t: "", r"^the file is empty$"),
    ],
)
def test_a_malformed_return_file_is_refused_at_its_line(mangle, message):
    with pytest.raises(NachaParseError, match=message):
        nacha_return_file_parse(mangle(returned()))


def test_an_origination_file_is_not_taken_for_a_return_file():
    with pytest.raises(
        NachaParseError, match=r"^line 3: transaction code 27 is not a return .*origination file\?$"
    ) as caught:
        nacha_return_file_parse(sent().content)

    assert caught.value.line_number == 3
    assert isinstance(caught.value, ValueError)


# --- the builder's own errors ------------------------------------------------------


@pytest.mark.parametrize(
    ("returns", "message"),
    [
        ([], "at least one return"),
        ([AchReturnInstruction("999999990000001", "R01")], "is not in the original file"),
        ([AchReturnInstruction("021000020000001", "R1")], "must be R and two digits"),
        (
            [
                AchReturnInstruction("021000020000001", "R01"),
                AchReturnInstruction("021000020000001", "R02"),
            ],
            "is returned twice",
        ),
    ],
)
def test_return_file_builder_refuses_what_no_bank_would_send(returns, message):
    with pytest.raises(ValueError, match=message):
        nacha_return_file_build(original=sent(), returns=returns, created_at=datetime(2026, 7, 7))
