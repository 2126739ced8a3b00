"""Changes to customers and consumer mappings.

Every write validates first and raises ``django.core.exceptions.ValidationError`` with
field-level messages; the database constraints (no cycle, no overlapping mapping) are
the guarantee behind those checks and are translated into the same errors.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils.module_loading import import_string

from customers.models import (
    BILL_TO_PARENT_NEEDS_PARENT,
    CUSTOMER_FIELDS,
    ConsumerMapping,
    ConsumerMappingChange,
    Customer,
)
from customers.rail_settings import rail_settings_unmask
from customers.selectors import consumer_mappings_overlapping, customer_ancestor_ids


def customer_parent_validate(*, customer: Customer, parent: Customer | None) -> None:
    """Raise ``ValidationError`` on ``parent`` if placing ``customer`` under it makes a cycle."""
    if parent is None or customer.pk is None:
        return
    if parent.pk == customer.pk:
        raise ValidationError({"parent": f"{customer.key} cannot be its own parent."})
    chain = customer_ancestor_ids(customer_id=parent.pk)
    if customer.pk in chain:
        keys = dict(Customer.objects.filter(pk__in=chain).values_list("pk", "key"))
        path = " → ".join(keys[i] for i in reversed(chain[: chain.index(customer.pk) + 1]))
        raise ValidationError(
            {
                "parent": f"{parent.key} is already below {customer.key} ({path}); "
                f"making it {customer.key}'s parent would create a cycle."
            }
        )


def _translate_integrity_error(exc: IntegrityError) -> ValidationError:
    message = str(exc)
    if "customer_no_cycle" in message or "customer_not_own_parent" in message:
        return ValidationError({"parent": "That parent would create a cycle in the customer tree."})
    if "customers_customer_key" in message:
        return ValidationError({"key": "A customer with this key already exists."})
    if "customer_billed_to_parent_has_parent" in message:
        return ValidationError({"bill_to_parent": BILL_TO_PARENT_NEEDS_PARENT})
    return ValidationError(message)


def rail_settings_clean(*, customer: Customer, rail: str, rail_settings: dict) -> dict:
    """The settings as ``rail`` stores them; raises ``ValidationError`` if it refuses them."""
    probe = Customer(pk=customer.pk, rail=rail, rail_settings=rail_settings)
    _rail_settings_clean(probe)
    return probe.rail_settings


def _rail_settings_clean(customer: Customer) -> None:
    """Let the customer's rail validate and normalise its settings (a routing number's
    check digit, an account number encrypted at rest, whatever the rail). Rails plug in
    through the ``CUSTOMER_RAIL_SETTINGS_HOOK`` setting, so customers never imports them.
    A masked account number (``****6789``, as shown) stands for the stored one, also when
    the rail changes."""
    stored = (
        Customer.objects.filter(pk=customer.pk).values_list("rail", "rail_settings").first()
        if customer.pk
        else None
    )
    customer.rail_settings = rail_settings_unmask(
        given=customer.rail_settings or {}, stored=stored[1] if stored else None
    )
    path = getattr(settings, "CUSTOMER_RAIL_SETTINGS_HOOK", "")
    if path and customer.rail:
        customer.rail_settings = import_string(path)(
            rail=customer.rail,
            rail_settings=customer.rail_settings,
            previous=stored[1] if stored and stored[0] == customer.rail else None,
        )


def customer_save(*, customer: Customer) -> Customer:
    """Save a customer whose fields were set elsewhere (the admin's form): the same checks
    and the same rail-settings cleaning as create and update."""
    if customer.pk:
        customer_parent_validate(customer=customer, parent=customer.parent)
    return _customer_save(customer)


def _customer_save(customer: Customer) -> Customer:
    try:
        _rail_settings_clean(customer)
    except ValidationError as exc:
        raise ValidationError({"rail_settings": exc.messages}) from exc
    customer.full_clean(validate_unique=True)
    try:
        with transaction.atomic():
            customer.save()
    except IntegrityError as exc:
        raise _translate_integrity_error(exc) from exc
    return customer


def customer_create(**fields: Any) -> Customer:
    """Create a customer. Unknown fields raise ``TypeError``; invalid values ``ValidationError``.

    ``bill_to_parent`` defaults to on for a subsidiary and off for a top-level customer;
    given as on without a parent, it is refused (``ValidationError`` on ``bill_to_parent``).
    """
    unknown = set(fields).difference(CUSTOMER_FIELDS)
    if unknown:
        raise TypeError(f"Unknown customer fields: {sorted(unknown)}")
    fields.setdefault("bill_to_parent", fields.get("parent") is not None)
    return _customer_save(Customer(**fields))


def customer_update(*, customer: Customer, **fields: Any) -> Customer:
    """Change a customer's fields; a new parent is checked for cycles first.

    A customer that becomes a subsidiary, or top-level, without ``bill_to_parent`` given
    takes the default of its new place (on, off); on without a parent is refused.
    """
    unknown = set(fields).difference(CUSTOMER_FIELDS)
    if unknown:
        raise TypeError(f"Unknown customer fields: {sorted(unknown)}")
    if "parent" in fields:
        customer_parent_validate(customer=customer, parent=fields["parent"])
        becomes_subsidiary = fields["parent"] is not None
        if "bill_to_parent" not in fields and becomes_subsidiary != (
            customer.parent_id is not None
        ):
            fields["bill_to_parent"] = becomes_subsidiary
    for name, value in fields.items():
        setattr(customer, name, value)
    return _customer_save(customer)


def _lock_consumer_key(consumer_key: str) -> None:
    # Serialises changes to one consumer key so checks and writes see each other.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))", [consumer_key])


def _describe(mapping: ConsumerMapping) -> str:
    until = mapping.valid_to.isoformat() if mapping.valid_to else "open-ended"
    return (
        f"mapping #{mapping.pk} of '{mapping.consumer_key}' to {mapping.customer.key} "
        f"from {mapping.valid_from.isoformat()} until {until}"
    )


def consumer_mapping_validate(
    *,
    consumer_key: str,
    valid_from: datetime,
    valid_to: datetime | None,
    exclude_pk: int | None = None,
) -> None:
    """Raise ``ValidationError`` if the range is empty or meets another mapping of the key."""
    if valid_to is not None and valid_to <= valid_from:
        raise ValidationError({"valid_to": "valid_to must be after valid_from."})
    conflict = consumer_mappings_overlapping(
        consumer_key=consumer_key, valid_from=valid_from, valid_to=valid_to, exclude_pk=exclude_pk
    ).first()
    if conflict is not None:
        raise ValidationError(
            {
                "valid_from": f"Overlaps {_describe(conflict)}. A consumer key belongs to one customer at a time."
            }
        )


def _record_change(consumer_key: str, start: datetime, end: datetime | None) -> None:
    ConsumerMappingChange.objects.create(
        consumer_key=consumer_key, range_start=start, range_end=end
    )


def _span(a: ConsumerMapping | None, b: ConsumerMapping) -> tuple[datetime, datetime | None]:
    """The time range whose attribution may differ between mapping states ``a`` and ``b``."""
    if a is None:
        return b.valid_from, b.valid_to
    start = min(a.valid_from, b.valid_from)
    end = None if a.valid_to is None or b.valid_to is None else max(a.valid_to, b.valid_to)
    return start, end


def _mapping_save(mapping: ConsumerMapping) -> ConsumerMapping:
    try:
        with transaction.atomic():
            _lock_consumer_key(mapping.consumer_key)
            before = ConsumerMapping.objects.filter(pk=mapping.pk).first() if mapping.pk else None
            consumer_mapping_validate(
                consumer_key=mapping.consumer_key,
                valid_from=mapping.valid_from,
                valid_to=mapping.valid_to,
                exclude_pk=mapping.pk,
            )
            mapping.full_clean(validate_constraints=False)
            mapping.save()
            if before is not None and before.consumer_key != mapping.consumer_key:
                _record_change(before.consumer_key, before.valid_from, before.valid_to)
                before = None
            _record_change(mapping.consumer_key, *_span(before, mapping))
    except IntegrityError as exc:  # a writer that skipped the lock; the constraint still holds
        consumer_mapping_validate(
            consumer_key=mapping.consumer_key,
            valid_from=mapping.valid_from,
            valid_to=mapping.valid_to,
            exclude_pk=mapping.pk,
        )
        raise ValidationError(str(exc)) from exc
    return mapping


def consumer_mapping_create(
    *, consumer_key: str, customer: Customer, valid_from: datetime, valid_to: datetime | None = None
) -> ConsumerMapping:
    """Map ``consumer_key`` to ``customer`` over ``[valid_from, valid_to)``."""
    return _mapping_save(
        ConsumerMapping(
            consumer_key=consumer_key, customer=customer, valid_from=valid_from, valid_to=valid_to
        )
    )


def consumer_mapping_update(*, mapping: ConsumerMapping, **fields: Any) -> ConsumerMapping:
    """Change a mapping's customer or validity; overlaps are refused as on create."""
    unknown = set(fields) - {"consumer_key", "customer", "valid_from", "valid_to"}
    if unknown:
        raise TypeError(f"Unknown mapping fields: {sorted(unknown)}")
    for name, value in fields.items():
        setattr(mapping, name, value)
    return _mapping_save(mapping)


@transaction.atomic
def consumer_mapping_delete(*, mapping: ConsumerMapping) -> None:
    """Delete a mapping; usage in its range becomes unattributed (for open periods)."""
    _lock_consumer_key(mapping.consumer_key)
    _record_change(mapping.consumer_key, mapping.valid_from, mapping.valid_to)
    mapping.delete()


@transaction.atomic
def consumer_key_move(*, consumer_key: str, to_customer: Customer, at: datetime) -> ConsumerMapping:
    """Move ``consumer_key`` to ``to_customer`` from ``at`` on, in one transaction.

    The mapping valid at ``at`` (if any) is closed at ``at``; the new mapping runs from
    ``at`` until the closed mapping would have ended, or until the key's next mapping
    starts, or open-ended. Later mappings are left as they are.
    """
    _lock_consumer_key(consumer_key)
    current = (
        ConsumerMapping.objects.select_for_update()
        .filter(consumer_key=consumer_key, valid_from__lte=at)
        .exclude(valid_to__lte=at)
        .first()
    )
    if current is not None and current.customer_id == to_customer.pk:
        raise ValidationError(
            {
                "to_customer": f"'{consumer_key}' already belongs to {to_customer.key} at {at.isoformat()}."
            }
        )
    if current is not None and current.valid_from == at:
        # The whole mapping moves: re-point it instead of leaving an empty range behind.
        current.customer = to_customer
        current.save(update_fields=["customer"])
        _record_change(consumer_key, current.valid_from, current.valid_to)
        return current
    end: datetime | None
    if current is not None:
        end = current.valid_to
        current.valid_to = at
        current.save(update_fields=["valid_to"])
        _record_change(consumer_key, at, end)
    else:
        following = (
            ConsumerMapping.objects.filter(consumer_key=consumer_key, valid_from__gt=at)
            .order_by("valid_from")
            .first()
        )
        end = following.valid_from if following else None
    return _mapping_save(
        ConsumerMapping(
            consumer_key=consumer_key, customer=to_customer, valid_from=at, valid_to=end
        )
    )
