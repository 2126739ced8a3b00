"""The ACH rail end to end: encrypted bank details, scheduled debits, the NACHA export,
return files, the return window, and account numbers kept out of everything but the file."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.urls import reverse

import rails.admin_ach  # noqa: F401  (registers the ACH admin before the URLs load)
from billing.invoicing.services import credit_note_create, invoice_issue, invoice_line_add
from billing.models import Invoice, InvoiceStatus
from customers.models import Customer
from customers.services import customer_create, customer_update
from rails.ach.export import ach_export, ach_export_task
from rails.ach.nacha import AchDebit, NachaFile, nacha_file_build
from rails.ach.returns_build import AchReturnInstruction, nacha_return_file_build
from rails.adapters.ach import (
    SANDBOX_ORIGINATOR,
    AchRail,
    ach_account_number,
    ach_settings_match,
)
from rails.base import InvoiceDocument, Party, Step
from rails.models import Settlement, SettlementEvent, SettlementExchange, SettlementState
from rails.models_ach import AchFile, AchFileEntry
from rails.outbox import settlement_drive
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

CLEAR = "987654321012"  # a distinctive account number, searched for everywhere
SAVINGS_CLEAR = "55500012345"
BANK = {
    "routing_number": "011000015",
    "account_number": CLEAR,
    "account_type": "checking",
    "mandate_date": "2026-09-15",
}
# Tuesday 10 November 2026, 15:00 in New York; Wednesday the 11th is Veterans Day.
ISSUE = datetime(2026, 11, 10, 15, 0, tzinfo=UTC)
EXPORT = datetime(2026, 11, 10, 20, 0, tzinfo=UTC)
DEBIT_DATE = date(2026, 11, 12)
# Two banking days after Thursday the 12th is Monday the 16th: paid from Tuesday 00:00 ET.
PAID_AFTER = datetime(2026, 11, 17, 5, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def ach_sandbox(settings, tmp_path):
    settings.ACH_ODFI_ROUTING = ""
    settings.ACH_COMPANY_ID = ""
    settings.ACH_ENCRYPTION_KEY = ""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.BILLING_NET_TERMS_DAYS = 0  # due at issue: debited on the next banking day
    return settings


def ach_customer(key: str = "initech", name: str = "Initech LLC", **bank) -> Customer:
    return customer_create(
        key=key, name=name, email=f"ap@{key}.example", rail="ach", rail_settings={**BANK, **bank}
    )


def jane() -> Customer:
    return ach_customer(
        key="jane-doe",
        name="Jane Doe",
        account_number=SAVINGS_CLEAR,
        routing_number="121000358",
        account_type="savings",
        sec_code="PPD",
        account_holder_name="Jane Q. Public",
    )


def issue(customer: Customer, amount: str = "1234.50", now: datetime = ISSUE) -> Invoice:
    draft = Invoice.objects.create(customer=customer, currency="USD")
    invoice_line_add(invoice=draft, description="Consulting", amount=Decimal(amount), now=now)
    return invoice_issue(invoice=draft, now=now)


def scheduled(invoice: Invoice, now: datetime = ISSUE) -> Settlement:
    settlement_drive(settlement_id=invoice.settlement.pk, now=now)
    return Settlement.objects.get(invoice=invoice)


def export_command(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("ach_export", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def expected_file(*debits: AchDebit, first_trace_sequence: int = 1) -> NachaFile:
    """The file the export should make, built independently from the pure builder."""
    return nacha_file_build(
        originator=SANDBOX_ORIGINATOR,
        debits=debits,
        created_at=datetime(2026, 11, 10, 15, 0),  # 20:00 UTC in New York
        effective_date=DEBIT_DATE,
        file_id_modifier="A",
        first_trace_sequence=first_trace_sequence,
    )


INITECH_DEBIT = AchDebit(
    invoice_number="INV-2026-000001",
    amount_minor=123450,
    receiver_name="Initech LLC",
    receiver_id="initech",
    routing_number="011000015",
    account_number=CLEAR,
    account_type="checking",
    sec_code="CCD",
)
JANE_DEBIT = AchDebit(
    invoice_number="INV-2026-000002",
    amount_minor=5000,
    receiver_name="Jane Q. Public",
    receiver_id="jane-doe",
    routing_number="121000358",
    account_number=SAVINGS_CLEAR,
    account_type="savings",
    sec_code="PPD",
)


@pytest.fixture
def exported(tmp_path):
    """Two ACH invoices (a company's CCD debit, a consumer's PPD one) in one exported file."""
    first, second = issue(ach_customer()), issue(jane(), amount="50.00")
    scheduled(first), scheduled(second)
    out = tmp_path / "out.ach"
    printed, _ = export_command("--now", EXPORT.isoformat(), "--out", str(out))
    return {"invoices": (first, second), "path": out, "printed": printed}


# ------------------------------------------------------------------ bank details


def test_bank_details_are_encrypted_and_only_the_last_four_digits_stay_clear():
    customer = ach_customer()

    stored = Customer.objects.get(pk=customer.pk).rail_settings
    assert "account_number" not in stored
    assert stored["account_last4"] == "1012"
    assert CLEAR not in json.dumps(stored)
    assert ach_account_number(stored) == CLEAR
    again = customer_update(customer=customer, rail_settings=dict(stored))
    assert again.rail_settings == stored  # cleaning the encrypted form keeps it as it is


def test_stored_settings_match_the_same_clear_details_but_not_another_account():
    stored = ach_customer().rail_settings

    assert ach_settings_match(stored, dict(BANK))
    assert ach_settings_match(stored, dict(stored))
    assert not ach_settings_match(stored, {**BANK, "account_number": "987654321013"})
    assert not ach_settings_match(stored, {**BANK, "account_type": "savings"})


def test_a_routing_number_with_a_bad_check_digit_is_refused_with_a_clear_message():
    with pytest.raises(ValidationError) as caught:
        ach_customer(routing_number="011000016")

    messages = caught.value.message_dict["rail_settings"]
    assert messages == [
        "Routing number '011000016' fails the ABA check digit (last digit should be 5, not 6)."
    ]
    assert not Customer.objects.filter(key="initech").exists()


def test_every_bad_setting_is_reported_and_the_account_number_is_never_echoed():
    with pytest.raises(ValidationError) as caught:
        ach_customer(
            account_number="12ab3456", account_type="money market", mandate_date="15/09/2026"
        )
    with pytest.raises(ValidationError) as typo:
        ach_customer(acount_number=CLEAR)  # a misspelt key would store the number in clear

    messages = caught.value.message_dict["rail_settings"]
    assert "account_type must be checking or savings, not 'money market'." in messages
    assert "mandate_date '15/09/2026' is not a date (YYYY-MM-DD)." in messages
    assert "12ab3456" not in str(caught.value)
    with pytest.raises(ValidationError) as digits:
        ach_customer(account_number="12ab3456")
    assert digits.value.message_dict["rail_settings"] == ["account_number must be 4 to 17 digits."]
    assert "Unknown ACH setting(s): acount_number" in typo.value.message_dict["rail_settings"][0]
    assert CLEAR not in str(typo.value)


def test_an_old_key_still_decrypts_until_the_rotate_command_moves_to_the_new_one(settings):
    settings.ACH_ENCRYPTION_KEY = "first-secret"
    customer = ach_customer()
    settings.ACH_ENCRYPTION_KEY = "second-secret,first-secret"
    assert ach_account_number(Customer.objects.get(pk=customer.pk).rail_settings) == CLEAR

    call_command("ach_encryption_rotate", stdout=io.StringIO())

    settings.ACH_ENCRYPTION_KEY = "second-secret"
    assert ach_account_number(Customer.objects.get(pk=customer.pk).rail_settings) == CLEAR
    settings.ACH_ENCRYPTION_KEY = "first-secret"
    with pytest.raises(ValidationError, match="cannot be decrypted with the configured keys"):
        customer_update(customer=Customer.objects.get(pk=customer.pk), name="Initech")


# ------------------------------------------------------------------ scheduling the debit


@pytest.mark.parametrize(
    ("issued_at", "debit_date"),
    [
        # Net 30: due Thursday 26 November 2026, Thanksgiving: debited on Friday the 27th.
        (datetime(2026, 10, 27, 15, 0, tzinfo=UTC), date(2026, 11, 27)),
        # Net 30: due Saturday 5 December 2026: debited on Monday the 7th.
        (datetime(2026, 11, 5, 15, 0, tzinfo=UTC), date(2026, 12, 7)),
    ],
)
def test_issuing_schedules_the_debit_on_the_first_banking_day_from_the_due_date(
    settings, issued_at, debit_date
):
    settings.BILLING_NET_TERMS_DAYS = 30
    invoice = issue(ach_customer(), now=issued_at)

    settlement = scheduled(invoice, now=issued_at)

    assert settlement.state == SettlementState.SUBMITTED
    assert settlement.sandbox is True
    assert settlement.external_ids == {"ach_effective_date": debit_date.isoformat()}
    assert settlement.next_action_at.astimezone(UTC).date() == debit_date
    note = settlement.events.last().note
    assert f"scheduled for {debit_date.isoformat()}" in note and "****1012" in note


def test_due_at_issue_the_debit_skips_a_federal_holiday():
    settlement = scheduled(issue(ach_customer()))

    assert settlement.external_ids["ach_effective_date"] == "2026-11-12"  # not Veterans Day


def test_a_customer_whose_account_number_was_stored_unencrypted_fails_with_a_clear_message():
    customer = CustomerFactory(
        key="legacy", rail="ach", rail_settings=dict(BANK)
    )  # bypasses services

    settlement = scheduled(issue(customer))

    assert settlement.state == SettlementState.FAILED and settlement.next_action_at is None
    assert "stored unencrypted: save the customer again" in settlement.last_error
    assert CLEAR not in settlement.last_error
    assert Invoice.objects.get(pk=settlement.invoice_id).status == InvoiceStatus.PAYMENT_FAILED


# ------------------------------------------------------------------ the export


def test_the_export_writes_a_nacha_file_whose_entries_match_the_invoices(exported):
    first, second = exported["invoices"]

    assert exported["printed"] == f"{exported['path']}\n"
    content = exported["path"].read_bytes().decode("ascii")
    assert content == expected_file(INITECH_DEBIT, JANE_DEBIT).content
    ach_file = AchFile.objects.get()
    assert (ach_file.file_id_modifier, ach_file.effective_date, ach_file.entry_count) == (
        "A",
        DEBIT_DATE,
        2,
    )
    assert (ach_file.total_debit_minor, ach_file.sandbox, ach_file.file_name) == (
        128450,
        True,
        "ach-20261110-A-sandbox.ach",
    )
    entries = {line[79:94]: line for line in content.split("\r\n") if line.startswith("6")}
    for invoice, amount, routing, account in (
        (first, 123450, "011000015", CLEAR),
        (second, 5000, "121000358", SAVINGS_CLEAR),
    ):
        entry = AchFileEntry.objects.get(invoice=invoice)
        line = entries[entry.trace_number]
        assert (line[3:12], line[12:29].strip(), int(line[29:39])) == (routing, account, amount)
        settlement = Settlement.objects.get(invoice=invoice)
        assert settlement.state == SettlementState.COLLECTING
        assert settlement.external_ids == {
            "ach_effective_date": "2026-11-12",
            "ach_file_id": ach_file.pk,
            "ach_file_name": ach_file.file_name,
            "ach_trace_number": entry.trace_number,
        }
        assert settlement.next_action_at == PAID_AFTER
    addenda = [line for line in content.splitlines() if line.startswith("705")]
    assert [line[3:25].strip() for line in addenda] == ["INV INV-2026-000001"]  # CCD+ only


def test_with_nothing_due_the_export_prints_nothing():
    scheduled(issue(ach_customer(), now=ISSUE), now=ISSUE)
    early = ISSUE - timedelta(days=3)  # the debit date is more than a banking day away

    assert export_command("--now", early.isoformat()) == ("", "")
    assert not AchFile.objects.exists()


def test_exporting_again_exports_nothing_twice_and_a_later_file_continues_the_trace_numbers(
    exported,
):
    assert export_command("--now", EXPORT.isoformat()) == ("", "")

    later = scheduled(issue(ach_customer(key="globex", name="Globex")), now=ISSUE)
    printed, warning = export_command("--now", (EXPORT + timedelta(hours=1)).isoformat())

    assert printed.strip().endswith("ach-20261110-B-sandbox.ach")
    assert "Sandbox" in warning and "Do not upload" in warning
    entry = AchFileEntry.objects.get(settlement=later)
    assert entry.trace_number == "000000010000003"
    assert Path(printed.strip()).read_text().count("\r\n") % 10 == 0


def test_the_daily_task_exports_what_is_due_as_of_the_clock(monkeypatch):
    scheduled(issue(ach_customer()))
    monkeypatch.setattr("rails.ach.export.timezone.now", lambda: EXPORT)

    path = ach_export_task.delay().get()

    assert path.endswith("ach/2026/ach-20261110-A-sandbox.ach") and Path(path).exists()
    assert ach_export_task.delay().get() is None


def test_a_debit_whose_bank_details_cannot_be_read_is_left_out_and_the_rest_are_exported():
    good = scheduled(issue(ach_customer()))
    broken_customer = ach_customer(key="globex", name="Globex")
    broken = scheduled(issue(broken_customer))
    Customer.objects.filter(pk=broken_customer.pk).update(
        rail_settings={**broken_customer.rail_settings, "account_number_encrypted": "not-a-token"}
    )

    printed, warning = export_command("--now", EXPORT.isoformat())

    assert printed.strip().endswith("ach-20261110-A-sandbox.ach")
    assert "Left out: INV-2026-000002: account_number_encrypted" in warning
    assert AchFileEntry.objects.get().settlement == good
    broken.refresh_from_db()
    assert broken.state == SettlementState.FAILED and broken.next_action_at is None
    assert "cannot be decrypted with the configured keys" in broken.last_error
    assert Invoice.objects.get(pk=broken.invoice_id).status == InvoiceStatus.PAYMENT_FAILED


def test_a_credit_note_before_the_export_reduces_the_debit():
    invoice = issue(ach_customer())
    scheduled(invoice)
    credit_note_create(invoice=invoice, reason="Goodwill", amount=Decimal("234.50"), now=ISSUE)

    result = ach_export(now=EXPORT)

    assert result.total_debit_minor == 100000
    assert AchFileEntry.objects.get().amount_minor == 100000


def test_a_live_export_names_the_bank_and_never_takes_a_sandbox_invoice(settings):
    sandbox_settlement = scheduled(issue(ach_customer(key="demo", name="Demo")))
    settings.ACH_ODFI_ROUTING = "021000021"
    settings.ACH_COMPANY_ID = "1234567890"
    settings.ACH_COMPANY_NAME = "Acme Billing"
    settings.ACH_ODFI_NAME = "JPMorgan Chase"
    live = scheduled(issue(ach_customer()))

    result = ach_export(now=EXPORT)

    assert (result.sandbox, result.file_name, result.entry_count) == (
        False,
        "ach-20261110-A.ach",
        1,
    )
    header = result.path.read_text().splitlines()[0]
    assert (header[3:13], header[13:23]) == (" 021000021", "1234567890")
    assert "JPMORGAN CHASE" in header and "ACME BILLING" in header
    assert AchFileEntry.objects.get().settlement == live
    assert AchFileEntry.objects.get().trace_number.startswith("02100002")
    assert Settlement.objects.get(pk=sandbox_settlement.pk).state == SettlementState.SUBMITTED


# ------------------------------------------------------------------ returns and the window


def _return_file(tmp_path, original: NachaFile, *traces_and_codes: tuple[str, str]) -> Path:
    content = nacha_return_file_build(
        original=original,
        returns=[
            AchReturnInstruction(original_trace_number=t, return_code=c)
            for t, c in traces_and_codes
        ],
        created_at=datetime(2026, 11, 13, 9, 0),
    )
    path = tmp_path / "returns.ach"
    path.write_text(content, newline="")
    return path


def test_a_returned_debit_fails_the_invoice_and_applying_the_file_again_changes_nothing(
    exported, tmp_path
):
    first, second = exported["invoices"]
    entry = AchFileEntry.objects.get(invoice=first)
    path = _return_file(
        tmp_path, expected_file(INITECH_DEBIT, JANE_DEBIT), (entry.trace_number, "R01")
    )

    out = io.StringIO()
    call_command("ach_import_returns", str(path), stdout=out)

    assert out.getvalue().splitlines()[0].startswith("1 return(s): 1 applied, 0 already applied")
    assert Settlement.objects.get(invoice=first).state == SettlementState.RETURNED
    assert Invoice.objects.get(pk=first.pk).status == InvoiceStatus.PAYMENT_FAILED
    assert Settlement.objects.get(invoice=second).state == SettlementState.COLLECTING
    note = SettlementEvent.objects.filter(to_state="returned").get().note
    assert "R01 (Insufficient funds)" in note and entry.trace_number in note
    events = SettlementEvent.objects.count()
    invoice_events = Invoice.objects.get(pk=first.pk).events.count()

    again = io.StringIO()
    call_command("ach_import_returns", str(path), stdout=again)

    assert "0 applied, 1 already applied" in again.getvalue()
    assert SettlementEvent.objects.count() == events
    assert Invoice.objects.get(pk=first.pk).events.count() == invoice_events


def test_a_return_for_a_trace_number_we_never_sent_is_reported_not_fatal(exported, tmp_path):
    stranger = expected_file(INITECH_DEBIT, first_trace_sequence=7777)
    path = _return_file(tmp_path, stranger, (stranger.entries[0].trace_number, "R03"))

    out = io.StringIO()
    call_command("ach_import_returns", str(path), stdout=out)

    assert "1 with an unknown trace number" in out.getvalue()
    assert "000000010007777" in out.getvalue() and "unknown trace number" in out.getvalue()
    assert set(Settlement.objects.values_list("state", flat=True)) == {SettlementState.COLLECTING}


def test_after_the_return_window_the_debit_is_paid_and_a_late_return_still_reopens_it(
    exported, tmp_path
):
    first, _ = exported["invoices"]
    settlement = Settlement.objects.get(invoice=first)

    assert (
        settlement_drive(settlement_id=settlement.pk, now=PAID_AFTER - timedelta(minutes=1))
        == "not due"
    )
    assert settlement_drive(settlement_id=settlement.pk, now=PAID_AFTER) == "paid"
    assert Invoice.objects.get(pk=first.pk).status == InvoiceStatus.PAID

    entry = AchFileEntry.objects.get(invoice=first)
    path = _return_file(
        tmp_path, expected_file(INITECH_DEBIT, JANE_DEBIT), (entry.trace_number, "R10")
    )
    call_command("ach_import_returns", str(path), stdout=io.StringIO())

    assert Settlement.objects.get(pk=settlement.pk).state == SettlementState.RETURNED
    assert Invoice.objects.get(pk=first.pk).status == InvoiceStatus.PAYMENT_FAILED


def test_the_return_window_is_a_setting(exported, settings):
    settings.ACH_RETURN_WINDOW_BANKING_DAYS = 0  # paid from the day after the debit date
    settlement = Settlement.objects.get(invoice=exported["invoices"][0])
    rail = AchRail()
    step = Step(
        settlement_id=settlement.pk,
        attempt=1,
        name="check",
        idempotency_key="k",
        now=datetime(2026, 11, 13, 5, 0, tzinfo=UTC),
        external_ids=settlement.external_ids,
    )

    assert rail.check(invoice=_document(), step=step).outcome == "paid"


# ------------------------------------------------------------------ void and credit


def _document() -> InvoiceDocument:
    return InvoiceDocument(
        id="1",
        number="INV-2026-000009",
        currency="USD",
        customer=Party(key="x", name="X", email=""),
        lines=(),
        subtotal_minor=100,
        tax_minor=0,
        total_minor=100,
        amount_due_minor=100,
        issued_at=ISSUE,
        due_at=ISSUE,
    )


def _step(**external_ids) -> Step:
    return Step(
        settlement_id=1,
        attempt=1,
        name="void",
        idempotency_key="k",
        now=ISSUE,
        external_ids=external_ids,
    )


def test_a_debit_can_be_voided_before_export_but_not_recalled_after():
    rail = AchRail()

    assert (
        rail.void(invoice=_document(), step=_step(ach_effective_date="2026-11-12")).outcome
        == "voided"
    )
    refused = rail.void(
        invoice=_document(),
        step=_step(
            ach_effective_date="2026-11-12",
            ach_trace_number="000000010000001",
            ach_file_name="f.ach",
        ),
    )
    assert (refused.outcome, refused.retryable) == ("failed", False)
    assert "cannot be recalled" in refused.error and "000000010000001" in refused.error


# ------------------------------------------------------------------ the admin and secrecy


def test_the_admin_exports_and_downloads_the_file_and_imports_a_return_file(
    admin_client, tmp_path, monkeypatch
):
    invoice = issue(ach_customer())
    scheduled(invoice)
    monkeypatch.setattr("rails.admin_ach.timezone.now", lambda: EXPORT)
    export_url = reverse("admin:rails_achfile_export")

    preview = admin_client.get(export_url).content.decode()
    download = admin_client.post(export_url)

    assert "1 ACH debit due" in preview and "Sandbox" in preview
    assert download["Content-Disposition"] == 'attachment; filename="ach-20261110-A-sandbox.ach"'
    assert download.content.decode() == expected_file(INITECH_DEBIT).content
    assert admin_client.post(export_url).status_code == 302  # nothing left to export

    entry = AchFileEntry.objects.get()
    path = _return_file(tmp_path, expected_file(INITECH_DEBIT), (entry.trace_number, "R02"))
    with path.open("rb") as upload:
        page = admin_client.post(reverse("admin:rails_achfile_import_returns"), {"file": upload})
    assert "1 applied" in page.content.decode() and "Account closed" in page.content.decode()
    assert Invoice.objects.get(pk=invoice.pk).status == InvoiceStatus.PAYMENT_FAILED


def test_the_clear_account_number_appears_nowhere_but_inside_the_nacha_file(
    admin_client, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)
    invoice = issue(ach_customer())
    scheduled(invoice)
    result = ach_export(now=EXPORT)
    entry = AchFileEntry.objects.get()
    path = _return_file(tmp_path, expected_file(INITECH_DEBIT), (entry.trace_number, "R01"))
    call_command("ach_import_returns", str(path), stdout=io.StringIO())
    ach_file = AchFile.objects.get()

    stored = [
        *SettlementExchange.objects.values_list("request_body", "response_body", "error", "url"),
        *SettlementEvent.objects.values_list("note", flat=True),
        *Settlement.objects.values_list("external_ids", "last_error"),
        *AchFileEntry.objects.values_list(),
        *AchFile.objects.values_list(),
        *Customer.objects.values_list("rail_settings", flat=True),
    ]
    assert CLEAR not in json.dumps(stored, default=str)
    assert "****1012" in SettlementExchange.objects.get(step="export").request_body
    assert CLEAR not in caplog.text
    pages = [
        reverse("admin:rails_achfile_changelist"),
        reverse("admin:rails_achfile_change", args=[ach_file.pk]),
        reverse("admin:rails_achfile_export"),
        reverse("admin:rails_achfile_import_returns"),
        reverse("admin:customers_customer_change", args=[invoice.customer_id]),
    ]
    for url in pages:
        page = admin_client.get(url)
        assert page.status_code == 200, url
        assert CLEAR not in page.content.decode(), url
    assert "****1012" in admin_client.get(pages[1]).content.decode()
    download = admin_client.get(reverse("admin:rails_achfile_download", args=[ach_file.pk]))
    assert CLEAR in download.content.decode()  # the file itself carries it, as the bank needs
    assert CLEAR in result.path.read_text()
