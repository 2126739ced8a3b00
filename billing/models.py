from billing.catalog.models import (
    BillingProfile,
    Cadence,
    Plan,
    PlanVersion,
    RateCard,
    Subscription,
    TaxRate,
    WebhookEndpoint,
)
from billing.credits.models import CreditGrant, CreditLedgerEntry  # noqa: F401
from billing.documents.models import CustomerAccess
from billing.entitlements.models import EntitlementOverride, EntitlementType, Grant, UsagePeriod
from billing.invoicing.models import (
    CREDIT_NOTE_ORDERING,
    INVOICE_ORDERING,
    CreditNote,
    CreditNoteLine,
    DocumentSequence,
    FrozenInvoiceError,
    Invoice,
    InvoiceEvent,
    InvoiceLine,
    InvoiceStatus,
    InvoiceTax,
    LineKind,
)
from billing.notifications.models import (  # noqa: F401
    NotificationCursor,
    NotificationEvent,
    NotificationRule,
    WebhookAttempt,
    WebhookDelivery,
)

__all__ = [
    "CREDIT_NOTE_ORDERING",
    "INVOICE_ORDERING",
    "BillingProfile",
    "Cadence",
    "CustomerAccess",
    "EntitlementOverride",
    "EntitlementType",
    "Grant",
    "UsagePeriod",
    "CreditNote",
    "CreditNoteLine",
    "DocumentSequence",
    "FrozenInvoiceError",
    "Invoice",
    "InvoiceEvent",
    "InvoiceLine",
    "InvoiceStatus",
    "InvoiceTax",
    "LineKind",
    "Plan",
    "PlanVersion",
    "RateCard",
    "Subscription",
    "TaxRate",
    "WebhookEndpoint",
]
