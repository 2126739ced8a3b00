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
client records that call's exchanges. Without ``STRIPE_API_KEY`` (sandbox) the library
builds the same requests and a client records them (``sent=False``) and answers with
placeholders (``cus_sandbox``, ``in_sandbox``): nothing leaves the process.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import stripe
from django.conf import settings
from django.core.exceptions import ValidationError

from rails.base import (
    CreditNoteDocument,
    Exchange,
    InvoiceDocument,
    Party,
    RailResult,
    Step,
    redact,
)

DEFAULT_API_BASE = "https://api.stripe.com"
SANDBOX_NOTE = "sandbox: nothing sent"
_SANDBOX_KEY = "sk_sandbox_nothing_is_sent"
_CUSTOMER_ID = re.compile(r"^cus_[A-Za-z0-9]+$")
# Stripe invoice status → settlement outcome (``draft`` and ``open`` are still underway).
_STATUS_OUTCOME = {"paid": "paid", "void": "voided", "uncollectible": "uncollectible"}


def _setting(name: str, default: Any) -> Any:
    """Read at call time, so overridden settings (and a late configuration) apply."""
    return getattr(settings, name, default) or default


class _Stop(Exception):
    """Stop a flow with a failure that is ours to describe."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


# ------------------------------------------------------------------ recording HTTP clients


def _text(body: Any) -> str:
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body).decode("utf-8", errors="replace")
    return "" if body is None else str(body)


class _Log:
    """The exchanges of one adapter call, in order; ``step`` names the sub-step running."""

    def __init__(self, step: str) -> None:
        self.step = step
        self.exchanges: list[Exchange] = []

    def add(self, method, url, headers, body, *, status=None, response="", error="", sent=True):
        headers = dict(headers or {})
        self.exchanges.append(
            Exchange(
                step=self.step[:50],
                method=method.upper(),
                url=url,
                status_code=status,
                request_headers=redact(headers),
                request_body=_text(body),
                error=error,
                response_body=_text(response),
                sent=sent,
                idempotency_key=headers.get("Idempotency-Key", ""),
            )
        )


class _RecordingClient(stripe.RequestsClient):
    """Sends each try (the library's retries included) and records it."""

    name = "requests"

    def __init__(self, log: _Log, *, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self._log = log

    def request(self, method, url, headers, post_data=None, **kwargs):
        try:
            content, status, rheaders = super().request(method, url, headers, post_data)
        except stripe.APIConnectionError as exc:
            error = " ".join((exc.user_message or str(exc)).split())
            self._log.add(method, url, headers, post_data, error=error)
            raise
        self._log.add(method, url, headers, post_data, status=status, response=content)
        return content, status, rheaders


class _SandboxClient(stripe.HTTPClient):
    """Records each request exactly as the library built it, sends nothing, and answers
    with a placeholder so the flow carries on."""

    name = "requests"

    def __init__(self, log: _Log) -> None:
        super().__init__()
        self._log = log

    def request(self, method, url, headers, post_data=None, **kwargs):
        self._log.add(method, url, headers, post_data, sent=False)
        return json.dumps(_sandbox_answer(method, urlsplit(url).path)).encode(), 200, {}

    def request_stream(self, *args, **kwargs):  # pragma: no cover - never streamed
        raise NotImplementedError

    def close(self) -> None:
        pass


def _sandbox_answer(method: str, path: str) -> dict:
    if path.endswith("/search") or method == "get" and path.count("/") == 2:
        return {"object": "list", "data": [], "has_more": False, "url": path}
    kinds = {"customers": "cus", "invoiceitems": "ii", "credit_notes": "cn"}
    prefix = kinds.get(path.split("/")[2], "in")
    answer = {"id": f"{prefix}_sandbox", "object": "invoice" if prefix == "in" else prefix}
    if prefix == "in":
        answer |= {"status": "draft" if path == "/v1/invoices" else "open", "amount_remaining": 0}
    return answer


# ------------------------------------------------------------------ one call's Stripe session


class _Session:
    """A StripeClient for one adapter call, its exchanges, and the Stripe ids learnt."""

    def __init__(self, step: Step) -> None:
        api_key = _setting("STRIPE_API_KEY", "")
        self.step, self.sandbox, self.log, self.ids = step, not api_key, _Log(step.name), {}
        timeout = float(_setting("STRIPE_TIMEOUT_SECONDS", 30))
        http = (
            _SandboxClient(self.log)
            if self.sandbox
            else _RecordingClient(self.log, timeout=timeout)
        )
        retries = 0 if self.sandbox else int(getattr(settings, "STRIPE_MAX_NETWORK_RETRIES", 2))
        client = stripe.StripeClient(
            api_key or _SANDBOX_KEY,
            http_client=http,
            max_network_retries=retries,
            base_addresses={"api": _setting("STRIPE_API_BASE", DEFAULT_API_BASE).rstrip("/")},
        )
        self.v1 = client.v1

    def post(self, sub: str, method: Callable, *args: str, **params: Any) -> dict:
        """A POST with the idempotency key ``<step key>-<sub>``, deterministic per attempt."""
        self.log.step = f"{self.step.name}:{sub}"
        options = {"idempotency_key": f"{self.step.idempotency_key}-{sub}"}
        return method(*args, params=params, options=options).to_dict()

    def get(self, sub: str, method: Callable, *args: str, **params: Any) -> dict:
        self.log.step = f"{self.step.name}:{sub}"
        return method(*args, params=params).to_dict()

    def each(self, sub: str, method: Callable, **params: Any) -> Iterator[dict]:
        """Every object of a list, page by page (each page recorded)."""
        self.log.step = f"{self.step.name}:{sub}"
        for obj in method(params=params).auto_paging_iter():
            yield obj.to_dict()

    def result(self, outcome: str, note: str = "", **kwargs: Any) -> RailResult:
        exchanges = tuple(self.log.exchanges)
        if self.sandbox:  # placeholder ids are not Stripe's: keep none
            return RailResult(
                outcome, exchanges=exchanges, sandbox=True, note=SANDBOX_NOTE, **kwargs
            )
        return RailResult(outcome, external_ids=self.ids, exchanges=exchanges, note=note, **kwargs)

    def failed(self, error: str, *, retryable: bool, retry_after: int | None = None) -> RailResult:
        return self.result(
            "failed", error=error, retryable=retryable, retry_after_seconds=retry_after
        )

    def run(self, flow: Callable[[_Session], RailResult]) -> RailResult:
        """Run a flow; our stops and Stripe's errors become failed results."""
        try:
            return flow(self)
        except _Stop as stop:
            return self.failed(str(stop), retryable=stop.retryable)
        except stripe.StripeError as exc:
            return self._stripe_failure(exc)

    def _stripe_failure(self, exc: stripe.StripeError) -> RailResult:
        """Transient errors retryable (after Retry-After); card declines and other
        refusals not (Stripe reports a later payment by webhook)."""
        message = " ".join((exc.user_message or str(exc) or type(exc).__name__).split())
        status = exc.http_status
        if isinstance(exc, stripe.APIConnectionError):
            return self.failed(f"Could not reach Stripe: {message}", retryable=True)
        if isinstance(exc, stripe.CardError):
            code = getattr(exc.error, "decline_code", None) or exc.code or "declined"
            return self.failed(f"Payment declined ({code}): {message}", retryable=False)
        transient = isinstance(exc, stripe.RateLimitError | stripe.APIError)
        if transient or status in (409, 429) or (status or 0) >= 500:
            retry_after = str((exc.headers or {}).get("Retry-After", ""))  # case-insensitive
            seconds = max(1, int(retry_after)) if retry_after.isdigit() else None
            return self.failed(
                f"Stripe is unavailable ({status}): {message}", retryable=True, retry_after=seconds
            )
        return self.failed(f"Stripe refused the request ({status}): {message}", retryable=False)


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
        raise _Stop(
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


def _customer_known(s: _Session, party: Party) -> str | None:
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


def _invoice_on_customer(s: _Session, invoice: InvoiceDocument, customer_id: str) -> dict | None:
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
        raise _Stop(
            f"Stripe invoice {voided['id']} for {invoice.number} was voided on Stripe; void or reissue it."
        )
    return None


def _invoice_found(s: _Session, invoice: InvoiceDocument) -> dict | None:
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


def _learn(s: _Session, stripe_invoice: dict) -> dict:
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


def _submit(s: _Session, invoice: InvoiceDocument) -> RailResult:
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
    s: _Session,
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


def _pay(s: _Session, invoice_id: str) -> dict:
    try:
        return s.post("pay", s.v1.invoices.pay, invoice_id, expand=["payments"])
    except stripe.CardError:
        # Declined: hand collection over to Stripe (Smart Retries, its emails); its
        # webhooks report a later payment. Best effort: the decline is what we report.
        with contextlib.suppress(stripe.StripeError):
            s.post("auto-advance", s.v1.invoices.update, invoice_id, auto_advance=True)
        raise


def _check(s: _Session, invoice: InvoiceDocument) -> RailResult:
    found = _invoice_found(s, invoice)
    if found is None:
        return s.result("pending", note="No Stripe invoice yet.")
    status = _learn(s, found)["status"]
    return s.result(
        _STATUS_OUTCOME.get(status, "pending"), note=f"Stripe invoice {found['id']} is {status}."
    )


def _void(s: _Session, invoice: InvoiceDocument) -> RailResult:
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


def _credit(s: _Session, credit_note: CreditNoteDocument, invoice: InvoiceDocument) -> RailResult:
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
        return not _setting("STRIPE_API_KEY", "")

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
        return _Session(step).run(lambda s: _submit(s, invoice))

    def check(self, *, invoice: InvoiceDocument, step: Step) -> RailResult:
        if not _setting("STRIPE_API_KEY", ""):  # nothing was sent: nothing to ask about
            return RailResult(outcome="pending", sandbox=True, note=SANDBOX_NOTE)
        return _Session(step).run(lambda s: _check(s, invoice))

    def void(self, *, invoice: InvoiceDocument, step: Step) -> RailResult:
        """Void the Stripe invoice (delete it while a draft); a paid one is refused."""
        return _Session(step).run(lambda s: _void(s, invoice))

    def credit(
        self, *, credit_note: CreditNoteDocument, invoice: InvoiceDocument, step: Step
    ) -> RailResult:
        """A Stripe credit note for the amount, with the reason as its memo."""
        return _Session(step).run(lambda s: _credit(s, credit_note, invoice))
