"""Credits in the admin. Importing this module registers them.

Credit grants and ledger entries are read-only pages: a grant is made with a form that
records who gave it and why (``credit_grant``), and voided with a reason
(``credit_void``); the ledger is never edited.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import AdminSplitDateTime, AutocompleteSelect
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Sum
from django.shortcuts import get_object_or_404, redirect
from django.urls import path, reverse
from django.utils import timezone

from billing.admin_base import ReadOnlyAdmin, ReadOnlyInline, admin_link
from billing.credits.models import CreditKind
from billing.credits.services import credit_balances, credit_grant, credit_void
from billing.invoicing.admin.forms import error_messages, form_add_errors, money
from billing.models import (
    CreditGrant,
    CreditLedgerEntry,
)
from customers.models import Customer


class GrantForm(forms.Form):
    account = forms.ModelChoiceField(
        queryset=Customer.objects.order_by("key"),
        help_text="The billing account whose invoices the credit pays.",
    )
    currency = forms.CharField(
        max_length=3, required=False, help_text="Empty: the account's currency."
    )
    amount = forms.DecimalField(max_digits=19, decimal_places=4, min_value=0)
    kind = forms.ChoiceField(choices=CreditKind.choices, initial=CreditKind.PROMOTIONAL)
    priority = forms.IntegerField(
        min_value=0, max_value=32767, initial=1, help_text="Lower numbers are used first."
    )
    expires_at = forms.SplitDateTimeField(
        required=False, widget=AdminSplitDateTime, help_text="Empty: never."
    )
    reason = forms.CharField(
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Kept with the grant and its ledger entry.",
    )

    def __init__(self, *args, admin_site=None, **kwargs):
        super().__init__(*args, **kwargs)
        if admin_site is not None:
            field = self.fields["account"]
            field.widget = AutocompleteSelect(CreditGrant._meta.get_field("account"), admin_site)
            field.widget.choices = field.choices


class VoidForm(forms.Form):
    reason = forms.CharField(max_length=500, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}))


class LedgerInline(ReadOnlyInline):
    model = CreditLedgerEntry
    fk_name = "grant"
    fields = ["at", "kind", "amount_text", "invoice_link", "actor", "note"]
    readonly_fields = fields
    verbose_name_plural = "ledger"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("invoice")

    @admin.display(description="amount")
    def amount_text(self, entry: CreditLedgerEntry) -> str:
        return money(entry.amount, entry.currency)

    @admin.display(description="invoice")
    def invoice_link(self, entry: CreditLedgerEntry) -> str:
        return admin_link("billing_invoice", entry.invoice_id, entry.invoice)


@admin.register(CreditGrant)
class CreditGrantAdmin(ReadOnlyAdmin):
    list_display = [
        "__str__", "account_link", "amount_text", "remaining_text", "kind", "priority",
        "expires_at", "created_by", "created_at", "voided_at"
    ]  # fmt: skip
    list_filter = ["kind", "currency", ("voided_at", admin.EmptyFieldListFilter)]
    list_select_related = ["account", "created_by"]
    search_fields = ["account__key", "account__name", "reason"]
    actions = ["void_selected"]
    inlines = [LedgerInline]
    fields = [
        "account_link", "currency", "amount_text", "remaining_text", "account_balance", "kind",
        "priority", "expires_at", "reason", "created_by", "created_at", "voided_at", "voided_by",
        "void_reason"
    ]  # fmt: skip
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(remaining=Sum("ledger_entries__amount"))

    def has_add_permission(self, request) -> bool:
        return request.user.has_perm("billing.add_creditgrant")

    def _operate(self, request) -> None:
        if not self.has_void_permission(request):
            raise PermissionDenied

    @admin.display(description="account", ordering="account__key")
    def account_link(self, obj: CreditGrant) -> str:
        return admin_link("customers_customer", obj.account_id, obj.account.key)

    @admin.display(description="amount", ordering="amount")
    def amount_text(self, obj: CreditGrant) -> str:
        return money(obj.amount, obj.currency)

    @admin.display(description="remaining", ordering="remaining")
    def remaining_text(self, obj: CreditGrant) -> str:
        left = money(obj.remaining or 0, obj.currency)
        if obj.voided_at:
            return f"{left} (voided)"
        if obj.expires_at and obj.expires_at <= timezone.now():
            return f"{left} (expired)"
        return left

    @admin.display(description="account's balance now")
    def account_balance(self, obj: CreditGrant) -> str:
        balances = credit_balances(account=obj.account, at=timezone.now())
        return ", ".join(money(amount, currency) for currency, amount in balances.items()) or "—"

    def get_urls(self):
        return [
            path(
                "<int:pk>/void/",
                self.admin_site.admin_view(self.void_view),
                name="billing_creditgrant_void",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        grant = self.get_object(request, object_id)
        tools = []
        if grant is not None and grant.voided_at is None and self.has_void_permission(request):
            tools.append(
                {
                    "label": "Void…",
                    "id": "credit-void",
                    "url": reverse("admin:billing_creditgrant_void", args=[grant.pk]),
                }
            )
        return super().change_view(
            request, object_id, form_url, {"notify_tools": tools, **(extra_context or {})}
        )

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = GrantForm(request.POST or None, admin_site=self.admin_site)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                grant = credit_grant(
                    account=data["account"],
                    currency=data["currency"] or data["account"].currency,
                    amount=data["amount"],
                    kind=data["kind"],
                    priority=data["priority"],
                    expires_at=data["expires_at"],
                    reason=data["reason"],
                    user=request.user,
                    now=timezone.now(),
                )
            except ValidationError as exc:
                form_add_errors(form, exc)
            else:
                self.log_addition(request, grant, [{"added": {}}])
                self.message_user(
                    request,
                    f"Granted {money(grant.amount, grant.currency)} of credit to "
                    f"{grant.account.key}.",
                    messages.SUCCESS,
                )
                return redirect(self._change_url(grant.pk))
        return self._page(
            request,
            title="Grant credit",
            back_url=self._list_url(),
            form=form,
            submit="Grant credit",
            intro="Credit is applied to the account's invoices when they are issued: lower priority "
            "numbers first, then the soonest expiry.",
        )

    def _void(self, request, grants, reason: str) -> None:
        for grant in grants:
            try:
                voided = credit_void(
                    grant=grant, reason=reason, user=request.user, now=timezone.now()
                )
            except ValidationError as exc:
                self.message_user(
                    request, f"{grant}: {' '.join(error_messages(exc))}", messages.ERROR
                )
            else:
                self.message_user(request, f"Voided {voided} (reason: {reason}).", messages.SUCCESS)

    def void_view(self, request, pk):
        self._operate(request)
        grant = get_object_or_404(CreditGrant.objects.select_related("account"), pk=pk)
        form = VoidForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            self._void(request, [grant], form.cleaned_data["reason"])
            return redirect(self._change_url(grant.pk))
        return self._page(
            request,
            title=f"Void {grant}",
            back_url=self._change_url(grant.pk),
            form=form,
            submit="Void credit",
            danger=True,
            intro="The unused remainder leaves the account's balance; what the grant already "
            "paid stays paid and its history stays in the ledger. This cannot be undone.",
        )

    @admin.action(description="Void selected credit grants…", permissions=["void"])
    def void_selected(self, request, queryset):
        form = VoidForm(request.POST if "post" in request.POST else None)
        if form.is_bound and form.is_valid():
            self._void(request, queryset.select_related("account"), form.cleaned_data["reason"])
            return None
        return self._page(
            request,
            title="Void credit grants",
            back_url=self._list_url(),
            form=form,
            submit="Void credit",
            danger=True,
            rows=[str(g) for g in queryset],
            selected=[g.pk for g in queryset],
            action="void_selected",
            intro="The unused remainder of each grant leaves the balance. This cannot be undone.",
        )

    def has_void_permission(self, request) -> bool:
        # The pages are read-only (no change permission in the admin's sense); voiding is
        # the one operation, allowed to those who may change grants.
        return request.user.has_perm("billing.change_creditgrant")


@admin.register(CreditLedgerEntry)
class CreditLedgerEntryAdmin(ReadOnlyAdmin):
    list_display = [
        "at", "account_link", "kind", "amount_text", "grant_link", "invoice_link", "actor", "note"
    ]  # fmt: skip
    list_filter = ["kind", "currency"]
    list_select_related = ["account", "grant", "invoice"]
    search_fields = ["account__key", "invoice__number", "note", "actor"]
    date_hierarchy = "at"

    @admin.display(description="account", ordering="account__key")
    def account_link(self, entry: CreditLedgerEntry) -> str:
        return admin_link("customers_customer", entry.account_id, entry.account.key)

    @admin.display(description="amount", ordering="amount")
    def amount_text(self, entry: CreditLedgerEntry) -> str:
        return money(entry.amount, entry.currency)

    @admin.display(description="grant")
    def grant_link(self, entry: CreditLedgerEntry) -> str:
        return admin_link("billing_creditgrant", entry.grant_id, f"grant #{entry.grant_id}")

    @admin.display(description="invoice")
    def invoice_link(self, entry: CreditLedgerEntry) -> str:
        return admin_link("billing_invoice", entry.invoice_id, entry.invoice)
