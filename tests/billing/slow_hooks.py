"""A test-only issuing hook that makes a billing run slow, deterministically, so a test
can kill it in the middle of issuing (see ``tests/billing/slow_settings.py``).

It runs inside the issuing transaction, after the invoice took its number and before it
commits: a process killed while it sleeps holds an uncommitted number, the case that
must leave no gap.
"""

from __future__ import annotations

import os
import time
from datetime import datetime

from billing.models import Invoice


def issue_slowly(*, invoice: Invoice, now: datetime) -> None:
    """Note the number being issued (one line per invoice in ``$SLOW_HOOK_LOG``, written
    before the commit), then sleep ``$SLOW_HOOK_SECONDS`` (default 0.2); the
    ``$SLOW_HOOK_STALL_AT``-th invoice (1-based) sleeps ten minutes instead, so a test
    can kill the run while that transaction is open, without racing its commit."""
    log = os.environ.get("SLOW_HOOK_LOG")
    issued = 0
    if log:
        with open(log, "a+") as f:
            f.write(f"{invoice.number}\n")
            f.seek(0)
            issued = len(f.read().split())
    stall_at = int(os.environ.get("SLOW_HOOK_STALL_AT", "0"))
    time.sleep(600 if issued == stall_at else float(os.environ.get("SLOW_HOOK_SECONDS", "0.2")))


FAIL_FOR: set[int] = set()


def fail_for_some(*, invoice: Invoice, now: datetime) -> None:
    """Raise for the invoices of the accounts in ``FAIL_FOR``: a test's account whose
    issue cannot go through."""
    if invoice.customer_id in FAIL_FOR:
        raise RuntimeError(f"the issue hook of account {invoice.customer_id} fails")
