"""The billing clock: everything the beat schedule would have done by ``now``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime

from django.conf import settings
from django.utils.module_loading import import_string

from billing.documents.pdf import pdfs_render_missing
from billing.invoicing.services import drafts_refresh, invoices_issue_due, periods_close
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

    def report_lines(self) -> list[str]:
        """The run for people, one ``what: how many`` line per step and hook, e.g.
        ``settlements driven: 3 submitted, 1 failed``."""
        lines = [
            f"events rolled up: {self.events_rolled_up:,}",
            f"drafts created: {self.drafts_created:,}",
            f"drafts refreshed: {self.drafts_refreshed:,}",
            f"invoices issued: {self.invoices_issued:,}",
            f"PDFs rendered: {self.pdfs_rendered:,}",
        ]
        for name, value in self.extra.items():
            label = HOOK_LABELS.get(name, name.replace("_", " "))
            lines.append(f"{label}: {counts_text(value)}")
        return lines


# How the report names the hooks the project registers in BILLING_RUN_HOOKS (by function
# name); another hook is named by its function's name.
HOOK_LABELS = {
    "settlements_drive_due": "settlements driven",
    "thresholds_check": "thresholds checked",
    "deliveries_send_due": "webhook deliveries",
    "credit_expire_due": "credits expired",
}


def counts_text(value: object) -> str:
    """A step's counts as a phrase: ``{"submitted": 3, "given_up": 1}`` -> ``3 submitted,
    1 given up``; nested per-currency amounts ``{"USD": "10.00"}`` -> ``10.00 USD``. Zero
    counts are left out, and nothing to report reads ``none``."""
    if value is None:
        return "done"
    if isinstance(value, int):
        return f"{value:,}"
    if not isinstance(value, Mapping):
        return str(value)
    parts = []
    for key, count in value.items():
        name = str(key).replace("_", " ")
        if isinstance(count, Mapping):
            if count:
                parts.append(counts_text(count))
        elif isinstance(count, int):
            if count:
                parts.append(f"{count:,} {name}")
        elif count not in ("", None):
            parts.append(f"{count} {name}")
    return ", ".join(parts) or "none"


def billing_run(*, now: datetime) -> BillingRunResult:
    """Roll up pending usage, close ended periods into drafts, recompute drafts whose
    usage changed, issue drafts past their grace period, render missing PDFs, and run
    the registered after-run hooks (settlement). Safe to repeat and to run concurrently:
    every step is idempotent and guarded by constraints and row locks.
    """
    result = BillingRunResult()
    result.events_rolled_up = usage_rollup(now=now).events
    result.drafts_created = periods_close(now=now).created
    result.drafts_refreshed = drafts_refresh(now=now)
    result.invoices_issued = invoices_issue_due(now=now)
    result.pdfs_rendered = pdfs_render_missing(now=now)
    for path in getattr(settings, "BILLING_RUN_HOOKS", []):
        result.extra[path.rsplit(".", 1)[-1]] = import_string(path)(now=now)
    return result
