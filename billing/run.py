"""The billing clock: everything the beat schedule would have done by ``now``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

from django.conf import settings
from django.utils.module_loading import import_string

from billing.invoicing import drafts_refresh, invoices_issue_due, periods_close
from metering.services import usage_rollup


@dataclass
class BillingRunResult:
    events_rolled_up: int = 0
    drafts_created: int = 0
    drafts_refreshed: int = 0
    invoices_issued: int = 0
    pdfs_rendered: int = 0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def billing_run(*, now: datetime) -> BillingRunResult:
    """Roll up pending usage, close ended periods into drafts, recompute drafts whose
    usage changed, issue drafts past their grace period, render missing PDFs, and run
    the registered after-run hooks (settlement). Safe to repeat and to run concurrently:
    every step is idempotent and guarded by constraints and row locks.
    """
    from billing.documents import pdfs_render_missing

    result = BillingRunResult()
    result.events_rolled_up = usage_rollup(now=now).events
    result.drafts_created = periods_close(now=now).created
    result.drafts_refreshed = drafts_refresh(now=now)
    result.invoices_issued = invoices_issue_due(now=now)
    result.pdfs_rendered = pdfs_render_missing(now=now)
    for path in getattr(settings, "BILLING_RUN_HOOKS", []):
        result.extra[path.rsplit(".", 1)[-1]] = import_string(path)(now=now)
    return result
