"""The invoice lifecycle: drafts at period end, recomputed during grace, issued with a
gapless number, then frozen; late usage billed on the next invoice; voids and credits.

Every state change locks the invoice row, checks its state, changes it and records an
``InvoiceEvent``, in one transaction. Services take ``now``; only the edges read the clock.

- ``base``: the state error, numbering, events and history rows for bulk writes;
- ``recompute``: rating a draft (lines, late usage, taxes, totals);
- ``drafts``: closing periods into drafts, refreshing drafts whose usage changed;
- ``issue``: issuing drafts, one or a billing run's chunk at a time;
- ``corrections``: payment states, settlement states reported by the rails, voids,
  manual lines, credit notes.
"""

from billing.invoicing.base import InvoiceStateError, sequence_next, sequence_take
from billing.invoicing.corrections import (
    credit_note_create,
    invoice_line_add,
    invoice_mark,
    invoice_settlement_state_set,
    invoice_void,
    invoices_settlement_state_set,
)
from billing.invoicing.drafts import CloseResult, drafts_refresh, invoice_draft_for, periods_close
from billing.invoicing.issue import invoice_issue, invoices_issue_due
from billing.invoicing.recompute import invoice_rate, prior_period_adjustments

__all__ = [
    "CloseResult",
    "InvoiceStateError",
    "credit_note_create",
    "drafts_refresh",
    "invoice_draft_for",
    "invoice_issue",
    "invoice_line_add",
    "invoice_mark",
    "invoice_rate",
    "invoice_settlement_state_set",
    "invoice_void",
    "invoices_issue_due",
    "invoices_settlement_state_set",
    "periods_close",
    "prior_period_adjustments",
    "sequence_next",
    "sequence_take",
]
