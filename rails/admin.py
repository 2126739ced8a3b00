from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

import rails.admin_ach  # noqa: F401  ACH files, export and return upload
from billing.invoicing.admin.forms import money
from rails.models import (
    InboundWebhook,
    RailItemMapping,
    Settlement,
    SettlementEvent,
    SettlementExchange,
    SettlementState,
)
from rails.outbox import settlement_retry
from rails.outcomes import settlement_cancel, settlement_mark_paid
from rails.states import settlement_state_text


def _state_label(state: str) -> str:
    return SettlementState(state).label if state in SettlementState.values else (state or "—")


class EventInline(admin.TabularInline):
    model = SettlementEvent
    fields = ["at", "from_label", "to_label", "actor", "note"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "timeline"

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("settlement")

    @admin.display(description="from")
    def from_label(self, event: SettlementEvent) -> str:
        return _state_label(event.from_state) if event.from_state else "—"

    @admin.display(description="to")
    def to_label(self, event: SettlementEvent) -> str:
        """The latest move into the settlement's present failed state says what happens
        next (a retry, or an operator); earlier ones are history."""
        settlement = event.settlement
        if event.to_state == settlement.state == SettlementState.FAILED:
            latest = settlement.events.order_by("at", "pk").values_list("pk", flat=True).last()
            if event.pk == latest:
                return settlement_state_text(settlement, now=timezone.now())
        return _state_label(event.to_state)


class FailedFilter(admin.SimpleListFilter):
    """Failed settlements split by what happens next."""

    title = "failed: next step"
    parameter_name = "failed"

    def lookups(self, request, model_admin):
        return [("operator", "Needs an operator"), ("retry", "Retry scheduled")]

    def queryset(self, request, queryset):
        failed = queryset.filter(state=SettlementState.FAILED)
        if self.value() == "operator":
            return failed.filter(next_action_at__isnull=True)
        if self.value() == "retry":
            return failed.filter(next_action_at__isnull=False)
        return queryset


class ExchangeInline(admin.StackedInline):
    model = SettlementExchange
    fields = [
        "at",
        "attempt",
        "step",
        "sent",
        "method",
        "url",
        "idempotency_key",
        "status_code",
        "request_headers",
        "request_body",
        "response_body",
        "error",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False
    classes = ["collapse"]
    verbose_name_plural = "requests and responses (credentials redacted)"

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class CancelForm(forms.Form):
    reason = forms.CharField(
        max_length=500, help_text="Why the settlement stops, e.g. 'Paid by wire transfer'."
    )


class MarkPaidForm(forms.Form):
    note = forms.CharField(
        max_length=500,
        required=False,
        help_text="How the payment arrived, e.g. 'Wire transfer received 2026-12-04'.",
    )


# States a payment received outside the rail can settle (settlement_mark_paid moves them).
MARKABLE_PAID = (
    SettlementState.SUBMITTING,
    SettlementState.SUBMITTED,
    SettlementState.COLLECTING,
    SettlementState.FAILED,
    SettlementState.UNCOLLECTIBLE,
)


@admin.register(Settlement)
class SettlementAdmin(admin.ModelAdmin):
    # The first column opens the settlement: plain text, since Django wraps it in the link
    # to the change page (a link inside it would leave that one empty and unclickable).
    list_display = [
        "invoice_number",
        "customer",
        "amount",
        "rail",
        "mode",
        "state_text",
        "attempts",
        "next_action",
        "last_error_short",
    ]
    list_display_links = ["invoice_number"]
    list_filter = ["state", FailedFilter, "rail", "sandbox"]
    list_select_related = ["invoice__customer"]
    search_fields = ["invoice__number", "invoice__customer__key", "invoice__customer__name"]
    readonly_fields = [
        "invoice_link",
        "amount",
        "rail",
        "mode",
        "state_text",
        "attempts",
        "external_ids",
        "last_error",
        "next_action",
        "created_at",
        "updated_at",
    ]
    fields = readonly_fields
    inlines = [EventInline, ExchangeInline]
    actions = ["retry_now", "mark_paid"]
    change_form_template = "admin/rails/settlement/change_form.html"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("invoice__customer")

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False if obj is not None else super().has_change_permission(request, obj)

    @admin.display(description="invoice", ordering="invoice__number")
    def invoice_number(self, obj: Settlement) -> str:
        return obj.invoice.number or str(obj.invoice_id)

    @admin.display(description="invoice", ordering="invoice__number")
    def invoice_link(self, obj: Settlement):
        url = reverse("admin:billing_invoice_change", args=[obj.invoice_id])
        return format_html('<a href="{}">{}</a>', url, obj.invoice.number or obj.invoice_id)

    @admin.display(description="amount due", ordering="invoice__amount_due")
    def amount(self, obj: Settlement) -> str:
        return money(obj.invoice.amount_due, obj.invoice.currency)

    @admin.display(description="next action", ordering="next_action_at")
    def next_action(self, obj: Settlement) -> str:
        """When the worker takes the next step; nothing when none is scheduled (the state
        says who acts instead: an operator, or nobody for a finished settlement)."""
        if obj.next_action_at is None:
            return "—"
        return f"{timezone.localtime(obj.next_action_at):%Y-%m-%d %H:%M %Z}"

    @admin.display(description="customer", ordering="invoice__customer__key")
    def customer(self, obj: Settlement) -> str:
        return obj.invoice.customer.key

    @admin.display(description="state", ordering="state")
    def state_text(self, obj: Settlement) -> str:
        return settlement_state_text(obj, now=timezone.now())

    @admin.display(description="mode")
    def mode(self, obj: Settlement):
        if obj.sandbox:
            return format_html(
                '<span title="{}" style="color:#9a6700">sandbox: nothing sent</span>',
                "The rail has no credentials; requests are built and stored here, never sent.",
            )
        return "live"

    @admin.display(description="last error")
    def last_error_short(self, obj: Settlement) -> str:
        return (obj.last_error[:80] + "…") if len(obj.last_error) > 80 else obj.last_error

    # Roles (audit.roles): operators retry; cancelling and marking paid need change_settlement.
    def has_retry_permission(self, request) -> bool:
        return request.user.has_perm("rails.retry_settlement")

    @admin.action(description="Retry the selected failed settlements now", permissions=["retry"])
    def retry_now(self, request, queryset):
        now = timezone.now()
        for settlement in queryset:
            try:
                settlement_retry(settlement=settlement, now=now, actor=request.user.get_username())
                self.message_user(
                    request, f"{settlement.invoice.number}: retry queued.", messages.SUCCESS
                )
            except ValidationError as exc:
                self.message_user(
                    request,
                    f"{settlement.invoice.number}: {' '.join(exc.messages)}",
                    messages.WARNING,
                )

    @admin.action(
        description="Mark the selected settlements paid (payment received outside the rail)",
        permissions=["change"],
    )
    def mark_paid(self, request, queryset):
        now = timezone.now()
        for settlement in queryset:
            result = settlement_mark_paid(
                settlement=settlement, now=now, actor=request.user.get_username()
            )
            level = messages.SUCCESS if result.state == "paid" else messages.WARNING
            self.message_user(request, f"{settlement.invoice.number}: {result.state}.", level)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        extra = {
            "can_mark_paid": obj is not None
            and obj.state in MARKABLE_PAID
            and request.user.has_perm("rails.change_settlement"),
        }
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def get_urls(self):
        return [
            path(
                "<int:pk>/retry/",
                self.admin_site.admin_view(self.retry_view),
                name="rails_settlement_retry",
            ),
            path(
                "<int:pk>/cancel/",
                self.admin_site.admin_view(self.cancel_view),
                name="rails_settlement_cancel",
            ),
            path(
                "<int:pk>/mark-paid/",
                self.admin_site.admin_view(self.mark_paid_view),
                name="rails_settlement_mark_paid",
            ),
            path(
                "invoice/<uuid:invoice_id>/",
                self.admin_site.admin_view(self.of_invoice_view),
                name="rails_settlement_of_invoice",
            ),
            *super().get_urls(),
        ]

    def _operator_check(self, request, permission: str = "rails.change_settlement") -> None:
        if not request.user.has_perm(permission):
            raise PermissionDenied

    def retry_view(self, request, pk: int):
        self._operator_check(request, "rails.retry_settlement")
        settlement = get_object_or_404(Settlement, pk=pk)
        if request.method == "POST":
            try:
                settlement_retry(
                    settlement=settlement, now=timezone.now(), actor=request.user.get_username()
                )
                self.message_user(request, "Retry queued as a new attempt.", messages.SUCCESS)
            except ValidationError as exc:
                self.message_user(request, " ".join(exc.messages), messages.ERROR)
        return redirect("admin:rails_settlement_change", pk)

    def cancel_view(self, request, pk: int):
        self._operator_check(request)
        settlement = get_object_or_404(Settlement.objects.select_related("invoice"), pk=pk)
        form = CancelForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                settlement_cancel(
                    settlement=settlement,
                    now=timezone.now(),
                    actor=request.user.get_username(),
                    reason=form.cleaned_data["reason"],
                )
                self.message_user(request, "Settlement cancelled.", messages.SUCCESS)
                return redirect("admin:rails_settlement_change", pk)
            except ValidationError as exc:
                form.add_error(None, " ".join(exc.messages))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Cancel the settlement of {settlement.invoice.number}",
            "form": form,
            "settlement": settlement,
            "opts": self.model._meta,
        }
        return render(request, "admin/rails/settlement/cancel.html", context)

    def mark_paid_view(self, request, pk: int):
        """Confirm, then record a payment received outside the rail (the manual rail's
        only way forward)."""
        self._operator_check(request)
        settlement = get_object_or_404(Settlement.objects.select_related("invoice"), pk=pk)
        form = MarkPaidForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            result = settlement_mark_paid(
                settlement=settlement,
                now=timezone.now(),
                actor=request.user.get_username(),
                note=form.cleaned_data["note"],
            )
            if result.state == SettlementState.PAID:
                self.message_user(
                    request, f"{settlement.invoice.number} marked paid.", messages.SUCCESS
                )
            else:
                self.message_user(
                    request,
                    f"{settlement.invoice.number} was not marked paid: it is {result.state}.",
                    messages.WARNING,
                )
            return redirect("admin:rails_settlement_change", pk)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Mark {settlement.invoice.number} paid",
            "form": form,
            "settlement": settlement,
            "amount": self.amount(settlement),
            "opts": self.model._meta,
        }
        return render(request, "admin/rails/settlement/mark_paid.html", context)

    def of_invoice_view(self, request, invoice_id):
        """The settlement of an invoice, by the invoice's id: how billing's invoice page
        links to it without knowing the settlement (billing never imports rails)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        settlement = get_object_or_404(Settlement, invoice_id=invoice_id)
        return redirect("admin:rails_settlement_change", settlement.pk)


@admin.register(RailItemMapping)
class RailItemMappingAdmin(admin.ModelAdmin):
    list_display = ["rail", "feature", "line_kind", "external_item_id", "note"]
    list_filter = ["rail"]
    list_select_related = ["feature"]
    autocomplete_fields = ["feature"]
    search_fields = ["external_item_id", "feature__key"]


@admin.register(InboundWebhook)
class InboundWebhookAdmin(admin.ModelAdmin):
    list_display = ["received_at", "rail", "event_type", "event_id", "processed_at", "error"]
    list_filter = ["rail", "event_type"]
    search_fields = ["event_id"]
    readonly_fields = [
        "rail",
        "event_id",
        "event_type",
        "payload",
        "headers",
        "received_at",
        "processed_at",
        "error",
    ]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
