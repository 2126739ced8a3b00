"""Reads of the audit trail: one object's history (with the rows of what hangs off it:
a customer's consumer mappings, an invoice's lines, a plan's versions and prices), and
the latest changes across every audited model. Each row says when, who, what kind of
change and which fields changed from what to what.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.db import models

from billing.models import CustomerAccess, Invoice, InvoiceLine, Plan, PlanVersion, RateCard
from core.money import plain_decimal
from customers.models import ConsumerMapping, Customer

AUDITED_MODELS: tuple[type[models.Model], ...] = (
    Customer,
    ConsumerMapping,
    Plan,
    PlanVersion,
    RateCard,
    Invoice,
    InvoiceLine,
    CustomerAccess,
)
TYPES = {"+": "created", "~": "changed", "-": "deleted"}
MAX_ROWS_PER_MODEL = 2000  # an object's page reads at most this many rows of each model
MASKED_KEYS = ("account_number", "secret", "token")


@dataclass(frozen=True)
class FieldChange:
    field: str
    old: str
    new: str


@dataclass(frozen=True)
class HistoryEntry:
    model: type[models.Model]
    object_id: str
    object_repr: str
    at: datetime
    type: str  # created | changed | deleted
    user: str  # empty: no signed-in user (a task, a command, an API key: see reason)
    reason: str
    changes: tuple[FieldChange, ...]
    history_id: int

    @property
    def what(self) -> str:
        return f"{self.model._meta.verbose_name} {self.object_repr}"


def audited_model(*, app_label: str, model_name: str) -> type[models.Model] | None:
    """The audited model with this label, or None (unknown or not audited)."""
    for model in AUDITED_MODELS:
        if (model._meta.app_label, model._meta.model_name) == (app_label, model_name.lower()):
            return model
    return None


def _text(field: models.Field, value) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, dict):
        value = {
            k: ("••••" if any(m in k for m in MASKED_KEYS) and v else v) for k, v in value.items()
        }
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return plain_decimal(value)
    if field.choices:
        return f"{dict(field.flatchoices).get(value, value)}"
    return str(value)


def _fk_names(rows: list, fields: list[models.Field]) -> dict[tuple[str, object], str]:
    """``(attname, id) -> str(related object)`` for every foreign key value in the rows, a
    query per related model."""
    names: dict[tuple[str, object], str] = {}
    for field in fields:
        if not field.is_relation:
            continue
        ids = {getattr(r, field.attname) for r in rows} - {None}
        if not ids:
            continue
        related = field.related_model._default_manager.in_bulk(ids)
        for pk in ids:
            names[(field.attname, pk)] = str(related[pk]) if pk in related else f"#{pk} (deleted)"
    return names


def _repr(row, model) -> str:
    if model is ConsumerMapping:
        return f"{row.consumer_key} [{row.valid_from:%Y-%m-%d %H:%M} – " + (
            f"{row.valid_to:%Y-%m-%d %H:%M})" if row.valid_to else "open)"
        )
    if model is Invoice:
        return row.number or f"draft {str(row.id)[:8]}"
    if model is InvoiceLine:
        return f"“{row.description}”"
    if model is PlanVersion:
        return f"v{row.version} (#{row.id})"
    if model is RateCard:
        return f"{row.key} (version #{row.plan_version_id})"
    if model is CustomerAccess:
        return "invoice links and portal sessions"
    return getattr(row, "key", None) or str(row.id)


def _entries(model, rows_newest_first: list) -> list[HistoryEntry]:
    """Entries for history rows of ``model``, each diffed with the row before it of the
    same object (among the rows given)."""
    history = model.history.model
    fields = [f for f in history.tracked_fields if f.attname not in ("updated_at",)]
    names = _fk_names(rows_newest_first, fields)

    def shown(field, row) -> str:
        value = getattr(row, field.attname)
        if field.is_relation and value is not None:
            return names.get((field.attname, value), f"#{value}")
        return _text(field, value)

    rows = list(reversed(rows_newest_first))
    previous: dict[object, object] = {}
    entries = []
    for row in rows:
        before = previous.get(row.id)
        if row.history_type == "~" and before is not None:
            changes = tuple(
                FieldChange(str(f.verbose_name), shown(f, before), shown(f, row))
                for f in fields
                if getattr(before, f.attname) != getattr(row, f.attname)
            )
        elif row.history_type == "+" or (row.history_type == "~" and before is None):
            changes = tuple(
                FieldChange(str(f.verbose_name), "", shown(f, row))
                for f in fields
                if f.attname != "id" and getattr(row, f.attname) not in (None, "", [], {})
            )
        else:
            changes = ()
        previous[row.id] = row
        entries.append(
            HistoryEntry(
                model=model,
                object_id=str(row.id),
                object_repr=_repr(row, model),
                at=row.history_date,
                type=TYPES.get(row.history_type, row.history_type),
                user=row.history_user.get_username() if row.history_user_id else "",
                reason=row.history_change_reason or "",
                changes=changes,
                history_id=row.history_id,
            )
        )
    return list(reversed(entries))


def _rows(model, limit: int = MAX_ROWS_PER_MODEL, **filters) -> list:
    return list(
        model.history.model.objects.filter(**filters)
        .select_related("history_user")
        .order_by("-history_date", "-history_id")[:limit]
    )


def object_history(*, model: type[models.Model], pk) -> list[HistoryEntry]:
    """Every recorded change of the object and of what hangs off it, newest first."""
    entries = _entries(model, _rows(model, id=pk))
    if model is Customer:
        entries += _entries(ConsumerMapping, _rows(ConsumerMapping, customer_id=pk))
        entries += _entries(CustomerAccess, _rows(CustomerAccess, customer_id=pk))
    elif model is Invoice:
        entries += _entries(InvoiceLine, _rows(InvoiceLine, invoice_id=pk))
    elif model in (Plan, PlanVersion):
        if model is Plan:
            versions = _rows(PlanVersion, plan_id=pk)
            entries += _entries(PlanVersion, versions)
            version_ids = {r.id for r in versions}
        else:
            version_ids = {pk}
        entries += _entries(RateCard, _rows(RateCard, plan_version_id__in=version_ids))
    return sorted(entries, key=lambda e: (e.at, e.history_id), reverse=True)


def object_last_repr(*, model: type[models.Model], pk) -> str | None:
    """What the object was called in its newest history row (it may be deleted since)."""
    rows = _rows(model, limit=1, id=pk)
    return _repr(rows[0], model) if rows else None


def recent_changes(*, models_: list[type[models.Model]], limit: int = 100) -> list[HistoryEntry]:
    """The newest ``limit`` changes across ``models_`` (without field diffs: a diff needs
    the row before, which may be far older)."""
    entries: list[HistoryEntry] = []
    for model in models_:
        for row in _rows(model, limit=limit):
            entries.append(
                HistoryEntry(
                    model=model,
                    object_id=str(row.id),
                    object_repr=_repr(row, model),
                    at=row.history_date,
                    type=TYPES.get(row.history_type, row.history_type),
                    user=row.history_user.get_username() if row.history_user_id else "",
                    reason=row.history_change_reason or "",
                    changes=(),
                    history_id=row.history_id,
                )
            )
    return sorted(entries, key=lambda e: (e.at, e.history_id), reverse=True)[:limit]
