"""Entitlements in the admin: overrides, grants, and each customer's entitlement status.
Importing this module registers them.

- **Overrides** replace a plan's template for one billing account (or add an
  entitlement the plan does not have); deleting one returns the account to its plan.
- **Grants** add units on top of a metered limit. They are made with a reason, and
  ``created_by`` is the operator who made them; they are never edited: a wrong grant is
  voided, with a reason (kept at the end of the grant's reason, and in the admin's
  history of the grant).
- **Entitlement status** (``/admin/billing/entitlements/<customer key>/``, URL name
  ``admin:billing_entitlement_status``): every entitlement of the customer's billing
  account now (or at ``?time=``), with its limit, usage, grants, balance, overage,
  access and usage period, and every grant of the account. It reads the database, never
  the value check's cache, so it is also the way to see what the check should answer.
  The admin site (``backoffice.sites``) routes it.

Every change here moves the value check's cache on (``billing.entitlements.cache``).
"""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.widgets import AdminSplitDateTime
from django.core.exceptions import BadRequest, PermissionDenied
from django.db.models import Q
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from billing.entitlements.context import entitlement_context_build
from billing.entitlements.grants import grant_create, grant_void
from billing.entitlements.specs import entitlements_of
from billing.entitlements.value import entitlement_value_from
from billing.models import EntitlementOverride, EntitlementType, Grant
from core.api.times import instant_parse
from core.money import format_quantity
from customers.models import Customer
from customers.selectors import billing_account_ids, customer_billing_account

ACTION_FORM = "admin/billing/entitlements/action_form.html"
STATUS_PAGE = "admin/billing/entitlements/status.html"


def _customer_link(customer: Customer) -> str:
    return format_html(
        '<a href="{}">{}</a>',
        reverse("admin:customers_customer_change", args=[customer.pk]),
        customer.key,
    )


def _status_link(customer: Customer, text: str = "status") -> str:
    return format_html(
        '<a href="{}">{}</a>',
        reverse("admin:billing_entitlement_status", args=[customer.key]),
        text,
    )


def _number(value) -> str:
    return "—" if value is None else format_quantity(value)


def _billing_account_error(customer: Customer | None) -> str | None:
    """Why ``customer`` cannot hold an override or grant (a subsidiary billed to its
    parent is checked on its billing account), or None."""
    if customer is None or customer.pk is None:
        return None
    account_id = billing_account_ids(customer_ids=[customer.pk])[customer.pk]
    if account_id == customer.pk:
        return None
    account = Customer.objects.get(pk=account_id)
    return (
        f"{customer.key} is billed on {account.key}, and its entitlements are {account.key}'s: "
        f"choose {account.key}."
    )


# ---------------------------------------------------------------- overrides


class OverrideForm(forms.ModelForm):
    class Meta:
        model = EntitlementOverride
        fields = [
            "customer", "feature", "type", "limit", "period", "hard", "enabled", "config",
            "thresholds", "reason",
        ]  # fmt: skip

    def clean(self):
        data = super().clean()
        problem = _billing_account_error(data.get("customer"))
        if problem:
            self.add_error("customer", problem)
        kind = data.get("type")
        limit = data.get("limit")
        if kind == EntitlementType.METERED and limit is not None and limit < 0:
            self.add_error("limit", "A limit cannot be negative.")
        if kind != EntitlementType.METERED and limit is not None:
            self.add_error("limit", "Only a metered entitlement has a limit.")
        if kind == EntitlementType.STATIC and not isinstance(data.get("config"), dict):
            self.add_error("config", 'Give the configuration as a JSON object, e.g. {"rps": 10}.')
        thresholds = data.get("thresholds")
        if thresholds and (
            not isinstance(thresholds, list)
            or not all(isinstance(t, int | float) and t > 0 for t in thresholds)
        ):
            self.add_error("thresholds", "Give a list of positive percentages, e.g. [80, 100].")
        return data


@admin.register(EntitlementOverride)
class EntitlementOverrideAdmin(admin.ModelAdmin):
    form = OverrideForm
    list_display = [
        "customer_link", "feature", "type", "limit_text", "period", "hard", "enabled",
        "reason", "updated_at", "status_link",
    ]  # fmt: skip
    list_display_links = ["feature"]
    list_filter = ["type", "period", "hard", "enabled"]
    list_select_related = ["customer", "feature"]
    search_fields = ["customer__key", "customer__name", "feature__key", "reason"]
    autocomplete_fields = ["customer", "feature"]
    readonly_fields = ["created_at", "updated_at"]

    @admin.display(description="customer", ordering="customer__key")
    def customer_link(self, obj: EntitlementOverride) -> str:
        return _customer_link(obj.customer)

    @admin.display(description="limit", ordering="limit")
    def limit_text(self, obj: EntitlementOverride) -> str:
        return _number(obj.limit) if obj.type == EntitlementType.METERED else ""

    @admin.display(description="entitlements")
    def status_link(self, obj: EntitlementOverride) -> str:
        return _status_link(obj.customer)


# ---------------------------------------------------------------- grants


class GrantStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [
            ("active", "In effect now"),
            ("scheduled", "Starts later"),
            ("expired", "Expired"),
            ("voided", "Voided"),
        ]

    def queryset(self, request, queryset):
        now = timezone.now()
        live = queryset.filter(voided_at__isnull=True)
        if self.value() == "active":
            return live.filter(effective_at__lte=now).filter(
                Q(expires_at__isnull=True) | Q(expires_at__gt=now)
            )
        if self.value() == "scheduled":
            return live.filter(effective_at__gt=now)
        if self.value() == "expired":
            return live.filter(expires_at__lte=now)
        if self.value() == "voided":
            return queryset.filter(voided_at__isnull=False)
        return queryset


def grant_state(grant: Grant, now) -> str:
    if grant.voided_at is not None:
        return "voided"
    if grant.effective_at > now:
        return "scheduled"
    if grant.expires_at is not None and grant.expires_at <= now:
        return "expired"
    return "in effect"


class GrantAddForm(forms.ModelForm):
    """A new grant: who gets it, how much, when, and why (required)."""

    reason = forms.CharField(
        max_length=200,
        help_text="Why the units are given; kept with the grant.",
        widget=forms.TextInput(attrs={"size": 60}),
    )

    class Meta:
        model = Grant
        fields = [
            "customer", "feature", "amount", "priority", "effective_at", "expires_at",
            "rollover", "reason",
        ]  # fmt: skip
        field_classes = {
            "effective_at": forms.SplitDateTimeField,
            "expires_at": forms.SplitDateTimeField,
        }
        widgets = {"effective_at": AdminSplitDateTime, "expires_at": AdminSplitDateTime}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["effective_at"].initial = timezone.now().replace(second=0, microsecond=0)
        self.fields["expires_at"].help_text = "Empty: never."

    def clean(self):
        data = super().clean()
        problem = _billing_account_error(data.get("customer"))
        if problem:
            self.add_error("customer", problem)
        if data.get("amount") is not None and data["amount"] <= 0:
            self.add_error("amount", "A grant adds a positive number of units.")
        effective, expires = data.get("effective_at"), data.get("expires_at")
        if effective and expires and expires <= effective:
            self.add_error("expires_at", "A grant must expire after it takes effect.")
        return data


class VoidForm(forms.Form):
    reason = forms.CharField(
        max_length=150,
        help_text="Kept at the end of the grant's reason and in its history.",
        widget=forms.TextInput(attrs={"size": 60}),
    )


@admin.register(Grant)
class GrantAdmin(admin.ModelAdmin):
    list_display = [
        "label", "customer_link", "feature", "amount_text", "priority", "effective_at",
        "expires_at", "rollover", "state", "reason", "created_by", "created_at",
    ]  # fmt: skip
    list_display_links = ["label"]
    list_filter = [GrantStateFilter, "rollover", "feature"]
    list_select_related = ["customer", "feature", "created_by"]
    search_fields = ["customer__key", "customer__name", "feature__key", "reason"]
    date_hierarchy = "effective_at"
    autocomplete_fields = ["customer", "feature"]
    actions = ["void_selected"]
    change_form_template = "admin/billing/entitlements/grant_change_form.html"
    readonly_fields = [
        "customer_link", "feature", "amount_text", "priority", "effective_at", "expires_at",
        "rollover", "state", "reason", "created_by", "created_at", "voided_at",
    ]  # fmt: skip

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = GrantAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return list(GrantAddForm._meta.fields)
        return self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # void instead: the grant's history stays

    def has_void_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("billing.change_grant")

    def save_model(self, request, obj, form, change):
        if change:
            return  # grants are not edited; they are voided
        data = form.cleaned_data
        created = grant_create(
            account=data["customer"],
            feature=data["feature"],
            amount=data["amount"],
            effective_at=data["effective_at"],
            expires_at=data.get("expires_at"),
            priority=data["priority"],
            rollover=data["rollover"],
            reason=data["reason"],
            created_by=request.user,
        )
        # the admin goes on with ``obj`` (history, redirect): make it the saved grant
        obj.pk, obj.created_by, obj.created_at = created.pk, created.created_by, created.created_at
        obj._state.adding, obj._state.db = False, created._state.db

    @admin.display(description="grant", ordering="pk")
    def label(self, obj: Grant) -> str:
        return f"#{obj.pk}"

    @admin.display(description="customer", ordering="customer__key")
    def customer_link(self, obj: Grant) -> str:
        return _customer_link(obj.customer)

    @admin.display(description="amount", ordering="amount")
    def amount_text(self, obj: Grant) -> str:
        return _number(obj.amount)

    @admin.display(description="state")
    def state(self, obj: Grant) -> str:
        return grant_state(obj, timezone.now()) if obj.pk else "—"

    def get_urls(self):
        return [
            path("void/", self.admin_site.admin_view(self.void_view), name="billing_grant_void"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        grant = self.get_object(request, object_id)
        tools = []
        if grant is not None:
            tools.append(
                {
                    "label": "Entitlement status",
                    "id": "entitlement-status",
                    "url": reverse("admin:billing_entitlement_status", args=[grant.customer.key]),
                }
            )
            if grant.voided_at is None and self.has_void_permission(request):
                tools.insert(
                    0,
                    {
                        "label": "Void…",
                        "id": "grant-void",
                        "url": f"{reverse('admin:billing_grant_void')}?ids={grant.pk}",
                    },
                )
        return super().change_view(
            request, object_id, form_url, {"grant_tools": tools, **(extra_context or {})}
        )

    @admin.action(description="Void the selected grants…", permissions=["void"])
    def void_selected(self, request, queryset):
        ids = ",".join(str(pk) for pk in queryset.values_list("pk", flat=True))
        return redirect(f"{reverse('admin:billing_grant_void')}?ids={ids}")

    def void_view(self, request):
        if not self.has_void_permission(request):
            raise PermissionDenied
        ids = [int(i) for i in request.GET.get("ids", "").split(",") if i.isdigit()]
        grants = list(
            Grant.objects.select_related("customer", "feature").filter(pk__in=ids).order_by("pk")
        )
        live = [g for g in grants if g.voided_at is None]
        form = VoidForm(request.POST or None)
        if request.method == "POST" and form.is_valid() and live:
            reason = form.cleaned_data["reason"]
            now = timezone.now()
            for grant in live:
                voided = grant_void(grant=grant, now=now, reason=reason)
                self.log_change(request, voided, f"Voided: {reason}")
                self.message_user(
                    request,
                    f"Voided grant #{grant.pk}: {_number(grant.amount)} {grant.feature.key} for "
                    f"{grant.customer.key} (reason: {reason}).",
                    messages.SUCCESS,
                )
            if len(live) == 1:
                return redirect("admin:billing_grant_change", live[0].pk)
            return redirect("admin:billing_grant_changelist")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Void grants" if len(live) != 1 else f"Void grant #{live[0].pk}",
            "back_url": reverse("admin:billing_grant_changelist"),
            "form": form if live else None,
            "submit": "Void",
            "danger": True,
            "rows": [
                f"#{g.pk}: {_number(g.amount)} {g.feature.key} for {g.customer.key}"
                f" ({grant_state(g, timezone.now())})"
                for g in grants
            ]
            or ["No grants selected."],
            "intro": "Voided units stop counting at once, in every usage period, also those "
            "already past (a rollover grant no longer carries anything). This cannot be undone."
            if live
            else "Nothing to void: the selected grants are already voided.",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, ACTION_FORM, context)


# ---------------------------------------------------------------- status page


def _instant(raw: str | None):
    if not raw:
        return timezone.now()
    try:
        return instant_parse(raw)
    except ValueError as exc:  # unreadable, or an instant the database cannot take
        raise BadRequest(str(exc)) from exc


def entitlement_status_context(*, customer: Customer, at) -> dict:
    """Every entitlement of the customer's billing account at ``at``, as display rows,
    and every grant of the account."""
    account = customer_billing_account(customer=customer)
    zone = ZoneInfo(account.timezone)
    overrides = {o.feature_id: o.pk for o in EntitlementOverride.objects.filter(customer=account)}
    rows = []
    for feature, spec in entitlements_of(account=account, at=at):
        context = entitlement_context_build(account=account, feature=feature)
        value = entitlement_value_from(context=context, at=at)
        period = value.period if value else None
        rows.append(
            {
                "feature": feature,
                "spec": spec,
                "type": spec.type,
                "source": spec.source,
                "override_pk": overrides.get(feature.pk),
                "limit": _number(spec.limit) if spec.type == "metered" else "",
                "usage": _number(value.usage) if value and spec.type == "metered" else "",
                "granted": _number(value.granted) if value and spec.type == "metered" else "",
                "balance": _number(value.balance) if value and spec.type == "metered" else "",
                "overage": _number(value.overage) if value and spec.type == "metered" else "",
                "has_access": value.has_access if value else False,
                "hard": spec.hard,
                "thresholds": ", ".join(f"{t}%" for t in spec.thresholds),
                "config": json.dumps(value.config, sort_keys=True)
                if value and spec.type == "static"
                else None,
                "period": period,
                "period_local": (
                    f"{period.start.astimezone(zone):%Y-%m-%d %H:%M} – "
                    f"{period.end.astimezone(zone):%Y-%m-%d %H:%M} {account.timezone}"
                )
                if period
                else "",
            }
        )
    grants = list(
        Grant.objects.filter(customer=account)
        .select_related("feature", "created_by")
        .order_by("feature__key", "priority", "effective_at", "pk")
    )
    for grant in grants:
        grant.state = grant_state(grant, at)
        grant.amount_text = _number(grant.amount)
    return {"customer": customer, "account": account, "at": at, "rows": rows, "grants": grants}


def entitlement_status_view(request, key: str):
    if not (
        request.user.has_perm("customers.view_customer")
        and request.user.has_perm("billing.view_grant")
    ):
        raise PermissionDenied
    customer = get_object_or_404(Customer, key=key)
    at = _instant(request.GET.get("time"))
    context = {
        **admin.site.each_context(request),
        "title": f"Entitlements of {customer.key}",
        "opts": Grant._meta,
        "can_grant": request.user.has_perm("billing.add_grant"),
        "can_override": request.user.has_perm("billing.add_entitlementoverride"),
        **entitlement_status_context(customer=customer, at=at),
    }
    return TemplateResponse(request, STATUS_PAGE, context)
