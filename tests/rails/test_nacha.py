"""NACHA origination files: golden bytes, layout, validation errors, and an independent
validator (achlens, from PyPI, in its own virtualenv under var/)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rails.ach.calendar import federal_reserve_holidays, is_banking_day
from rails.ach.nacha import (
    AchDebit,
    AchOriginator,
    NachaFile,
    nacha_file_build,
)
from rails.ach.nacha_records import aba_check_digit, routing_number_validate

GOLDEN = Path(__file__).parent / "golden"
ROOT = Path(__file__).resolve().parents[2]

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
INITECH = AchDebit(
    invoice_number="INV-2026-000003",
    amount_minor=99,
    receiver_name="Initech   Limited liability co",
    receiver_id="initech",
    routing_number="021000021",
    account_number="55-1234",
    account_type="savings",
    sec_code="CCD",
    addenda="inv INV-2026-000003 po 4471",
)


def build(debits=(GLOBEX, JANE, INITECH), **overrides) -> NachaFile:
    arguments = {
        "originator": ORIGINATOR,
        "debits": list(debits),
        # July 4 2026 is a Saturday the Fed does not move: Friday July 3 settles.
        "created_at": datetime(2026, 7, 2, 14, 30),
        "effective_date": date(2026, 7, 3),
        "file_id_modifier": "A",
    }
    arguments.update(overrides)
    return nacha_file_build(**arguments)


# --- the golden file ---------------------------------------------------------------
#
# tests/rails/golden/nacha_ccd_ppd.ach was written once by `build()` and checked by
# hand against the NACHA record layouts: every record 94 characters and CRLF-ended;
# 1 / 5 CCD / 6 27 / 7 05 / 6 37 / 7 05 / 8 / 5 PPD / 6 37 / 8 / 9 and 9 lines of
# nines (20 records, 2 blocks); batch 1 count 000004, hash 01100001 + 02100002 =
# 0003200003, debits 123456 + 99 = 000000123555; batch 2 count 000001, hash
# 0012100035, debits 000000005000; file: 2 batches, 2 blocks, 00000005 entries and
# addenda, hash 0015300038, debits 000000128555, credits 0. To change it, rebuild it
# the same way and check it by hand again.


def test_built_file_matches_the_hand_checked_golden_file_byte_for_byte():
    assert build().encode() == (GOLDEN / "nacha_ccd_ppd.ach").read_bytes()


def test_every_record_is_94_characters_ended_by_crlf_in_blocks_of_ten():
    raw = build().encode()

    records = raw.split(b"\r\n")

    assert records[-1] == b""  # the last record is CRLF-terminated too
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert all(len(record) == 94 for record in records[:-1])
    assert len(records[:-1]) % 10 == 0


def _field(record: str, start: int, end: int) -> str:
    """NACHA positions are 1-based and inclusive."""
    return record[start - 1 : end]


def test_control_records_agree_with_the_entries_they_sum():
    nacha = build(
        debits=[GLOBEX, JANE, INITECH, replace(JANE, invoice_number="X-9", amount_minor=1)]
    )
    lines = nacha.lines
    entries = [line for line in lines if line[0] == "6"]
    addenda = [line for line in lines if line[0] == "7"]
    file_control = next(line for line in lines if line[0] == "9" and line != "9" * 94)

    assert int(_field(file_control, 2, 7)) == 2
    assert int(_field(file_control, 8, 13)) == len(lines) // 10
    assert int(_field(file_control, 14, 21)) == len(entries) + len(addenda)
    assert int(_field(file_control, 22, 31)) == sum(int(_field(e, 4, 11)) for e in entries) % 10**10
    assert int(_field(file_control, 32, 43)) == sum(int(_field(e, 30, 39)) for e in entries)
    assert int(_field(file_control, 44, 55)) == 0
    assert nacha.total_debit_minor == 123456 + 5000 + 99 + 1


def test_entries_keep_the_invoice_number_as_billing_knows_it():
    nacha = build(debits=[replace(GLOBEX, invoice_number="inv-7")])

    assert nacha.trace_numbers_by_invoice == {"inv-7": "021000020000001"}
    assert "INV INV-7" in nacha.content


def test_each_entry_trace_number_links_back_to_its_invoice():
    nacha = build()

    traces = nacha.trace_numbers_by_invoice

    assert traces == {
        "INV-2026-000001": "021000020000001",
        "INV-2026-000003": "021000020000002",
        "INV-2026-000002": "021000020000003",
    }
    for entry in nacha.entries:
        record = next(
            line for line in nacha.lines if line[0] == "6" and line.endswith(entry.trace_number)
        )
        assert int(_field(record, 30, 39)) == entry.amount_minor


def test_ccd_entries_carry_the_invoice_number_in_an_addenda_and_ppd_only_when_given():
    nacha = build(debits=[GLOBEX, JANE, replace(JANE, invoice_number="P-2", addenda="Thanks")])
    lines = nacha.lines

    ccd_entry = lines[2]
    assert _field(ccd_entry, 79, 79) == "1"
    assert _field(lines[3], 1, 3) == "705"
    assert _field(lines[3], 4, 83).rstrip() == "INV INV-2026-000001"
    assert _field(lines[3], 84, 94) == "0001" + _field(ccd_entry, 88, 94)
    ppd_plain, ppd_with_addenda = lines[6], lines[7]
    assert _field(ppd_plain, 79, 79) == "0"
    assert _field(ppd_with_addenda, 79, 79) == "1"
    assert _field(lines[8], 4, 83).rstrip() == "THANKS"


def test_text_is_upper_cased_collapsed_and_cut_to_its_field():
    initech = next(line for line in build().lines if line.startswith("637021000021"))

    assert _field(initech, 55, 76) == "INITECH LIMITED LIABIL"
    assert _field(initech, 40, 54) == "INITECH        "
    assert _field(initech, 13, 29) == "55-1234          "


def test_trace_sequence_can_continue_from_a_previous_file():
    nacha = build(first_trace_sequence=41)

    assert [entry.trace_number for entry in nacha.entries] == [
        "021000020000041",
        "021000020000042",
        "021000020000043",
    ]


def test_the_largest_ten_digit_amount_is_accepted():
    nacha = build(debits=[replace(GLOBEX, amount_minor=9_999_999_999)])

    assert nacha.total_debit_minor == 9_999_999_999


def test_a_batch_total_past_twelve_digits_is_refused():
    debits = [
        replace(GLOBEX, invoice_number=f"I-{n}", amount_minor=9_999_999_999) for n in range(101)
    ]

    with pytest.raises(ValueError, match="total debit amount .* does not fit in 12 digits"):
        build(debits=debits)


def test_account_numbers_never_show_in_reprs():
    assert "000123456789" not in repr(GLOBEX)
    assert "000123456789" not in repr(build().entries)


# --- routing numbers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "routing", ["011000015", "021000021", "121000358", "026009593", "111000025"]
)
def test_real_routing_numbers_pass_their_check_digit(routing):
    routing_number_validate(routing)
    assert aba_check_digit(routing[:8]) == int(routing[8])


@pytest.mark.parametrize(
    ("routing", "message"),
    [
        ("021000022", "fails the ABA check digit .last digit should be 1, not 2"),
        ("02100002", "must be exactly 9 digits"),
        ("0210000211", "must be exactly 9 digits"),
        ("02100002X", "must be exactly 9 digits"),
        ("٠٢١٠٠٠٠٢١", "must be exactly 9 digits"),  # Arabic-Indic digits are not ASCII digits
        ("000000000", "ABA-assigned prefix"),
        ("987654321", "ABA-assigned prefix"),
    ],
)
def test_bad_routing_numbers_are_refused_with_the_reason(routing, message):
    with pytest.raises(ValueError, match=message):
        routing_number_validate(routing)


# --- validation errors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"routing_number": "021000022"}, r"debit #1 \(invoice 'INV-2026-000001'\): .*check digit"),
        ({"amount_minor": 0}, r"debit #1 .*amount_minor must be > 0, got 0"),
        ({"amount_minor": -5}, r"amount_minor must be > 0"),
        ({"amount_minor": 12.5}, r"amount_minor must be an int of cents, got float"),
        ({"amount_minor": True}, r"amount_minor must be an int of cents, got bool"),
        ({"amount_minor": 10_000_000_000}, r"does not fit the 10-digit amount field"),
        ({"sec_code": "WEB"}, r"sec_code must be one of CCD, PPD"),
        ({"account_type": "brokerage"}, r"account_type must be 'checking' or 'savings'"),
        ({"account_number": "123456789012345678"}, r"account_number must be 1 to 17"),
        ({"account_number": "1234 5678"}, r"account_number must be 1 to 17"),
        ({"account_number": ""}, r"account_number must be 1 to 17"),
        (
            {"receiver_name": "Zoë Café"},
            r"receiver_name 'Zoë Café' contains characters NACHA files cannot carry: 'ÉË'",
        ),
        ({"receiver_name": "   "}, r"receiver_name must not be blank"),
        ({"receiver_id": "key~1"}, r"receiver_id .* contains characters"),
        ({"invoice_number": ""}, r"debit #1: invoice_number must not be blank"),
        ({"invoice_number": "I" * 77}, r"invoice_number .* is longer than its 76-character field"),
        ({"addenda": "  "}, r"addenda must not be blank"),
    ],
)
def test_a_bad_debit_is_refused_naming_the_entry(change, message):
    with pytest.raises(ValueError, match=message):
        build(debits=[replace(GLOBEX, **change), JANE])


def test_a_bad_second_debit_is_named_by_its_position_and_invoice():
    with pytest.raises(ValueError, match=r"debit #2 \(invoice 'INV-2026-000002'\)"):
        build(debits=[GLOBEX, replace(JANE, amount_minor=0)])


def test_an_invoice_is_debited_at_most_once_per_file():
    with pytest.raises(
        ValueError, match=r"debit #2: invoice 'INV-2026-000001' appears more than once"
    ):
        build(debits=[GLOBEX, replace(JANE, invoice_number="inv-2026-000001")])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"debits": []}, "at least one debit"),
        ({"file_id_modifier": "a"}, "file_id_modifier must be one character A-Z or 0-9"),
        ({"file_id_modifier": "AB"}, "file_id_modifier"),
        ({"file_id_modifier": ""}, "file_id_modifier"),
        ({"effective_date": date(2026, 7, 4)}, "2026-07-04 is not a banking day"),
        ({"effective_date": date(2026, 11, 26)}, "2026-11-26 is not a banking day"),
        ({"effective_date": date(2026, 7, 1)}, "is before the file creation date 2026-07-02"),
        ({"effective_date": datetime(2026, 7, 3)}, "effective_date a date"),
        ({"created_at": date(2026, 7, 2)}, "created_at must be a datetime"),
        (
            {"company_entry_description": "Invoice\u2122"},
            "company_entry_description .* contains characters",
        ),
        ({"company_entry_description": " "}, "company_entry_description must not be blank"),
        ({"first_trace_sequence": 0}, r"trace sequence 0..2 does not fit"),
        ({"first_trace_sequence": 9_999_998}, r"does not fit 1..9999999"),
    ],
)
def test_bad_file_arguments_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        build(**overrides)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"immediate_destination": "021000022"}, "originator.immediate_destination: .*check digit"),
        ({"odfi_routing": "12345"}, "originator.odfi_routing: .*9 digits"),
        ({"immediate_origin": "12345"}, "originator.immediate_origin '12345' must be 10"),
        (
            {"company_id": "12345678901"},
            "originator.company_id .* longer than its 10-character field",
        ),
        ({"company_id": " "}, "originator.company_id must not be blank"),
        ({"company_name": ""}, "originator.company_name must not be blank"),
    ],
)
def test_a_bad_originator_is_refused_naming_the_field(change, message):
    with pytest.raises(ValueError, match=message):
        build(originator=replace(ORIGINATOR, **change))


def test_a_nine_digit_immediate_origin_is_written_blank_prefixed():
    header = build(originator=replace(ORIGINATOR, immediate_origin="121000358")).lines[0]

    assert _field(header, 14, 23) == " 121000358"


# --- properties --------------------------------------------------------------------

_ROUTINGS = ["011000015", "021000021", "121000358", "026009593", "111000025"]
_debit = st.builds(
    AchDebit,
    invoice_number=st.just("placeholder"),
    amount_minor=st.integers(min_value=1, max_value=9_999_999_999),
    receiver_name=st.text(alphabet="ABCXYZ abc.&'-", min_size=1, max_size=40).filter(str.strip),
    receiver_id=st.text(alphabet="abc-_0123", max_size=30),
    routing_number=st.sampled_from(_ROUTINGS),
    account_number=st.text(alphabet="0123456789-", min_size=1, max_size=17),
    account_type=st.sampled_from(["checking", "savings"]),
    sec_code=st.sampled_from(["CCD", "PPD"]),
    addenda=st.none() | st.just("PO 12"),
)


@settings(max_examples=60, deadline=None)
@given(debits=st.lists(_debit, min_size=1, max_size=25))
def test_any_valid_batch_of_debits_makes_a_well_formed_file(debits):
    debits = [replace(debit, invoice_number=f"INV-{n}") for n, debit in enumerate(debits)]

    nacha = build(debits=debits)

    lines = nacha.lines
    assert all(len(line) == 94 for line in lines) and len(lines) % 10 == 0
    assert nacha.total_debit_minor == sum(debit.amount_minor for debit in debits)
    assert nacha.entry_hash == sum(int(debit.routing_number[:8]) for debit in debits) % 10**10
    assert sorted(e.invoice_number for e in nacha.entries) == sorted(
        d.invoice_number for d in debits
    )
    assert len({e.trace_number for e in nacha.entries}) == len(debits)


# --- independent validation: achlens (PyPI), in its own virtualenv -----------------
#
# achlens is a third-party NACHA validator (structure, headers, entries, addenda,
# batch and file controls: 65 rules). It lives in var/achlens-venv, apart from the
# project's dependencies; the fixture creates that venv when it is missing and skips
# only when pip cannot install achlens (PyPI unreachable).

ACHLENS_VERSION = "0.1.7"
ACHLENS_VENV = ROOT / "var" / "achlens-venv"
ACHLENS_PYTHON = ACHLENS_VENV / "bin" / "python"


def _achlens_installed() -> bool:
    try:
        probe = subprocess.run(
            [ACHLENS_PYTHON, "-c", "import importlib.metadata as m; print(m.version('achlens'))"],
            capture_output=True,
            text=True,
        )
    except OSError:  # no venv yet, or one whose base interpreter has gone
        return False
    return probe.returncode == 0 and probe.stdout.strip() == ACHLENS_VERSION


@pytest.fixture(scope="session")
def achlens() -> Path:
    """The achlens CLI, installed on first use into a fresh var/achlens-venv."""
    if not _achlens_installed():
        base_python = shutil.which("python3.11") or sys.executable
        subprocess.run([base_python, "-m", "venv", "--clear", str(ACHLENS_VENV)], check=True)
        pip = subprocess.run(
            [ACHLENS_PYTHON, "-m", "pip", "install", "--quiet", f"achlens=={ACHLENS_VERSION}"],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if pip.returncode != 0:
            pytest.skip(f"cannot install achlens=={ACHLENS_VERSION} from PyPI: {pip.stderr[-800:]}")
    return ACHLENS_VENV / "bin" / "achlens"


def _achlens_validate(achlens: Path, path: Path, *, streaming: bool = True) -> tuple[int, dict]:
    env = {**os.environ, "ACHLENS_DISABLE_STREAMING_VALIDATION": "0" if streaming else "1"}
    result = subprocess.run(
        [achlens, "validate", path], capture_output=True, text=True, env=env, timeout=120
    )
    return result.returncode, json.loads(result.stdout)


def _files_to_validate(tmp_path: Path) -> list[Path]:
    many = [
        replace(
            GLOBEX if n % 3 else JANE,
            invoice_number=f"INV-2026-{n:06d}",
            amount_minor=1 + n * 104_729,
            routing_number=_ROUTINGS[n % len(_ROUTINGS)],
            account_type="savings" if n % 4 == 0 else "checking",
        )
        for n in range(1, 38)
    ]
    files = {
        "golden.ach": (GOLDEN / "nacha_ccd_ppd.ach").read_bytes(),
        "ccd_only.ach": build(debits=[GLOBEX]).encode(),
        "ppd_only.ach": build(debits=[JANE]).encode(),
        "many.ach": build(debits=many, first_trace_sequence=500, file_id_modifier="7").encode(),
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    return [tmp_path / name for name in files]


@pytest.mark.parametrize("streaming", [True, False], ids=["streaming", "rule-by-rule"])
def test_achlens_finds_nothing_wrong_with_built_files(achlens, tmp_path, streaming):
    for path in _files_to_validate(tmp_path):
        code, report = _achlens_validate(achlens, path, streaming=streaming)

        assert report["findings"] == [], f"{path.name}: {report['findings']}"
        assert report["counts"] == {"error": 0, "warning": 0, "info": 0}, path.name
        assert report["valid"] is True and code == 0, path.name


def test_achlens_core_accepts_the_crlf_bytes_as_written(achlens, tmp_path):
    # The CLI reads in text mode (CRLF becomes LF); its core sees the bytes as sent.
    paths = _files_to_validate(tmp_path)
    script = (
        "import json, sys\n"
        "from achlens.core.validator import validate\n"
        "out = {}\n"
        "for p in sys.argv[1:]:\n"
        "    r = validate(open(p, newline='').read())\n"
        "    out[p] = [r.valid, r.counts, [f.rule_id for f in r.findings]]\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run(
        [ACHLENS_PYTHON, "-c", script, *map(str, paths)], capture_output=True, text=True, check=True
    )

    for path, (valid, counts, rules) in json.loads(result.stdout).items():
        assert (valid, counts, rules) == (True, {"error": 0, "warning": 0, "info": 0}, []), path


def test_achlens_does_catch_a_tampered_file(achlens, tmp_path):
    # Guards against a validator that passes everything: one wrong digit is caught.
    lines = build().content.split("\r\n")
    control = next(i for i, line in enumerate(lines) if line.startswith("8"))
    lines[control] = lines[control][:19] + "4" + lines[control][20:]  # entry hash ...03 -> ...04
    path = tmp_path / "tampered.ach"
    path.write_bytes("\r\n".join(lines).encode())

    code, report = _achlens_validate(achlens, path)

    assert code == 1 and report["valid"] is False
    assert "BC003" in report["counts_by_rule"]


def test_calendar_agrees_with_the_k8_holiday_table_achlens_ships(achlens):
    # achlens lists Federal Reserve (K.8) holidays for 2026-2030 by nominal date;
    # the Fed closes the Monday after a Sunday one and stays open the Friday before a
    # Saturday one. Its one date off that rule, 2028-11-10 (a Friday; Veterans Day is
    # Saturday 2028-11-11), is the Friday federal offices close, not the Reserve Banks.
    script = (
        "from achlens.core.calendar import FEDERAL_RESERVE_HOLIDAYS as H\n"
        "print(' '.join(sorted(d.isoformat() for d in H)))\n"
    )
    listed = subprocess.run(
        [ACHLENS_PYTHON, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    listed_dates = [date.fromisoformat(value) for value in listed]
    k8_discrepancy = date(2028, 11, 10)

    expected_closures = set()
    for day in listed_dates:
        if day == k8_discrepancy:
            assert is_banking_day(day)
        elif day.weekday() == 6:
            expected_closures.add(date.fromordinal(day.toordinal() + 1))
        elif day.weekday() < 5:
            expected_closures.add(day)
    ours = {day for year in range(2026, 2031) for day in federal_reserve_holidays(year)}

    assert len(listed_dates) == 55
    assert ours == expected_closures
