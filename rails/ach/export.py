"""The ACH export: every ACH debit due goes into one NACHA file, in one transaction.

Due means: an ACH settlement in ``submitted`` (its debit scheduled by the rail's submit),
not yet in a file, whose debit date is on or before the next banking day, on a live or
void-free invoice, and opened in the rail's current mode (a settlement opened in sandbox
never lands in a live file, so demo invoices are never debited for real). The file
debits them all on the next banking day after the export's ACH calendar day.

In one transaction, under an advisory lock (two exports never interleave) with the
settlements locked (``FOR UPDATE SKIP LOCKED``): build the file, store it (encrypted:
it carries clear account numbers), record each entry and its trace number, and move
each settlement to ``collecting`` with an exchange describing its entry (account
masked). The file is written to disk only after that commits, so a file on disk is
always one the database knows; if writing fails, the stored copy is still downloadable
from the admin. A unique constraint on the entry's settlement is the guarantee that an
invoice is never put in two files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import string
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from celery import shared_task
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from core.money import from_minor_units
from rails.ach.calendar import next_banking_day
from rails.ach.crypto import decrypt_text, encrypt_text, masked
from rails.ach.debits import DueDebit, ach_debit_for, ach_due_locked
from rails.ach.nacha import (
    AchDebit,
    AchOriginator,
    NachaFile,
    nacha_file_build,
)
from rails.adapters.ach import (
    ach_business_date,
    ach_is_sandbox,
    ach_originator,
    ach_paid_after,
    ach_time_zone,
)
from rails.base import Exchange, RailResult
from rails.models import Settlement
from rails.models_ach import AchFile, AchFileEntry
from rails.outcomes import settlement_apply_result

logger = logging.getLogger(__name__)

FILE_ID_MODIFIERS = string.ascii_uppercase + string.digits
COMPANY_ENTRY_DESCRIPTION = "INVOICE"
_PROBE_DEBIT = AchDebit(  # a known-good debit, to check the originator on its own
    invoice_number="PROBE",
    amount_minor=1,
    receiver_name="PROBE",
    receiver_id="PROBE",
    routing_number="011000015",
    account_number="0000",
    account_type="checking",
    sec_code="CCD",
)


class AchExportError(Exception):
    """The export cannot build or write a file (configuration, too many files today)."""


@dataclass(frozen=True)
class AchExportResult:
    file_id: int
    file_name: str
    path: Path
    effective_date: date
    entry_count: int
    total_debit_minor: int
    sandbox: bool
    skipped: tuple[str, ...] = ()  # settlements left out, and why (no account numbers)


def _originator_checked(originator: AchOriginator, now: datetime, effective: date) -> None:
    try:
        nacha_file_build(
            originator=originator,
            debits=[_PROBE_DEBIT],
            created_at=now,
            effective_date=effective,
            file_id_modifier="A",
        )
    except ValueError as exc:
        raise AchExportError(f"The ACH settings are not usable: {exc}") from None


def _file_id_modifier(business_date: date) -> str:
    used = set(
        AchFile.objects.filter(business_date=business_date).values_list(
            "file_id_modifier", flat=True
        )
    )
    for modifier in FILE_ID_MODIFIERS:
        if modifier not in used:
            return modifier
    raise AchExportError(
        f"{len(FILE_ID_MODIFIERS)} ACH files were already made on {business_date.isoformat()}: "
        "a file id modifier (A-Z, 0-9) tells them apart and there are no more. Export tomorrow."
    )


def _skip(settlement: Settlement, *, reason: str, now: datetime, actor: str) -> str:
    """Fail a settlement that cannot be debited, for an operator to fix and retry."""
    message = f"Left out of the ACH export: {reason}"
    settlement_apply_result(
        settlement_id=settlement.pk,
        result=RailResult(outcome="failed", error=message, retryable=False),
        attempt=settlement.attempts,
        now=now,
        actor=actor,
    )
    return f"{settlement.invoice.number}: {reason}"


def _exchange(entry: AchFileEntry, ach_file: AchFile, settlement: Settlement) -> Exchange:
    body = {
        "file": ach_file.file_name,
        "file_id_modifier": ach_file.file_id_modifier,
        "effective_date": ach_file.effective_date.isoformat(),
        "invoice": entry.invoice_number,
        "trace_number": entry.trace_number,
        "sec_code": entry.sec_code,
        "transaction_code": entry.transaction_code,
        "amount_minor": entry.amount_minor,
        "currency": "USD",
        "routing_number": entry.routing_number,
        "account": masked(entry.account_last4),
        "receiver_name": entry.receiver_name,
    }
    return Exchange(
        step="export",
        method="FILE",
        url=f"nacha:{ach_file.file_name}",
        request_body=json.dumps(body, indent=2),
        idempotency_key=f"ach-{settlement.invoice_id}-export",
        sent=not ach_file.sandbox,
    )


def _record(
    nacha: NachaFile,
    due: list[DueDebit],
    *,
    now: datetime,
    business_date: date,
    sandbox: bool,
    name: str,
    path: Path,
    actor: str,
) -> AchFile:
    data = nacha.encode()
    ach_file = AchFile.objects.create(
        file_name=name,
        created_at=now,
        business_date=business_date,
        file_id_modifier=nacha.file_id_modifier,
        effective_date=nacha.effective_date,
        sandbox=sandbox,
        odfi_routing=nacha.originator.odfi_routing,
        company_id=nacha.originator.company_id,
        entry_count=len(nacha.entries),
        total_debit_minor=nacha.total_debit_minor,
        sha256=hashlib.sha256(data).hexdigest(),
        content_encrypted=encrypt_text(nacha.content),
        path=str(path),
        created_by=actor,
    )
    by_invoice = {item.debit.invoice_number: item for item in due}
    entries = AchFileEntry.objects.bulk_create(
        AchFileEntry(
            file=ach_file,
            settlement=by_invoice[built.invoice_number].settlement,
            invoice_id=by_invoice[built.invoice_number].settlement.invoice_id,
            invoice_number=built.invoice_number,
            trace_number=built.trace_number,
            trace_sequence=int(built.trace_number[-7:]),
            batch_number=built.batch_number,
            sec_code=built.sec_code,
            transaction_code=built.transaction_code,
            amount_minor=built.amount_minor,
            routing_number=built.routing_number,
            account_last4=by_invoice[built.invoice_number].account_last4,
            receiver_name=built.receiver_name,
        )
        for built in nacha.entries
    )
    paid_after = ach_paid_after(nacha.effective_date)
    for entry in entries:
        settlement = entry.settlement
        settlement_apply_result(
            settlement_id=settlement.pk,
            result=RailResult(
                outcome="collecting",
                external_ids={
                    "ach_file_id": ach_file.pk,
                    "ach_file_name": ach_file.file_name,
                    "ach_trace_number": entry.trace_number,
                    "ach_effective_date": ach_file.effective_date.isoformat(),
                },
                exchanges=(_exchange(entry, ach_file, settlement),),
                next_check_at=paid_after,
                sandbox=sandbox,
                note=f"In ACH file {ach_file.file_name}, trace {entry.trace_number}: debit of "
                f"{from_minor_units(entry.amount_minor, 'USD'):,} USD from {masked(entry.account_last4)} on "
                f"{ach_file.effective_date.isoformat()}"
                + (" (sandbox: placeholder originator, never upload it)." if sandbox else "."),
            ),
            attempt=settlement.attempts,
            now=now,
            actor=actor,
        )
    return ach_file


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def _originator_for(*, sandbox: bool, created_at: datetime, effective: date) -> AchOriginator:
    """The originator this file is sent as, checked; AchExportError when unusable."""
    try:
        originator = ach_originator(sandbox=sandbox)
    except ImproperlyConfigured as exc:
        raise AchExportError(str(exc)) from None
    _originator_checked(originator, created_at, effective)
    return originator


def _debits_due(
    *,
    originator: AchOriginator,
    created_at: datetime,
    effective: date,
    sandbox: bool,
    now: datetime,
    actor: str,
) -> tuple[list[DueDebit], list[str]]:
    """The debits of every settlement due, and a line for each one skipped: failed for an
    operator when its bank details cannot be debited, settled as paid with no debit when
    its invoice is fully credited."""
    due: list[DueDebit] = []
    skipped: list[str] = []
    for settlement in ach_due_locked(effective=effective, sandbox=sandbox):
        try:
            item = ach_debit_for(
                settlement, originator=originator, now=created_at, effective=effective
            )
        except (ValidationError, ValueError) as exc:
            reason = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            skipped.append(_skip(settlement, reason=reason, now=now, actor=actor))
            continue
        if item is None:
            settlement_apply_result(
                settlement_id=settlement.pk,
                result=RailResult(
                    outcome="paid",
                    note="Fully credited before the ACH export: nothing debited.",
                ),
                attempt=settlement.attempts,
                now=now,
                actor=actor,
            )
            continue
        due.append(item)
    for line in skipped:
        logger.warning("ACH export: %s", line)
    return due, skipped


def _nacha_for(
    due: list[DueDebit],
    *,
    originator: AchOriginator,
    created_at: datetime,
    effective: date,
    modifier: str,
) -> str:
    """The NACHA file of these debits, their trace numbers following the last file's."""
    first_sequence = (AchFileEntry.objects.aggregate(last=Max("trace_sequence"))["last"] or 0) + 1
    try:
        return nacha_file_build(
            originator=originator,
            debits=[item.debit for item in due],
            created_at=created_at,
            effective_date=effective,
            file_id_modifier=modifier,
            company_entry_description=COMPANY_ENTRY_DESCRIPTION,
            first_trace_sequence=first_sequence,
        )
    except ValueError as exc:  # each debit passed alone: the file's totals overflowed
        raise AchExportError(f"The ACH file cannot be built: {exc}") from None


def _written(ach_file: AchFile, nacha: str, path: Path, *, sandbox: bool) -> None:
    """Write the stored file to ``path``; AchExportError (the file stays stored) if not."""
    try:
        _write(path, nacha.encode())
    except OSError as exc:
        raise AchExportError(
            f"ACH file {ach_file.file_name} is stored (download it from the admin) but could not "
            f"be written to {path}: {exc.strerror or exc}"
        ) from None
    logger.info(
        "ACH file %s: %d debits, %d cents, effective %s%s",
        ach_file.file_name,
        ach_file.entry_count,
        ach_file.total_debit_minor,
        ach_file.effective_date.isoformat(),
        " (sandbox)" if sandbox else "",
    )


def ach_export(
    *, now: datetime, out_path: str | Path | None = None, actor: str = "ach export"
) -> AchExportResult | None:
    """Build, store and write the NACHA file of every ACH debit due as of `now`.

    Writes it to `out_path`, or under ``MEDIA_ROOT/ach/<year>/``. Settlements that
    cannot be debited (bank details missing or unreadable) are failed, for an operator
    to fix and retry, and listed in the result; fully credited ones are settled as paid
    with no debit. Answers None when no debit is due.

    Raises AchExportError when the ACH settings are unusable, the day has run out of file
    id modifiers, or the file cannot be written (it is stored all the same).
    """
    business_date = ach_business_date(now)
    created_at = now.astimezone(ach_time_zone()).replace(tzinfo=None)  # the bank's local time
    effective = next_banking_day(business_date)
    sandbox = ach_is_sandbox()
    originator = _originator_for(sandbox=sandbox, created_at=created_at, effective=effective)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended('rails.ach_export', 0))")
        due, skipped = _debits_due(
            originator=originator,
            created_at=created_at,
            effective=effective,
            sandbox=sandbox,
            now=now,
            actor=actor,
        )
        if not due:
            return None
        modifier = _file_id_modifier(business_date)
        nacha = _nacha_for(
            due,
            originator=originator,
            created_at=created_at,
            effective=effective,
            modifier=modifier,
        )
        name = f"ach-{business_date:%Y%m%d}-{modifier}{'-sandbox' if sandbox else ''}.ach"
        path = (
            Path(out_path)
            if out_path
            else Path(settings.MEDIA_ROOT) / "ach" / f"{business_date:%Y}" / name
        )
        ach_file = _record(
            nacha,
            due,
            now=now,
            business_date=business_date,
            sandbox=sandbox,
            name=name,
            path=path,
            actor=actor,
        )
    _written(ach_file, nacha, path, sandbox=sandbox)
    return AchExportResult(
        file_id=ach_file.pk,
        file_name=ach_file.file_name,
        path=path,
        effective_date=ach_file.effective_date,
        entry_count=ach_file.entry_count,
        total_debit_minor=ach_file.total_debit_minor,
        sandbox=sandbox,
        skipped=tuple(skipped),
    )


def ach_file_content(ach_file: AchFile) -> str:
    """The file's NACHA text, decrypted, for a download. Raises AchDecryptionError."""
    return decrypt_text(ach_file.content_encrypted)


@shared_task(name="rails.ach_export", acks_late=True)
def ach_export_task() -> str | None:
    """Daily: export the ACH debits due. Re-running it exports nothing twice."""
    result = ach_export(now=timezone.now())
    return str(result.path) if result else None
