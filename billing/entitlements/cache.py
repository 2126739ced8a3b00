"""The cache of entitlement contexts, and the generation that invalidates it.

A value check reads, besides usage, a context (``billing.entitlements.context.EntitlementContext``)
that depends only on customers, consumer mappings, meters, features, plan versions,
subscriptions, overrides and grants. It is kept in Redis (Django's cache), and in each
process's memory, under a key that holds a **generation**: one number in Redis that every
change to any of those rows moves (Django signals, connected by ``connect`` from
``BillingConfig.ready``). A check reads the generation (one Redis GET), then its context
under that generation, from memory, else Redis, else the database.

Why an answer is never stale once the change has committed:

- a reader reads the generation *before* it reads the database, and stores what it read
  under that generation;
- a change moves the generation *after* its transaction commits (``on_commit``).

Take a change committed at t1 that moves the generation from g to g+1 at t2 > t1. A
reader that read g+1 (or later) did so after t2, so it read the database after the
commit and saw the change. A reader that read g stored its context under g, which no one
reads after t2. Between t1 and t2 (microseconds) a check may still answer from g: the
same answer it would have given had it arrived just before the commit.

The writing connection itself: while a connection holds uncommitted changes to those
rows (an ``on_commit`` of ours is pending), its checks bypass the cache, reading and
writing nothing there: they see their own changes, and never store what may yet be
rolled back. A flush or migrate (``post_migrate``) moves the generation too. Writes that
send no signals (``QuerySet.update``, ``bulk_create``, raw SQL) must call ``bump()``;
entries also expire after ``CONTEXT_SECONDS`` to bound the harm of one that did not.

Unknown customer or feature keys are remembered as such (a gateway asking again and
again for a customer that does not exist costs no query); creating one moves the
generation like any other change.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models.signals import post_delete, post_migrate, post_save

from billing.entitlements.context import EntitlementNotFound
from billing.models import EntitlementOverride, Grant, PlanVersion, Subscription
from core.raw_redis import raw_redis
from customers.models import ConsumerMapping, Customer
from metering.models import Feature, Meter

logger = logging.getLogger(__name__)

GENERATION_KEY = "entitlements:generation"
# Part of every context's key: change it whenever EntitlementContext changes shape, so a
# deploy never reads what the previous code stored.
FORMAT = 3  # 3: ConsumerTerm moved to metering.usage
CONTEXT_SECONDS = 15 * 60
LOCAL_MAX = 10_000

_local: dict[str, object] = {}
_local_generation: list[int] = [0]
_lock = threading.Lock()


class _Missing:
    """A remembered ``EntitlementNotFound``."""

    def __init__(self, what: str, key: str) -> None:
        self.what, self.key = what, key


def _database() -> str:
    # One Redis may serve several databases (tests, benchmarks, development).
    return connections[DEFAULT_DB_ALIAS].settings_dict["NAME"]


def _generation_key(name: str = GENERATION_KEY) -> str:
    return f"{name}:{_database()}"


def generation(name: str = GENERATION_KEY) -> int:
    """The current generation (created on first use, from the clock, so a generation key
    lost from Redis never comes back with a number it had before)."""
    key = _generation_key(name)
    client = raw_redis()
    if client is not None:
        raw = client.get(cache.make_key(key))
        if raw is not None:
            return int(raw)
    current = cache.get(key)
    if current is None:
        cache.add(key, time.time_ns(), timeout=None)
        current = cache.get(key)
    return int(current)


def bump(name: str = GENERATION_KEY) -> None:
    """Move the generation: every cached context is obsolete from now on."""
    key = _generation_key(name)
    try:
        cache.incr(key)
    except ValueError:  # not there (yet, or any more): start it afresh
        cache.add(key, time.time_ns(), timeout=None)


def _bump_on_commit() -> None:
    bump()


def changed(**_kwargs) -> None:
    """A signal receiver: an input of the contexts changed. Moves the generation when the
    transaction commits (at once outside one); until then its connection bypasses the
    cache."""
    if not pending():
        transaction.on_commit(_bump_on_commit)


def pending() -> bool:
    """Whether this thread's connection has uncommitted changes to the contexts' inputs."""
    if not connection.in_atomic_block:
        return False
    return any(entry[1] is _bump_on_commit for entry in connection.run_on_commit)


def _context_key(generation_now: int, customer_key: str, feature_key: str) -> str:
    return (
        f"entitlements:context:v{FORMAT}:{_database()}:{generation_now}:"
        f"{customer_key}:{feature_key}"
    )


def _remember(key: str, value: object, generation_now: int) -> None:
    with _lock:
        if _local_generation[0] != generation_now or len(_local) >= LOCAL_MAX:
            _local.clear()
            _local_generation[0] = generation_now
        _local[key] = value


def context_cached(*, customer_key: str, feature_key: str, build: Callable):
    """The context for the keys: from this process's memory or Redis when they hold one
    under the current generation, else ``build(customer_key=, feature_key=)`` from the
    database (then stored). Raises ``EntitlementNotFound`` as ``build`` does."""
    if pending():
        return build(customer_key=customer_key, feature_key=feature_key)
    generation_now = generation()
    key = _context_key(generation_now, customer_key, feature_key)
    value = _local.get(key) if _local_generation[0] == generation_now else None
    if value is None:
        value = cache.get(key)
        if value is None:
            try:
                value = build(customer_key=customer_key, feature_key=feature_key)
            except EntitlementNotFound as exc:
                value = _Missing(exc.what, exc.key)
            cache.set(key, value, timeout=CONTEXT_SECONDS)
        _remember(key, value, generation_now)
    if isinstance(value, _Missing):
        raise EntitlementNotFound(value.what, value.key)
    return value


def forget_local() -> None:
    """Drop this process's copies (tests)."""
    with _lock:
        _local.clear()
        _local_generation[0] = 0


# The rows a context is built from: a change to any of them moves the generation.
CONTEXT_INPUTS = (
    Customer,
    ConsumerMapping,
    Meter,
    Feature,
    PlanVersion,
    Subscription,
    EntitlementOverride,
    Grant,
)


def _after_migrate(sender, using=DEFAULT_DB_ALIAS, **kwargs) -> None:
    if using != DEFAULT_DB_ALIAS:
        return
    try:
        bump()
    except Exception:  # noqa: BLE001 - a migrate must not need Redis to be up
        logger.warning("Could not move the entitlement cache's generation after migrate")


def connect() -> None:
    """Connect the receivers that move the generation (from ``BillingConfig.ready``)."""
    for model in CONTEXT_INPUTS:
        uid = f"entitlement-cache:{model._meta.label}"
        post_save.connect(changed, sender=model, dispatch_uid=f"{uid}:save", weak=False)
        post_delete.connect(changed, sender=model, dispatch_uid=f"{uid}:delete", weak=False)
    post_migrate.connect(_after_migrate, dispatch_uid="entitlement-cache:migrate", weak=False)
