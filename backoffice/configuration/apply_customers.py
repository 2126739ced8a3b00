"""Applying the ``customers`` section: customers and their subsidiaries, consumer
mappings and subscriptions. Part of ``backoffice.configuration.apply``; same rules (create and
update, never delete, errors named by their place in the file)."""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.module_loading import import_string

from backoffice.configuration.report import ApplyRun, instant_text, kept_line, no_such
from backoffice.configuration.schema import CONSUMER_VALID_FROM_DEFAULT
from billing.catalog.services import plan_latest_version, subscription_cancel, subscription_create
from billing.models import Plan, PlanVersion, Subscription
from customers.models import CUSTOMER_ADDRESS_FIELDS, ConsumerMapping, Customer
from customers.rail_settings import rail_settings_unmask
from customers.services import (
    consumer_mapping_create,
    consumer_mapping_update,
    customer_create,
    customer_update,
)

TEXT_FIELDS = ("name", "email", *CUSTOMER_ADDRESS_FIELDS)
CUSTOMER_NAMES: dict[str, str | None] = {"parent": None}
SUBSCRIPTION_NAMES: dict[str, str | None] = {
    "customer": None,
    "plan_version": "plan",
    "anchor": "start",
}


@dataclass(frozen=True)
class _Consumer:
    path: str
    customer: Customer
    key: str
    valid_from: datetime
    valid_to: datetime | None

    def describe(self) -> str:
        until = f" until {instant_text(self.valid_to)}" if self.valid_to else ""
        return (
            f"consumer {self.key} → {self.customer.key} from {instant_text(self.valid_from)}{until}"
        )


def rail_settings_as_stored(rail: str, rail_settings: dict, previous: dict | None = None) -> dict:
    """The settings as saving them would store them: a masked account number stands for
    the stored one, and the rail's own cleaning hook (the one customers' services run)
    normalises them, so a re-apply compares like with like. Settings the hook refuses
    come back as given; the save reports why."""
    try:
        rail_settings = rail_settings_unmask(given=rail_settings, stored=previous)
    except ValidationError:
        return rail_settings
    path = getattr(settings, "CUSTOMER_RAIL_SETTINGS_HOOK", "")
    if not path or not rail:
        return rail_settings
    try:
        return import_string(path)(
            rail=rail, rail_settings=copy.deepcopy(rail_settings), previous=copy.deepcopy(previous)
        )
    except ValidationError:
        return rail_settings


def walk(items: list[dict], path: str, parent: dict | None = None) -> Iterator[tuple]:
    """(path, customer item, parent item), parents before their subsidiaries."""
    for i, item in enumerate(items):
        here = f"{path}[{i}]"
        yield here, item, parent
        yield from walk(item.get("subsidiaries", []), f"{here}.subsidiaries", item)


def _mapping_text(mapping: ConsumerMapping) -> str:
    until = f" until {instant_text(mapping.valid_to)}" if mapping.valid_to else ""
    return f"{mapping.consumer_key} → {mapping.customer.key} from {instant_text(mapping.valid_from)}{until}"


def _subscription_text(customer: Customer, version: PlanVersion, start, end) -> str:
    until = f" until {instant_text(end)}" if end else ""
    return (
        f"{customer.key} on {version.plan.key} v{version.version} from {instant_text(start)}{until}"
    )


class CustomerApplier:
    def __init__(self, run: ApplyRun, items: list[dict]) -> None:
        self.run = run
        self.items = items
        self.customers: dict[str, Customer] = {}
        self.consumers: list[_Consumer] = []
        self.subscriptions: list[tuple[str, Customer, dict]] = []
        self.kept_mappings: list[ConsumerMapping] = []
        self.matched_subscriptions: set[int] = set()

    # -- checks before any write --------------------------------------------------

    def known(self) -> set[str]:
        """Keys of customers in the file (at any depth) or the database."""
        in_file = {item["key"] for _, item, _ in walk(self.items, "customers")}
        return in_file | set(Customer.objects.values_list("key", flat=True))

    def check(self, *, plan_keys: set[str]) -> None:
        first: dict[str, str] = {}
        spans: dict[str, list[tuple[datetime, datetime | None, str, str]]] = defaultdict(list)
        for path, item, _ in walk(self.items, "customers"):
            key = item["key"]
            if key in first:
                self.run.error(f"{path}.key", f"'{key}' appears twice (also {first[key]}).")
            first.setdefault(key, path)
            for j, consumer in enumerate(item.get("consumers", [])):
                start = consumer.get("valid_from", CONSUMER_VALID_FROM_DEFAULT)
                spans[consumer["key"]].append(
                    (start, consumer.get("valid_to"), f"{path}.consumers[{j}]", key)
                )
            for j, subscription in enumerate(item.get("subscriptions", [])):
                if subscription["plan"] not in plan_keys:
                    self.run.error(
                        f"{path}.subscriptions[{j}].plan",
                        no_such("plan", subscription["plan"], plan_keys),
                    )
        for consumer_key, entries in spans.items():
            entries.sort(key=lambda e: e[0])
            reach = entries[0]  # the entry so far that ends last
            for entry in entries[1:]:
                start, end, path, _ = entry
                if reach[1] is None or reach[1] > start:
                    self.run.error(
                        f"{path}.valid_from",
                        f"overlaps {reach[2]} ('{consumer_key}' → {reach[3]}); "
                        "a consumer key belongs to one customer at a time.",
                    )
                if reach[1] is not None and (end is None or end > reach[1]):
                    reach = entry

    # -- writes -------------------------------------------------------------------

    def apply(self, *, plans: dict[str, Plan]) -> None:
        for path, item, parent in walk(self.items, "customers"):
            self._customer(path, item, parent)
        self._consumers()
        for path, customer, item in self.subscriptions:
            self._subscription(path, customer, item, plans)

    def _customer(self, path: str, item: dict, parent_item: dict | None) -> None:
        key = item["key"]
        parent = None
        if parent_item is not None:
            parent = self.customers.get(parent_item["key"])
            if parent is None:  # the parent failed; its error is reported
                return
        fields = {name: item.get(name, "") for name in TEXT_FIELDS}
        fields |= {
            "currency": (item.get("currency") or (parent.currency if parent else "USD")).upper(),
            "timezone": item.get("timezone", "UTC"),
            "rail": item.get("rail", "manual"),
            "rail_settings": item.get("rail_settings") or {},
            "parent": parent,
        }
        # On by default for a subsidiary; a top-level customer is billed on its own (the
        # schema refuses bill_to_parent on one).
        fields["bill_to_parent"] = item.get("bill_to_parent", True) if parent else False
        existing = Customer.objects.filter(key=key).first()
        if existing is None:
            customer = self.run.attempt(
                path, lambda: customer_create(key=key, **fields), CUSTOMER_NAMES
            )
            if customer is not None:
                self.run.change("+", f"customer {key}")
        else:
            stored = {**{n: getattr(existing, n) for n in fields}, "parent": existing.parent_id}
            wanted = fields | {
                "parent": parent.pk if parent else None,
                "rail_settings": rail_settings_as_stored(
                    fields["rail"],
                    fields["rail_settings"],
                    existing.rail_settings if existing.rail == fields["rail"] else None,
                ),
            }
            changed = {n: fields[n] for n in fields if stored[n] != wanted[n]}
            customer = existing
            if changed:
                customer = self.run.attempt(
                    path, lambda: customer_update(customer=existing, **changed), CUSTOMER_NAMES
                )
                if customer is not None:
                    self.run.change("~", f"customer {key}: {', '.join(changed)}")
        if customer is None:
            return
        self.customers[key] = customer
        for j, consumer in enumerate(item.get("consumers", [])):
            self.consumers.append(
                _Consumer(
                    path=f"{path}.consumers[{j}]",
                    customer=customer,
                    key=consumer["key"],
                    valid_from=consumer.get("valid_from", CONSUMER_VALID_FROM_DEFAULT),
                    valid_to=consumer.get("valid_to"),
                )
            )
        for j, subscription in enumerate(item.get("subscriptions", [])):
            self.subscriptions.append((f"{path}.subscriptions[{j}]", customer, subscription))

    def _consumers(self) -> None:
        """Match the file's mappings with the stored ones of the same key and customer:
        same ``valid_from`` is the same mapping; one left on each side is that mapping
        moved. Changes to stored mappings run before new ones, so a key can be handed
        from one customer to another in the same file."""
        groups: dict[tuple[int, str], list[_Consumer]] = defaultdict(list)
        for consumer in self.consumers:
            groups[(consumer.customer.pk, consumer.key)].append(consumer)
        updates: list[tuple[_Consumer, ConsumerMapping, dict]] = []
        creates: list[_Consumer] = []
        for (customer_id, consumer_key), wanted in groups.items():
            stored = {
                m.valid_from: m
                for m in ConsumerMapping.objects.select_related("customer").filter(
                    customer_id=customer_id, consumer_key=consumer_key
                )
            }
            unmatched = []
            for consumer in wanted:
                mapping = stored.pop(consumer.valid_from, None)
                if mapping is None:
                    unmatched.append(consumer)
                elif mapping.valid_to != consumer.valid_to:
                    updates.append((consumer, mapping, {"valid_to": consumer.valid_to}))
            if len(unmatched) == 1 and len(stored) == 1:
                consumer, mapping = unmatched.pop(), stored.popitem()[1]
                fields = {
                    n: getattr(consumer, n)
                    for n in ("valid_from", "valid_to")
                    if getattr(mapping, n) != getattr(consumer, n)
                }
                updates.append((consumer, mapping, fields))
            creates += unmatched
            self.kept_mappings += stored.values()
        for consumer, mapping, fields in updates:
            done = self.run.attempt(
                consumer.path, lambda m=mapping, f=fields: consumer_mapping_update(mapping=m, **f)
            )
            if done is not None:
                self.run.change("~", f"{consumer.describe()}: {', '.join(fields)}")
        for consumer in creates:
            done = self.run.attempt(
                consumer.path,
                lambda c=consumer: consumer_mapping_create(
                    consumer_key=c.key,
                    customer=c.customer,
                    valid_from=c.valid_from,
                    valid_to=c.valid_to,
                ),
            )
            if done is not None:
                self.run.change("+", consumer.describe())

    def _subscription(self, path: str, customer: Customer, item: dict, plans: dict) -> None:
        plan = plans.get(item["plan"]) or Plan.objects.filter(key=item["plan"]).first()
        if plan is None:  # reported by check(), or the plan itself failed
            return
        start, end, number = item["start"], item.get("end"), item.get("version")
        existing = (
            Subscription.objects.select_related("plan_version__plan")
            .filter(customer=customer, plan_version__plan=plan, start=start)
            .first()
        )
        if existing is not None:
            self.matched_subscriptions.add(existing.pk)
            self._subscription_update(path, existing, end, number)
            return
        if number is None:
            version = plan_latest_version(plan=plan)
        else:
            version = plan.versions.filter(version=number).first()
        if version is None:
            numbers = ", ".join(str(v) for v in plan.versions.values_list("version", flat=True))
            self.run.error(
                f"{path}.version", f"plan '{plan.key}' has no version {number} (it has: {numbers})."
            )
            return
        created = self.run.attempt(
            path,
            lambda: subscription_create(
                customer=customer, plan_version=version, start=start, end=end
            ),
            SUBSCRIPTION_NAMES,
        )
        if created is not None:
            self.matched_subscriptions.add(created.pk)
            self.run.change(
                "+", f"subscription {_subscription_text(customer, version, start, end)}"
            )

    def _subscription_update(
        self, path: str, existing: Subscription, end: datetime | None, number: int | None
    ) -> None:
        current = existing.plan_version
        if number is not None and number != current.version:
            self.run.error(
                f"{path}.version",
                f"the subscription is on version {current.version}; a file does not move "
                "subscribers between versions (change the plan from the admin).",
            )
            return
        if end == existing.end:
            return
        if end is None or (existing.end is not None and end > existing.end):
            self.run.error(
                f"{path}.end",
                f"the subscription ends {instant_text(existing.end)}; a file can end a "
                "subscription sooner, but not extend or reopen it.",
            )
            return
        done = self.run.attempt(
            path,
            lambda: subscription_cancel(subscription=existing, at=end, timing="immediately"),
            SUBSCRIPTION_NAMES,
        )
        if done is not None:
            text = _subscription_text(existing.customer, current, existing.start, None)
            self.run.change("~", f"subscription {text}: end {instant_text(end)}")

    def kept(self) -> list[str]:
        in_file = [item["key"] for _, item, _ in walk(self.items, "customers")]
        customers = Customer.objects.exclude(key__in=in_file).order_by("key")
        subscriptions = (
            Subscription.objects.filter(customer__key__in=in_file)
            .exclude(pk__in=self.matched_subscriptions)
            .select_related("customer", "plan_version__plan")
            .order_by("customer__key", "start")
        )
        return [
            *kept_line("customers", list(customers.values_list("key", flat=True))),
            *kept_line("consumers", [_mapping_text(m) for m in self.kept_mappings]),
            *kept_line(
                "subscriptions",
                [
                    _subscription_text(s.customer, s.plan_version, s.start, s.end)
                    for s in subscriptions
                ],
            ),
        ]
