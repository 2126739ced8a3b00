"""The rail protocol: what a settlement adapter implements, in frozen dataclasses.

Adapters never touch the ORM. The settlement service hands them an ``InvoiceDocument``
(amounts already in integer minor units of the invoice's currency) and a ``Step``
carrying the deterministic idempotency key; they answer a ``RailResult`` listing every
exchange they made. A rail without credentials runs in sandbox mode: it builds the same
requests, records them with ``sent=False`` and sends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

Outcome = Literal[
    "submitted",
    "collecting",
    "paid",
    "failed",
    "pending",
    "voided",
    "uncollectible",
    "refunded",
    "returned",
]


@dataclass(frozen=True)
class Party:
    key: str
    name: str
    email: str
    address_line1: str = ""
    address_line2: str = ""
    city: str = ""
    region: str = ""
    postal_code: str = ""
    country: str = ""
    tax_id: str = ""
    rail_settings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DocumentLine:
    description: str
    amount_minor: int
    quantity: str | None = None
    feature_key: str | None = None
    customer_key: str | None = None
    kind: str = ""
    unit_price: str | None = None
    rail_item: str | None = None  # the rail's item for this line (RailItemMapping)


@dataclass(frozen=True)
class InvoiceDocument:
    id: str
    number: str
    currency: str
    customer: Party
    lines: tuple[DocumentLine, ...]
    subtotal_minor: int
    tax_minor: int
    total_minor: int
    amount_due_minor: int
    issued_at: datetime
    due_at: datetime
    period_start: datetime | None = None
    period_end: datetime | None = None


@dataclass(frozen=True)
class CreditNoteDocument:
    id: str
    number: str
    invoice_number: str
    currency: str
    amount_minor: int
    reason: str
    customer: Party
    issued_at: datetime


@dataclass(frozen=True)
class Step:
    """One call into a rail: which settlement, attempt and step, and its idempotency key."""

    settlement_id: int
    attempt: int
    name: str
    idempotency_key: str
    now: datetime
    external_ids: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Exchange:
    step: str
    method: str
    url: str
    request_headers: dict = field(default_factory=dict)
    request_body: str = ""
    status_code: int | None = None
    response_body: str = ""
    error: str = ""
    idempotency_key: str = ""
    sent: bool = True


@dataclass(frozen=True)
class RailResult:
    outcome: Outcome
    external_ids: dict = field(default_factory=dict)
    exchanges: tuple[Exchange, ...] = ()
    error: str = ""
    retryable: bool = True
    retry_after_seconds: int | None = None
    sandbox: bool = False
    next_check_at: datetime | None = None
    note: str = ""
    # Nothing to poll: the rail never reports a payment by itself (the manual rail). A
    # submitted settlement then has no next action and waits for an operator to mark it
    # paid, instead of being checked on a made-up schedule.
    awaits_operator: bool = False


@runtime_checkable
class Rail(Protocol):
    """A settlement adapter. ``key`` names it in ``BILLING_RAILS``."""

    key: str

    def is_sandbox(self) -> bool:
        """True when credentials are missing: build and record requests, send nothing."""

    def submit(self, *, invoice: InvoiceDocument, step: Step) -> RailResult:
        """Hand the invoice to the rail (create, finalize, collect). Must be idempotent
        for the same ``step.idempotency_key``: a retry after a crash finds the earlier
        result instead of charging again."""

    def check(self, *, invoice: InvoiceDocument, step: Step) -> RailResult:
        """Ask the rail where payment stands (polling rails)."""

    def void(self, *, invoice: InvoiceDocument, step: Step) -> RailResult:
        """Void the invoice on the rail."""

    def credit(
        self, *, credit_note: CreditNoteDocument, invoice: InvoiceDocument, step: Step
    ) -> RailResult:
        """Mirror a credit note on the rail."""


def redact(headers: dict) -> dict:
    """Headers with credentials replaced, for storage and logs."""
    secret = {"authorization", "stripe-signature", "x-api-key", "cookie"}
    return {k: ("[redacted]" if k.lower() in secret else v) for k, v in headers.items()}
