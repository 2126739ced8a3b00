"""The catalog in the admin: plans and their versions, tax rates, billing profiles and
webhook endpoints.

A plan's prices change only through its "Edit prices" page, which saves a whole spec with
``plan_save``: in place while the current version has no subscribers, as a new version
once it has (subscribers stay on theirs). Versions are therefore read-only here.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Q
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from billing.catalog.admin.forms import (
    PlanSpecForm,
    RateCardFormSet,
    plan_spec_build,
    plan_spec_errors,
    rate_card_initial,
)
from billing.catalog.prices import price_describe, unit_nouns
from billing.catalog.services import plan_latest_version, plan_save, plan_version_spec
from billing.models import BillingProfile, Plan, PlanVersion, RateCard, TaxRate, WebhookEndpoint

OUTCOMES = {
    "created": "created with version {v}",
    "unchanged": "unchanged: the prices are those of version {v}",
    "updated": "version {v} changed in place (it had no subscribers)",
    "new_version": "saved as version {v}; subscribers of earlier versions stay on theirs",
}


def active_subscribers(now) -> Count:
    return Count(
        "subscriptions",
        filter=Q(subscriptions__end__isnull=True) | Q(subscriptions__end__gt=now),
        distinct=True,
    )


def _link(url_name: str, pk, text) -> str:
    return format_html('<a href="{}">{}</a>', reverse(url_name, args=[pk]), text)


class PlanVersionInline(admin.TabularInline):
    model = PlanVersion
    fields = [
        "link",
        "currency",
        "cadence",
        "minimum_commitment",
        "subscribers",
        "customer",
        "created_at",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False
    ordering = ["-version"]
    verbose_name_plural = "versions (custom contracts name their customer)"

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("plan", "customer")
            .annotate(subscribers=active_subscribers(timezone.now()))
        )

    @admin.display(description="version")
    def link(self, obj: PlanVersion):
        return _link("admin:billing_planversion_change", obj.pk, f"v{obj.version}")

    @admin.display(description="subscribers")
    def subscribers(self, obj: PlanVersion) -> int:
        return obj.subscribers


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ["key", "name", "current_version", "version_count", "subscribers"]
    search_fields = ["key", "name"]
    fields = ["key", "name", "description", "created_at"]
    readonly_fields = ["key", "created_at"]
    inlines = [PlanVersionInline]
    actions = ["edit_prices"]
    change_form_template = "admin/billing/plan/change_form.html"

    def get_queryset(self, request):
        now = timezone.now()
        return (
            super()
            .get_queryset(request)
            .annotate(
                version_count=Count(
                    "versions", filter=Q(versions__customer__isnull=True), distinct=True
                ),
                subscriber_count=Count(
                    "versions__subscriptions",
                    filter=Q(versions__subscriptions__end__isnull=True)
                    | Q(versions__subscriptions__end__gt=now),
                    distinct=True,
                ),
            )
        )

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        plans = list(changelist.result_list)
        latest = (
            PlanVersion.objects.filter(plan__in=plans, customer__isnull=True)
            .order_by("plan_id", "-version")
            .distinct("plan_id")
        )
        by_plan = {v.plan_id: v for v in latest}
        for plan in plans:
            plan.current = by_plan.get(plan.pk)
        return changelist

    @admin.display(description="current version")
    def current_version(self, obj: Plan) -> str:
        version = getattr(obj, "current", None)
        if version is None:
            return "—"
        return f"v{version.version} · {version.currency} · {version.get_cadence_display().lower()}"

    @admin.display(description="public versions", ordering="version_count")
    def version_count(self, obj: Plan) -> int:
        return obj.version_count

    @admin.display(description="subscribers", ordering="subscriber_count")
    def subscribers(self, obj: Plan) -> int:
        return obj.subscriber_count

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # versions, subscriptions and invoices refer to plans

    def get_urls(self):
        return [
            path(
                "<path:object_id>/prices/",
                self.admin_site.admin_view(self.prices_view),
                name="billing_plan_prices",
            ),
            *super().get_urls(),
        ]

    def add_view(self, request, form_url="", extra_context=None):
        return self.prices_view(request, None)

    def save_model(self, request, obj, form, change):
        """A rename goes through ``plan_save`` with the current prices (so it never
        makes a version)."""
        latest = plan_latest_version(plan=obj) if change else None
        if latest is None:
            super().save_model(request, obj, form, change)
            return
        plan_save(
            key=obj.key,
            name=obj.name,
            description=obj.description,
            spec=plan_version_spec(version=latest),
        )

    @admin.action(description="Edit the prices of the selected plan…")
    def edit_prices(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(
                request, "Select exactly one plan to edit its prices.", messages.WARNING
            )
            return None
        return redirect("admin:billing_plan_prices", queryset.get().pk)

    def prices_view(self, request, object_id):
        """The plan's whole configuration as one form; saved with ``plan_save``."""
        if object_id is not None and not str(object_id).isdigit():
            raise Http404("No plan has that id.")  # (<path:object_id>: anything may come)
        plan = get_object_or_404(Plan, pk=object_id) if object_id is not None else None
        allowed = (
            self.has_change_permission(request, plan) if plan else self.has_add_permission(request)
        )
        if not allowed:
            raise PermissionDenied
        latest = plan_latest_version(plan=plan) if plan else None
        initial = {"cadence": "monthly", "minimum_commitment": 0}
        if plan is not None:
            initial.update(name=plan.name, description=plan.description)
        if latest is not None:
            initial.update(
                currency=latest.currency,
                cadence=latest.cadence,
                minimum_commitment=latest.minimum_commitment.amount.normalize(),
            )
        data = request.POST if request.method == "POST" else None
        form = PlanSpecForm(data, initial=initial, new=plan is None)
        formset = RateCardFormSet(data, initial=rate_card_initial(latest), prefix="cards")
        if data is not None and form.is_valid() and formset.is_valid():
            spec, card_forms = plan_spec_build(
                form=form,
                formset=formset,
                entitlements=tuple(latest.entitlements) if latest else (),
            )
            try:
                saved, version, outcome = plan_save(
                    key=plan.key if plan else form.cleaned_data["key"],
                    name=form.cleaned_data["name"],
                    description=form.cleaned_data["description"],
                    spec=spec,
                )
            except ValidationError as exc:
                plan_spec_errors(exc=exc, form=form, card_forms=card_forms)
            else:
                text = OUTCOMES[outcome].format(v=version.version)
                self.message_user(request, f"{saved.key}: {text}.", messages.SUCCESS)
                return redirect("admin:billing_plan_change", saved.pk)
        subscriptions = latest.subscriptions.count() if latest else 0
        context = {
            **self.admin_site.each_context(request),
            "title": f"Edit prices of {plan.key}" if plan else "Add plan",
            "opts": self.model._meta,
            "plan": plan,
            "latest": latest,
            "subscriptions": subscriptions,
            "form": form,
            "formset": formset,
            "entitlements": json.dumps(latest.entitlements, indent=1)
            if latest and latest.entitlements
            else "",
            "media": self.media + form.media + formset.media,
        }
        return render(request, "admin/billing/plan_prices.html", context)


class RateCardInline(admin.TabularInline):
    model = RateCard
    fields = ["position", "key", "name", "feature", "price_text"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["position", "pk"]
    verbose_name_plural = "rate cards (change them with the plan's “Edit prices”)"

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("feature", "plan_version")

    @admin.display(description="price")
    def price_text(self, obj: RateCard):
        """The price in words, as the customer overview shows it, over the stored form
        that "Edit prices" takes."""
        names = (
            unit_nouns(obj.feature.name or obj.feature.key) if obj.feature else ("unit", "units")
        )
        price = price_describe(
            obj.price, currency=obj.plan_version.currency, unit=names[0], units=names[1]
        )
        words = render_to_string(
            "admin/billing/price.html",
            {"price": price, "units_label": names[1] if obj.feature else ""},
        )
        return format_html(
            '{}<div class="help"><code>{}</code></div>', words, json.dumps(obj.price)
        )


class CustomContractFilter(admin.SimpleListFilter):
    title = "kind"
    parameter_name = "kind"

    def lookups(self, request, model_admin):
        return [("public", "Public versions"), ("custom", "Custom contracts")]

    def queryset(self, request, queryset):
        if self.value() == "public":
            return queryset.filter(customer__isnull=True)
        if self.value() == "custom":
            return queryset.filter(customer__isnull=False)
        return queryset


@admin.register(PlanVersion)
class PlanVersionAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "plan_link",
        "version",
        "currency",
        "cadence",
        "minimum_commitment",
        "customer",
        "subscribers",
        "created_at",
    ]
    list_filter = [CustomContractFilter, "currency", "cadence"]
    list_select_related = ["plan", "customer"]
    search_fields = ["plan__key", "plan__name", "customer__key"]
    fields = [
        "plan_link",
        "version",
        "currency",
        "cadence",
        "minimum_commitment",
        "customer",
        "derived_from",
        "subscribers",
        "tax_rates",
        "entitlements_text",
        "created_at",
    ]
    readonly_fields = [f for f in fields if f != "tax_rates"]
    filter_horizontal = ["tax_rates"]
    inlines = [RateCardInline]
    change_form_template = "admin/billing/planversion/change_form.html"

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("plan", "customer", "derived_from__plan")
            .annotate(subscriber_count=active_subscribers(timezone.now()))
        )

    def has_add_permission(self, request) -> bool:
        return False  # versions come from the plan's "Edit prices"

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # subscriptions and invoices point at versions

    @admin.display(description="plan", ordering="plan__key")
    def plan_link(self, obj: PlanVersion):
        return _link("admin:billing_plan_change", obj.plan_id, obj.plan.key)

    @admin.display(description="subscribers", ordering="subscriber_count")
    def subscribers(self, obj: PlanVersion) -> int:
        return obj.subscriber_count

    @admin.display(description="entitlement templates")
    def entitlements_text(self, obj: PlanVersion):
        return (
            format_html("<pre>{}</pre>", json.dumps(obj.entitlements, indent=1))
            if obj.entitlements
            else "—"
        )


@admin.register(TaxRate)
class TaxRateAdmin(admin.ModelAdmin):
    list_display = ["key", "name", "percentage", "inclusive", "plan_versions", "customers"]
    list_filter = ["inclusive"]
    search_fields = ["key", "name"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                version_count=Count("plan_versions", distinct=True),
                customer_count=Count("customers", distinct=True),
            )
        )

    @admin.display(description="plan versions", ordering="version_count")
    def plan_versions(self, obj: TaxRate) -> int:
        return obj.version_count

    @admin.display(description="customers", ordering="customer_count")
    def customers(self, obj: TaxRate) -> int:
        return obj.customer_count


@admin.register(BillingProfile)
class BillingProfileAdmin(admin.ModelAdmin):
    list_display = ["customer", "taxes", "tax_exempt", "grace_period_hours", "net_terms_days"]
    list_filter = ["tax_exempt"]
    list_select_related = ["customer"]
    search_fields = ["customer__key", "customer__name"]
    autocomplete_fields = ["customer"]
    filter_horizontal = ["tax_rates"]
    fieldsets = [
        (None, {"fields": ["customer"]}),
        (
            "Tax",
            {
                "fields": ["tax_rates", "tax_exempt", "tax_exempt_reason"],
                "description": "The customer's own tax rates replace its plan's; exempt customers pay none.",
            },
        ),
        ("Issue and payment", {"fields": ["grace_period_hours", "net_terms_days"]}),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("tax_rates")

    @admin.display(description="tax rates")
    def taxes(self, obj: BillingProfile) -> str:
        return ", ".join(rate.key for rate in obj.tax_rates.all()) or "plan's"


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=500, assume_scheme="https")

    class Meta:
        model = WebhookEndpoint
        fields = ["key", "url", "secret", "events", "enabled"]

    def clean_events(self):
        events = self.cleaned_data["events"]
        if not isinstance(events, list) or not all(isinstance(e, str) and e for e in events):
            raise ValidationError(
                'A list of event types, e.g. ["invoice.issued", "entitlement.threshold"].'
            )
        return events


def mask_secret(secret: str) -> str:
    """``whsec_abc…wxyz`` → ``whsec_••••wxyz``: enough to tell secrets apart."""
    if not secret:
        return "—"
    prefix = "whsec_" if secret.startswith("whsec_") else ""
    return f"{prefix}••••{secret[-4:]}" if len(secret) > len(prefix) + 8 else f"{prefix}••••"


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ["key", "url", "masked_secret", "event_types", "enabled"]
    list_filter = ["enabled"]
    search_fields = ["key", "url"]

    @admin.display(description="secret")
    def masked_secret(self, obj: WebhookEndpoint) -> str:
        return mask_secret(obj.secret)

    @admin.display(description="events")
    def event_types(self, obj: WebhookEndpoint) -> str:
        return ", ".join(obj.events) if isinstance(obj.events, list) else str(obj.events)
