"""The Stripe rail: each issued invoice becomes a Stripe invoice charged automatically.

submit() finds or creates the Stripe customer, creates a draft invoice (auto_advance off:
Stripe must not collect before we have checked it), adds an invoice item per line in
integer minor units, finalizes it, compares Stripe's total with ours, then pays it.

Never twice: every POST carries an idempotency key (the step's key plus a sub-step
suffix), so a resumed attempt gets Stripe's stored answers back; a later attempt (new
keys) resumes the Stripe invoice whose id the earlier one reported, or that it finds by
``invoice_id`` metadata on the customer's invoice list; an invoice is only paid while open.

Transient errors (connection, 409, 5xx) are retried by the library with the same key
(``STRIPE_MAX_NETWORK_RETRIES``), then reported retryable with ``Retry-After`` (429
too). Settings are read at every call; a StripeClient is built per call because its HTTP
client records that call's exchanges (``rails.adapters.stripe_session``). Without
``STRIPE_API_KEY`` (sandbox) the library builds the same requests and a client records
them (``sent=False``) and answers with placeholders (``cus_sandbox``, ``in_sandbox``):
nothing leaves the process.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import stripe
from django.core.exceptions import ValidationError

from rails.adapters.stripe_session import (
    SANDBOX_NOTE,
    StripeSession,
    StripeStop,
    stripe_setting,
)
from rails.base import (
    CreditNoteDocument,
    InvoiceDocument,
    Party,
    RailResult,
    Step,
)

_CUSTOMER_ID = re.compile(r"^cus_[A-Za-z0-9]+$")
# Stripe invoice status → settlement outcome (``draft`` and ``open`` are still underway).
_STATUS_OUTCOME = {"paid": "paid", "void": "voided", "uncollectible": "uncollectible"}


# ------------------------------------------------------------------ building blocks


def _items(invoice: InvoiceDocument) -> tuple[int, list[tuple[str, str, int]]]:
    """The invoice items (metadata key, description, minor units) and the total Stripe
    must reach: a line each (negative lines are credits), plus exclusive tax and prepaid
    credits applied as items of their own, so Stripe's total is what we charge."""
    items = [
        (str(i), line.description or f"Line {i + 1}", line.amount_minor)
        for i, line in enumerate(invoice.lines)
    ]
    if invoice.tax_minor:
        items.append(("tax", "Tax", invoice.tax_minor))
    if invoice.total_minor > invoice.amount_due_minor:
        items.append(
            ("credits", "Prepaid credits applied", invoice.amount_due_minor - invoice.total_minor)
        )
    added = sum(amount for *_, amount in items)
    if added != invoice.amount_due_minor:
        raise StripeStop(
            f"Invoice {invoice.number}: lines add up to {added} minor units, not its amount "
            f"due {invoice.amount_due_minor}; nothing sent to Stripe."
        )
    return invoice.amount_due_minor, items


def _customer_params(party: Party) -> dict:
    fields = ("line1", "line2", "city", "state", "postal_code", "country")
    values = (
        party.address_line1,
        party.address_line2,
        party.city,
        party.region,
        party.postal_code,
        party.country,
    )
    params: dict[str, Any] = {"name": party.name, "metadata": {"customer_key": party.key}}
    params |= {"email": party.email} if party.email else {}
    params |= (
        {"address": {k: v for k, v in zip(fields, values, strict=True) if v}} if any(values) else {}
    )
    return params


def _customer_known(s: StripeSession, party: Party) -> str | None:
    """The customer's Stripe id: set by an operator, reported earlier, or found by metadata."""
    known = party.rail_settings.get("stripe_customer_id") or s.step.external_ids.get(
        "stripe_customer_id"
    )
    if known:
        return known
    key = party.key.replace("\\", "\\\\").replace("'", "\\'")
    found = s.get(
        "customer-search",
        s.v1.customers.search,
        query=f"metadata['customer_key']:'{key}'",
        limit=10,
    )
    matches = [
        c for c in found["data"] if (c.get("metadata") or {}).get("customer_key") == party.key
    ]
    return min(matches, key=lambda c: (c.get("created") or 0, c["id"]))["id"] if matches else None


def _invoice_on_customer(
    s: StripeSession, invoice: InvoiceDocument, customer_id: str
) -> dict | None:
    """The Stripe invoice an earlier attempt made for ours (a list, not a search: lists
    read their own writes). A voided one stops us: billing again is an operator's call."""
    voided = None
    for candidate in s.each("invoice-find", s.v1.invoices.list, customer=customer_id, limit=100):
        if (candidate.get("metadata") or {}).get("invoice_id") != invoice.id:
            continue
        if candidate.get("status") != "void":
            return candidate
        voided = candidate
    if voided:
        raise StripeStop(
            f"Stripe invoice {voided['id']} for {invoice.number} was voided on Stripe; void or reissue it."
        )
    return None


def _invoice_found(s: StripeSession, invoice: InvoiceDocument) -> dict | None:
    """Our invoice's Stripe invoice as Stripe has it now, or None if there is none."""
    known = "in_sandbox" if s.sandbox else s.step.external_ids.get("stripe_invoice_id")
    if known:
        return s.get("invoice-retrieve", s.v1.invoices.retrieve, known, expand=["payments"])
    customer_id = _customer_known(s, invoice.customer)
    return _invoice_on_customer(s, invoice, customer_id) if customer_id else None


def _invoice_params(invoice: InvoiceDocument, customer_id: str) -> dict:
    return {
        "customer": customer_id,
        "currency": invoice.currency.lower(),
        # Off until we have checked the total: Stripe must not collect on its own first.
        "collection_method": "charge_automatically",
        "auto_advance": False,
        "pending_invoice_items_behavior": "exclude",
        "description": f"Invoice {invoice.number}",
        "metadata": {
            "invoice_id": invoice.id,
            "invoice_number": invoice.number,
            "customer_key": invoice.customer.key,
        },
    }


def _learn(s: StripeSession, stripe_invoice: dict) -> dict:
    """Keep the Stripe invoice's ids (and its payment intent, to match refunds)."""
    s.ids["stripe_invoice_id"] = stripe_invoice["id"]
    for ours, theirs in (
        ("stripe_invoice_number", "number"),
        ("stripe_hosted_invoice_url", "hosted_invoice_url"),
    ):
        if stripe_invoice.get(theirs):
            s.ids[ours] = stripe_invoice[theirs]
    for payment in (stripe_invoice.get("payments") or {}).get("data") or []:
        intent = (payment.get("payment") or {}).get("payment_intent")
        if intent:
            s.ids["stripe_payment_intent_id"] = intent if isinstance(intent, str) else intent["id"]
    return stripe_invoice


# ------------------------------------------------------------------ flows


def _submit(s: StripeSession, invoice: InvoiceDocument) -> RailResult:
    expected, items = _items(invoice)
    customer_id = _customer_known(s, invoice.customer)
    fresh = customer_id is None
    if fresh:
        customer_id = s.post(
            "customer", s.v1.customers.create, **_customer_params(invoice.customer)
        )["id"]
    s.ids["stripe_customer_id"] = customer_id
    known = s.step.external_ids.get("stripe_invoice_id")
    if known:
        found = s.get("invoice-retrieve", s.v1.invoices.retrieve, known)
    else:
        found = None if fresh or s.sandbox else _invoice_on_customer(s, invoice, customer_id)
    fresh = found is None
    stripe_invoice = found or s.post(
        "invoice", s.v1.invoices.create, **_invoice_params(invoice, customer_id)
    )
    _learn(s, stripe_invoice)
    if stripe_invoice["status"] == "draft":
        stripe_invoice = _learn(
            s, _fill_and_finalize(s, invoice, customer_id, stripe_invoice["id"], items, fresh)
        )
    total = stripe_invoice.get("total")
    if not s.sandbox and total != expected:
        return s.failed(f"Stripe total {total} differs from ours {expected}", retryable=False)
    if stripe_invoice["status"] == "open":
        stripe_invoice = _learn(s, _pay(s, stripe_invoice["id"]))
    status = stripe_invoice["status"]
    outcome = "submitted" if s.sandbox else _STATUS_OUTCOME.get(status, "submitted")
    return s.result(outcome, note=f"Stripe invoice {stripe_invoice['id']} is {status}.")


def _fill_and_finalize(
    s: StripeSession,
    invoice: InvoiceDocument,
    customer_id: str,
    invoice_id: str,
    items: list[tuple[str, str, int]],
    fresh: bool,
) -> dict:
    present: set[str] = set()
    if not fresh:  # an earlier attempt may have added some of the items already
        listed = s.each("item-find", s.v1.invoice_items.list, invoice=invoice_id, limit=100)
        present = {(item.get("metadata") or {}).get("line") for item in listed}
    for key, description, amount in items:
        if key not in present:
            s.post(
                f"item-{key}",
                s.v1.invoice_items.create,
                customer=customer_id,
                invoice=invoice_id,
                currency=invoice.currency.lower(),
                amount=amount,
                description=description,
                metadata={"invoice_id": invoice.id, "line": key},
            )
    return s.post("finalize", s.v1.invoices.finalize_invoice, invoice_id, auto_advance=False)


def _pay(s: StripeSession, invoice_id: str) -> dict:
    try:
        return s.post("pay", s.v1.invoices.pay, invoice_id, expand=["payments"])
    except stripe.CardError:
        # Declined: hand collection over to Stripe (Smart Retries, its emails); its
        # webhooks report a later payment. Best effort: the decline is what we report.
        with contextlib.suppress(stripe.StripeError):
            s.post("auto-advance", s.v1.invoices.update, invoice_id, auto_advance=True)
        raise


def _check(s: StripeSession, invoice: InvoiceDocument) -> RailResult:
    found = _invoice_found(s, invoice)
    if found is None:
        return s.result("pending", note="No Stripe invoice yet.")
    status = _learn(s, found)["status"]
    return s.result(
        _STATUS_OUTCOME.get(status, "pending"), note=f"Stripe invoice {found['id']} is {status}."
    )


def _void(s: StripeSession, invoice: InvoiceDocument) -> RailResult:
    found = _invoice_found(s, invoice)
    if found is None:
        return s.result("voided", note="No Stripe invoice: nothing to void on Stripe.")
    s.ids["stripe_invoice_id"], status = found["id"], found["status"]
    if status == "paid":
        return s.failed(
            f"Stripe invoice {found['id']} is paid; credit it instead.", retryable=False
        )
    if status == "draft":
        s.log.step = f"{s.step.name}:delete"
        s.v1.invoices.delete(found["id"])
    elif status in ("open", "uncollectible"):
        s.post("void", s.v1.invoices.void_invoice, found["id"])
    return s.result("voided", note=f"Stripe invoice {found['id']} voided (was {status}).")


def _credit(
    s: StripeSession, credit_note: CreditNoteDocument, invoice: InvoiceDocument
) -> RailResult:
    found = _invoice_found(s, invoice)
    if found is None:
        return s.failed(
            f"No Stripe invoice for {invoice.number}: nothing to credit.", retryable=False
        )
    amount = credit_note.amount_minor
    # What is still unpaid comes off the invoice; what was already paid is refunded.
    paid_part = amount - min(amount, int(found.get("amount_remaining") or 0))
    refund = {"refund_amount": paid_part} if found["status"] == "paid" and paid_part > 0 else {}
    note = s.post(
        "credit-note",
        s.v1.credit_notes.create,
        invoice=found["id"],
        amount=amount,
        memo=credit_note.reason,
        metadata={
            "credit_note_id": credit_note.id,
            "credit_note_number": credit_note.number,
            "invoice_id": invoice.id,
        },
        **refund,
    )
    s.ids = {f"stripe_credit_note:{credit_note.number}": note["id"]}
    refunding = f", refunding {paid_part}" if refund else ""
    return s.result("submitted", note=f"Stripe credit note {note['id']} for {amount}{refunding}.")


# ------------------------------------------------------------------ the rail


class StripeRail:
    key = "stripe"

    def is_sandbox(self) -> bool:
        return not stripe_setting("STRIPE_API_KEY", "")

    def clean_settings(self, rail_settings: dict) -> dict:
        """``stripe_customer_id`` (optional) must look like ``cus_...``; a misspelt
        ``stripe_*`` key is refused rather than silently making a second customer."""
        unknown = sorted(
            k for k in rail_settings if k.startswith("stripe") and k != "stripe_customer_id"
        )
        if unknown:
            raise ValidationError(
                f"Unknown Stripe setting(s) {', '.join(unknown)}; known: stripe_customer_id."
            )
        customer_id = str(rail_settings.get("stripe_customer_id") or "").strip()
        if not customer_id:
            return {k: v for k, v in rail_settings.items() if k != "stripe_customer_id"}
        if not _CUSTOMER_ID.match(customer_id):
            raise ValidationError(
                f"stripe_customer_id {customer_id!r} is not a Stripe customer id (cus_...)."
            )
        return {**rail_settings, "stripe_customer_id": customer_id}

    def submit(self, *, invoice: InvoiceDocument, step: Step) -> RailResult:
        return StripeSession(step).run(lambda s: _submit(s, invoice))

    def check(self, *, invoice: InvoiceDocument, step: Step) -> RailResult:
        if not stripe_setting("STRIPE_API_KEY", ""):  # nothing was sent: nothing to ask about
            return RailResult(outcome="pending", sandbox=True, note=SANDBOX_NOTE)
        return StripeSession(step).run(lambda s: _check(s, invoice))

    def void(self, *, invoice: InvoiceDocument, step: Step) -> RailResult:
        """Void the Stripe invoice (delete it while a draft); a paid one is refused."""
        return StripeSession(step).run(lambda s: _void(s, invoice))

    def credit(
        self, *, credit_note: CreditNoteDocument, invoice: InvoiceDocument, step: Step
    ) -> RailResult:
        """A Stripe credit note for the amount, with the reason as its memo."""
        return StripeSession(step).run(lambda s: _credit(s, credit_note, invoice))
