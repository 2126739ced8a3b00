"""Invoices and credit notes in the admin. Importing this module registers both.

Every invoice page is read-only: a draft is changed by recomputing it or adding a manual
line, an issued invoice only by voiding it or crediting it. Those are buttons on the page
(and actions on the list) that call ``billing.invoicing``, report per invoice, and ask for
confirmation before anything that cannot be undone. A usage line links to the buckets
behind it and a CSV of its raw events (``billing.invoicing.provenance``).
"""

from billing.invoicing.admin.credit_notes import CreditNoteAdmin
from billing.invoicing.admin.invoices import InvoiceAdmin

__all__ = ["CreditNoteAdmin", "InvoiceAdmin"]
