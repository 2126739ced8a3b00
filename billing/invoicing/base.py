"""What the invoice lifecycle's parts share: the state error, the chunk size of a
billing run, gapless numbering, invoice events and history rows for bulk writes."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone
from django.utils.module_loading import import_string

from billing.models import Invoice, InvoiceEvent
from core.current_request import request_user


class InvoiceStateError(ValidationError):
    """The invoice is not in a state that allows the change."""


def _chunk() -> int:
    """A billing run works through its accounts in chunks of ``BILLING_RUN_CHUNK``: one
    context (a handful of queries) and one set of bulk writes per chunk, one transaction
    each. A run that dies loses at most the chunk it was on (rolled back, numbers
    returned)."""
    return settings.BILLING_RUN_CHUNK


# ---------------------------------------------------------------- numbering

_SEQUENCE_TAKE = """
INSERT INTO billing_documentsequence (key, next_number) VALUES (%s, %s + 1)
ON CONFLICT (key) DO UPDATE SET next_number = billing_documentsequence.next_number + EXCLUDED.next_number - 1
RETURNING next_number
"""


def sequence_take(*, prefix: str, year: int, count: int) -> list[str]:
    """Take the next ``count`` numbers of ``prefix`` for ``year`` (``INV-2026-000001``…)
    in one statement.

    Must run inside the transaction that uses the numbers: the row lock is held until it
    commits, and a rollback returns them, so numbers are never skipped or reused.
    """
    key = f"{prefix}-{year}"
    with connection.cursor() as cursor:
        cursor.execute(_SEQUENCE_TAKE, [key, count])
        after = cursor.fetchone()[0]
    return [f"{key}-{number:06d}" for number in range(after - count, after)]


def sequence_next(*, prefix: str, year: int) -> str:
    """Take the next number of ``prefix`` for ``year`` (see ``sequence_take``)."""
    return sequence_take(prefix=prefix, year=year, count=1)[0]


def _event(
    invoice: Invoice,
    *,
    at: datetime,
    from_status: str,
    to_status: str,
    actor: str = "",
    note: str = "",
) -> None:
    InvoiceEvent.objects.create(
        invoice=invoice, at=at, from_status=from_status, to_status=to_status, actor=actor, note=note
    )


def _history(invoices: list[Invoice], *, first: bool, reason) -> None:
    """History rows for invoices written in bulk (``bulk_create``/``bulk_update`` send no
    signals), as ``audit.signals`` writes them for one invoice's state change, with the
    signed-in user where there is one. ``reason``: a text, or a function of the invoice."""
    if not invoices or not hasattr(Invoice, "history"):
        return
    model = Invoice.history.model
    fields = [f.attname for f in model.tracked_fields]
    when, user = timezone.now(), request_user()
    model.objects.bulk_create(
        model(
            **{name: getattr(invoice, name) for name in fields},
            history_date=when,
            history_type="+" if first else "~",
            history_user=user,
            history_change_reason=(reason(invoice) if callable(reason) else reason)[:100],
        )
        for invoice in invoices
    )


def _invoices_update(invoices: list[Invoice], fields: list[str]) -> None:
    """Write ``fields`` of many invoices in one ``UPDATE … FROM unnest(arrays)``
    (Django's ``bulk_update`` builds a ``CASE`` per row and field: slow to build and to
    run for a chunk of a billing run)."""
    if not invoices:
        return
    columns = [Invoice._meta.get_field(name) for name in fields]
    names = ", ".join(c.column for c in columns)
    sql = (
        "UPDATE billing_invoice i SET "
        + ", ".join(f"{c.column} = v.{c.column}" for c in columns)
        + " FROM unnest(%s::uuid[], "
        + ", ".join(f"%s::{c.db_type(connection)}[]" for c in columns)
        + f") AS v(id, {names}) WHERE i.id = v.id"
    )
    params = [[i.pk for i in invoices]] + [
        [c.get_db_prep_save(getattr(i, c.attname), connection) for i in invoices] for c in columns
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _hooks(setting: str):
    return [import_string(path) for path in getattr(settings, setting, [])]
