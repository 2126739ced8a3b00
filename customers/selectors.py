"""Reads about customers, their trees and their consumer keys.

Tree walks are single recursive queries, never a query per level.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import connection
from django.db.models import Q, QuerySet

from customers.models import ConsumerMapping, Customer

_ANCESTORS_SQL = """
WITH RECURSIVE up(id, parent_id, depth) AS (
    SELECT id, parent_id, 0 FROM customers_customer WHERE id = %s
    UNION ALL
    SELECT c.id, c.parent_id, up.depth + 1
    FROM customers_customer c JOIN up ON c.id = up.parent_id
    WHERE up.depth < 1000
)
SELECT id FROM up ORDER BY depth
"""

_DESCENDANTS_SQL = """
WITH RECURSIVE down(id, depth) AS (
    SELECT id, 0 FROM customers_customer WHERE id = %s
    UNION ALL
    SELECT c.id, down.depth + 1
    FROM customers_customer c JOIN down ON c.parent_id = down.id
    WHERE down.depth < 1000
)
SELECT id, depth FROM down ORDER BY depth, id
"""

# For every customer in the set: walk up while the customer is billed to its parent.
_BILLING_ACCOUNTS_SQL = """
WITH RECURSIVE walk(start_id, id, parent_id, bill_to_parent, depth) AS (
    SELECT c.id, c.id, c.parent_id, c.bill_to_parent, 0
    FROM customers_customer c WHERE c.id = ANY(%s)
    UNION ALL
    SELECT w.start_id, p.id, p.parent_id, p.bill_to_parent, w.depth + 1
    FROM walk w JOIN customers_customer p ON p.id = w.parent_id
    WHERE w.bill_to_parent AND w.depth < 1000
)
SELECT start_id, id FROM walk
WHERE parent_id IS NULL OR NOT bill_to_parent
"""

# Customers billed on an account: the account and every descendant reached only through
# subsidiaries that are billed to their parent.
_BILLED_TREES_SQL = """
WITH RECURSIVE down(root, id, depth) AS (
    SELECT id, id, 0 FROM customers_customer WHERE id = ANY(%s)
    UNION ALL
    SELECT down.root, c.id, down.depth + 1
    FROM customers_customer c JOIN down ON c.parent_id = down.id
    WHERE c.bill_to_parent AND down.depth < 1000
)
SELECT root, id FROM down ORDER BY root, depth, id
"""


def customer_get(*, key: str) -> Customer:
    """The customer with ``key``; raises ``Customer.DoesNotExist``."""
    return Customer.objects.select_related("parent").get(key=key)


def customer_list(*, search: str | None = None) -> QuerySet[Customer]:
    qs = Customer.objects.select_related("parent")
    if search:
        qs = qs.filter(
            Q(key__icontains=search)
            | Q(name__icontains=search)
            | Q(consumer_mappings__consumer_key__icontains=search)
        ).distinct()
    return qs


def _ids(sql: str, param) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(sql, [param])
        return [row[0] for row in cursor.fetchall()]


def customer_ancestor_ids(*, customer_id: int) -> list[int]:
    """Ids from the customer itself up to its root, nearest first."""
    return _ids(_ANCESTORS_SQL, customer_id)


def customer_ancestors(*, customer: Customer) -> list[Customer]:
    """The customer's ancestors, root first, excluding the customer."""
    ids = customer_ancestor_ids(customer_id=customer.pk)[1:]
    by_id = Customer.objects.in_bulk(ids)
    return [by_id[i] for i in reversed(ids)]


def customer_descendants(*, customer: Customer) -> list[tuple[Customer, int]]:
    """The customer and everything below it, with depth (0 for the customer), breadth first."""
    with connection.cursor() as cursor:
        cursor.execute(_DESCENDANTS_SQL, [customer.pk])
        rows = cursor.fetchall()
    by_id = Customer.objects.in_bulk([r[0] for r in rows])
    return [(by_id[i], depth) for i, depth in rows]


@dataclass(frozen=True)
class TreeRow:
    """One line of a customer's place in its tree, as an outline draws it.

    ``guides`` has one entry per level between the root and the row's own connector:
    whether a vertical line runs down through that level (the customer there has
    siblings still to come). ``last``: the row's connector is └ rather than ├.
    """

    customer: Customer
    depth: int
    guides: tuple[bool, ...]
    last: bool
    in_subtree: bool  # the customer asked about or one of its descendants
    is_account: bool  # a billing account: billed on itself
    billed_on: str  # the key of the billing account it is billed on


def customer_tree(*, customer: Customer) -> list[TreeRow]:
    """The customer's ancestors, itself and all its descendants, depth first: each
    customer right under its parent, siblings by key; each with its billing account."""
    ancestors = customer_ancestors(customer=customer)
    subtree = [c for c, _depth in customer_descendants(customer=customer)]
    below: dict[int | None, list[Customer]] = {}
    for c in subtree[1:]:
        below.setdefault(c.parent_id, []).append(c)
    for siblings in below.values():
        siblings.sort(key=lambda c: (c.key.lower(), c.pk))
    # (customer, depth, guides, last, in subtree)
    outline = [
        (a, depth, (False,) * max(depth - 1, 0), True, False) for depth, a in enumerate(ancestors)
    ]

    def walk(node: Customer, depth: int, guides: tuple[bool, ...], last: bool) -> None:
        outline.append((node, depth, guides, last, True))
        children = below.get(node.pk, [])
        inner = (*guides, not last) if depth else guides  # the root draws no connector
        for i, child in enumerate(children):
            walk(child, depth + 1, inner, i == len(children) - 1)

    walk(customer, len(ancestors), (False,) * max(len(ancestors) - 1, 0), True)
    accounts = billing_account_ids(customer_ids=[c.pk for c, *_ in outline])
    keys = {c.pk: c.key for c, *_ in outline}
    missing = set(accounts.values()) - keys.keys()  # an account above the shown ancestors
    keys |= dict(Customer.objects.filter(pk__in=missing).values_list("pk", "key"))
    return [
        TreeRow(
            customer=c,
            depth=depth,
            guides=guides,
            last=last,
            in_subtree=in_subtree,
            is_account=accounts.get(c.pk) == c.pk,
            billed_on=keys.get(accounts.get(c.pk), c.key),
        )
        for c, depth, guides, last, in_subtree in outline
    ]


def billing_account_ids(*, customer_ids: Iterable[int]) -> dict[int, int]:
    """Map each customer id to its billing account's id, in one query."""
    ids = list(set(customer_ids))
    if not ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(_BILLING_ACCOUNTS_SQL, [ids])
        return dict(cursor.fetchall())


def customer_billing_account(*, customer: Customer) -> Customer:
    """The customer this one is billed on: its nearest ancestor not billed to its parent.

    A customer without a parent, or one with ``bill_to_parent`` off, is its own account.
    """
    account_id = billing_account_ids(customer_ids=[customer.pk])[customer.pk]
    if account_id == customer.pk:
        return customer
    return Customer.objects.get(pk=account_id)


def billed_customer_ids(*, account: Customer) -> list[int]:
    """The account itself and every subsidiary (at any depth) billed on it."""
    return billed_customer_ids_many(account_ids=[account.pk])[account.pk]


def billed_customer_ids_many(*, account_ids: Iterable[int]) -> dict[int, list[int]]:
    """``billed_customer_ids`` of many accounts in one query: each account id (of an
    existing customer) to itself and its subsidiaries billed on it, nearest first."""
    ids = sorted(set(account_ids))
    out: dict[int, list[int]] = {}
    if not ids:
        return out
    with connection.cursor() as cursor:
        cursor.execute(_BILLED_TREES_SQL, [ids])
        for root, customer_id in cursor.fetchall():
            out.setdefault(root, []).append(customer_id)
    return out


def consumer_mappings_overlapping(
    *,
    consumer_key: str,
    valid_from: datetime,
    valid_to: datetime | None,
    exclude_pk: int | None = None,
) -> QuerySet[ConsumerMapping]:
    """Mappings of ``consumer_key`` whose validity meets ``[valid_from, valid_to)``."""
    qs = ConsumerMapping.objects.select_related("customer").filter(consumer_key=consumer_key)
    qs = qs.filter(Q(valid_to__isnull=True) | Q(valid_to__gt=valid_from))
    if valid_to is not None:
        qs = qs.filter(valid_from__lt=valid_to)
    if exclude_pk is not None:
        qs = qs.exclude(pk=exclude_pk)
    return qs.order_by("valid_from")


def consumer_mapping_at(*, consumer_key: str, at: datetime) -> ConsumerMapping | None:
    """The mapping of ``consumer_key`` valid at ``at`` (``valid_from <= at < valid_to``)."""
    return (
        ConsumerMapping.objects.select_related("customer")
        .filter(consumer_key=consumer_key, valid_from__lte=at)
        .filter(Q(valid_to__isnull=True) | Q(valid_to__gt=at))
        .first()
    )


def consumer_customer_at(*, consumer_key: str, at: datetime) -> Customer | None:
    """The customer ``consumer_key`` belongs to at ``at``, or None when unmapped."""
    mapping = consumer_mapping_at(consumer_key=consumer_key, at=at)
    return mapping.customer if mapping else None


# One query for any number of pairs; the GiST index behind the exclusion constraint
# answers the range containment.
_RESOLVE_SQL = """
SELECT e.ord, m.customer_id
FROM unnest(%s::text[], %s::timestamptz[]) WITH ORDINALITY AS e(subject, at, ord)
LEFT JOIN customers_consumermapping m
  ON m.consumer_key = e.subject
 AND tstzrange(m.valid_from, m.valid_to, '[)') @> e.at
ORDER BY e.ord
"""


def consumers_resolve(*, pairs: Sequence[tuple[str, datetime]]) -> list[int | None]:
    """Resolve many ``(subject, time)`` pairs to customer ids in one query.

    Returns a list aligned with ``pairs``; None where the subject was unmapped then.
    """
    if not pairs:
        return []
    subjects = [p[0] for p in pairs]
    times = [p[1] for p in pairs]
    with connection.cursor() as cursor:
        cursor.execute(_RESOLVE_SQL, [subjects, times])
        return [row[1] for row in cursor.fetchall()]
