"""Credits: a billing account's prepaid balance, as grants and an append-only ledger.

A ``CreditGrant`` is what an operator gave (or the customer bought): an amount in a
currency, with a priority and an optional expiry. Every movement of money in or out of a
grant is a ``CreditLedgerEntry``: the grant itself (+), its application to an invoice
(−), its expiry (−) and its void (−). A grant's remaining amount and an account's
balance are sums over the ledger, never a stored counter.

Ledger entries are never changed or deleted: the model refuses it, and so does the
database (a trigger in the migration that creates the table).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from customers.models import validate_currency

MONEY = {"max_digits": 19, "decimal_places": 4}


class LedgerImmutableError(Exception):
    """Raised on any attempt to change or delete a credit ledger entry."""


class CreditKind(models.TextChoices):
    PAID = "paid", "Paid (bought by the customer)"
    PROMOTIONAL = "promotional", "Promotional (given)"


class LedgerKind(models.TextChoices):
    GRANT = "grant", "Grant"
    APPLY = "apply", "Applied to an invoice"
    EXPIRE = "expire", "Expired"
    VOID = "void", "Voided"


class CreditGrant(models.Model):
    """Credit given to a billing account, used on invoices at issue.

    Grants are used by priority (lower numbers first, as entitlement grants), then by
    soonest expiry (grants that never expire last), then oldest first.
    """

    account = models.ForeignKey(
        "customers.Customer",
        on_delete=models.PROTECT,
        related_name="credit_grants",
        help_text="The billing account whose invoices the credit pays.",
    )
    currency = models.CharField(max_length=3, validators=[validate_currency])
    amount = models.DecimalField(**MONEY)
    kind = models.CharField(
        max_length=20, choices=CreditKind.choices, default=CreditKind.PROMOTIONAL
    )
    priority = models.PositiveSmallIntegerField(
        default=1, help_text="Lower numbers are used first."
    )
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    reason = models.CharField(max_length=500)
    created_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField()
    voided_at = models.DateTimeField(null=True, blank=True)
    voided_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    void_reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="credit_grant_positive"),
            models.CheckConstraint(
                condition=Q(expires_at__isnull=True) | Q(expires_at__gt=models.F("created_at")),
                name="credit_grant_expires_after_creation",
            ),
            models.CheckConstraint(
                condition=Q(voided_at__isnull=True) | ~Q(void_reason=""),
                name="credit_grant_void_has_reason",
            ),
        ]
        indexes = [models.Index(fields=["account", "currency", "voided_at"])]

    def __str__(self) -> str:
        return f"{self.amount} {self.currency} credit for {self.account_id} ({self.get_kind_display()})"


class LedgerQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise LedgerImmutableError("Credit ledger entries never change; write a new entry instead.")

    def delete(self):
        raise LedgerImmutableError("Credit ledger entries are never deleted.")


class CreditLedgerEntry(models.Model):
    """One movement of credit: + for a grant, − for an application, expiry or void."""

    account = models.ForeignKey(
        "customers.Customer", on_delete=models.PROTECT, related_name="credit_ledger"
    )
    currency = models.CharField(max_length=3, validators=[validate_currency])
    grant = models.ForeignKey(CreditGrant, on_delete=models.PROTECT, related_name="ledger_entries")
    invoice = models.ForeignKey(
        "billing.Invoice",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="credit_entries",
    )
    kind = models.CharField(max_length=10, choices=LedgerKind.choices)
    amount = models.DecimalField(**MONEY, help_text="Signed: + adds credit, − takes it away.")
    at = models.DateTimeField(help_text="When the movement took effect.")
    actor = models.CharField(max_length=150, blank=True)
    note = models.CharField(max_length=500, blank=True)

    objects = LedgerQuerySet.as_manager()

    class Meta:
        ordering = ["at", "pk"]
        verbose_name_plural = "credit ledger entries"
        constraints = [
            # One application per grant per invoice: a retried or repeated issue hook
            # cannot spend the same grant twice on one invoice.
            models.UniqueConstraint(
                fields=["grant", "invoice"], condition=Q(kind="apply"), name="credit_apply_once_per_invoice"
            ),
            models.UniqueConstraint(
                fields=["grant", "kind"], condition=Q(kind__in=["grant", "expire", "void"]),
                name="credit_grant_expire_void_once",
            ),
            models.CheckConstraint(
                condition=(Q(kind="grant", amount__gt=0, invoice__isnull=True)
                           | Q(kind="apply", amount__lt=0, invoice__isnull=False)
                           | Q(kind__in=["expire", "void"], amount__lt=0, invoice__isnull=True)),
                name="credit_entry_sign_by_kind",
            ),
        ]  # fmt: skip
        indexes = [models.Index(fields=["account", "currency", "at"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.amount} {self.currency}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise LedgerImmutableError(
                "Credit ledger entries never change; write a new entry instead."
            )
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise LedgerImmutableError("Credit ledger entries are never deleted.")
