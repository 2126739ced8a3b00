"""The history tables of the audited models of other apps.

``simple_history.register(..., app="audit")`` makes a ``Historical<Model>`` here for
each, written on every ``save()`` and ``delete()`` of the model (with the user of the
admin request, see ``audit.records``); their migrations are this app's. Writes that
bypass ``save()`` are snapshotted by ``audit.signals``: an invoice's issue (an
``UPDATE``, then an ``InvoiceEvent``) and a plan version's rate cards (bulk-created).

An issued invoice's database triggers refuse changes to the invoice and its lines; the
history tables are separate tables, so recording them is never refused.
"""

from __future__ import annotations

import simple_history

from audit.records import AuditRecords
from billing.models import CustomerAccess, Invoice, InvoiceLine, Plan, PlanVersion, RateCard
from customers.models import ConsumerMapping, Customer

# (model, fields left out of its history, which rows are recorded). Nothing secret goes
# to the history tables that the model itself does not hold in clear: Customer.rail_settings
# is stored as the customer service writes it (account numbers encrypted).
# A draft's computed lines are rewritten in bulk when a recompute changes them (no row for their
# creation, and their deletion would be noise and a per-line write): only manual lines,
# added and removed by operators, are recorded; the invoice's rows carry the totals.
# A customer's document access is recorded when its links are revoked.
AUDITED = [
    (Customer, [], None),
    (ConsumerMapping, [], None),
    (Plan, [], None),
    (PlanVersion, [], None),
    (RateCard, [], None),
    (Invoice, ["pdf", "pdf_rendered_at"], None),
    (InvoiceLine, [], lambda line: line.manual),
    # A revocation of the customer's invoice links (not the portal's single-use sign-in
    # bookkeeping, nor the empty row a first sign-in creates).
    (
        CustomerAccess,
        ["sign_in_links_used_until"],
        lambda access: access.links_valid_after is not None,
    ),
]

for _model, _excluded, _record_if in AUDITED:
    if not hasattr(_model._meta, "simple_history_manager_attribute"):  # importing twice
        simple_history.register(
            _model,
            app="audit",
            records_class=AuditRecords,
            excluded_fields=_excluded,
            record_if=_record_if,
        )
