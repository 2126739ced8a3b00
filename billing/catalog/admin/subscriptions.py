"""Subscriptions in the admin, and the upcoming invoice of any customer.

A subscription is never edited in place: it is created, moved to another plan version or
cancelled through billing's services, each from its own form, so periods, anchors and
the no-overlap rule hold. The upcoming invoice page is linked from the customer page
(``templates/admin/customers/customer/change_form.html``) by its URL name
``admin:billing_upcoming_invoice`` with the customer's key.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from billing.catalog.admin.forms import (
    CancelForm,
    ChangePlanForm,
    MigrateForm,
    SubscribeForm,
    service_errors_to_form,
)
from billing.catalog.periods import period_containing
from billing.catalog.plan_migration import FAILED, subscriptions_migrate
from billing.catalog.services import (
    subscription_cancel,
    subscription_change_plan,
    subscription_create,
)
from billing.catalog.upcoming import NoSubscription, upcoming_invoice
from billing.display import period_html
from billing.models import LineKind, Subscription
from core.money import format_money, format_price, format_quantity
from customers.models import Customer


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("active", "Active now"), ("scheduled", "Starts later"), ("ended", "Ended")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "active":
            return queryset.filter(start__lte=now).filter(Q(end__isnull=True) | Q(end__gt=now))
        if self.value() == "scheduled":
            return queryset.filter(start__gt=now)
        if self.value() == "ended":
            return queryset.filter(end__lte=now)
        return queryset


class ContractFilter(admin.SimpleListFilter):
    title = "contract"
    parameter_name = "contract"

    def lookups(self, request, model_admin):
        return [("public", "Public plan versions"), ("custom", "Custom contracts")]

    def queryset(self, request, queryset):
        if self.value() == "public":
            return queryset.filter(plan_version__customer__isnull=True)
        if self.value() == "custom":
            return queryset.filter(plan_version__customer__isnull=False)
        return queryset


def _status(sub: Subscription, now) -> str:
    if now < sub.start:
        return "scheduled"
    return "ended" if sub.end is not None and sub.end <= now else "active"


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = [
        "label",
        "customer_link",
        "version_link",
        "start",
        "end",
        "current_period",
        "status",
    ]
    list_display_links = ["label"]
    list_filter = [StatusFilter, ContractFilter, "plan_version__plan"]
    list_select_related = ["customer", "plan_version__plan", "plan_version__customer"]
    search_fields = ["customer__key", "customer__name", "plan_version__plan__key"]
    date_hierarchy = "start"
    autocomplete_fields = ["customer"]
    fields = [
        "customer_link",
        "version_link",
        "start",
        "end",
        "anchor",
        "current_period",
        "status",
        "created_at",
    ]
    readonly_fields = fields
    actions = ["change_plan", "migrate", "cancel"]
    change_form_template = "admin/billing/subscription/change_form.html"

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # cancel instead: periods and invoices refer to subscriptions

    @admin.display(description="subscription", ordering="pk")
    def label(self, obj: Subscription) -> str:
        return f"#{obj.pk}"

    @admin.display(description="customer", ordering="customer__key")
    def customer_link(self, obj: Subscription):
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:customers_customer_change", args=[obj.customer_id]),
            obj.customer.key,
        )

    @admin.display(description="plan version", ordering="plan_version__plan__key")
    def version_link(self, obj: Subscription):
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:billing_planversion_change", args=[obj.plan_version_id]),
            obj.plan_version,
        )

    @admin.display(description="current period")
    def current_period(self, obj: Subscription) -> str:
        now = timezone.now()
        if obj.pk is None or _status(obj, now) != "active":
            return "—"
        period = period_containing(
            anchor=obj.anchor,
            cadence=obj.plan_version.cadence,
            timezone=obj.customer.timezone,
            instant=now,
        )
        return period_html(period, obj.customer.timezone)

    @admin.display(description="status")
    def status(self, obj: Subscription) -> str:
        return _status(obj, timezone.now()) if obj.pk else "—"

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "<int:pk>/change-plan/",
                view(self.change_plan_view),
                name="billing_subscription_change_plan",
            ),
            path("cancel/", view(self.cancel_view), name="billing_subscription_cancel"),
            path("migrate/", view(self.migrate_view), name="billing_subscription_migrate"),
            path("upcoming/<str:key>/", view(self.upcoming_view), name="billing_upcoming_invoice"),
            *super().get_urls(),
        ]

    # -- actions ------------------------------------------------------------------

    @admin.action(description="Change the plan of the selected subscription…")
    def change_plan(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(
                request, "Select exactly one subscription to change its plan.", messages.WARNING
            )
            return None
        return redirect("admin:billing_subscription_change_plan", queryset.get().pk)

    @admin.action(description="Cancel the selected subscriptions…")
    def cancel(self, request, queryset):
        ids = ",".join(str(pk) for pk in queryset.values_list("pk", flat=True))
        return redirect(f"{reverse('admin:billing_subscription_cancel')}?ids={ids}")

    @admin.action(description="Migrate to another plan version…")
    def migrate(self, request, queryset):
        ids = ",".join(str(pk) for pk in queryset.values_list("pk", flat=True))
        return redirect(f"{reverse('admin:billing_subscription_migrate')}?ids={ids}")

    # -- forms --------------------------------------------------------------------

    def _render(self, request, *, title: str, form, intro: str, submit: str, subscriptions=()):
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.model._meta,
            "form": form,
            "intro": intro,
            "submit": submit,
            "subscriptions": subscriptions,
            "media": self.media + form.media,
        }
        return render(request, "admin/billing/subscription_form.html", context)

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = SubscribeForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                sub = subscription_create(**form.cleaned_data)
            except ValidationError as exc:
                service_errors_to_form(form, exc)
            else:
                self.message_user(request, f"Subscribed: {sub}.", messages.SUCCESS)
                return redirect("admin:billing_subscription_change", sub.pk)
        return self._render(
            request,
            title="Subscribe a billing account",
            form=form,
            intro="Billing periods are anchored on the start, in the customer's timezone.",
            submit="Subscribe",
        )

    def change_plan_view(self, request, pk: int):
        sub = get_object_or_404(
            Subscription.objects.select_related("customer", "plan_version__plan"), pk=pk
        )
        if not self.has_change_permission(request, sub):
            raise PermissionDenied
        initial = {"at": timezone.now().replace(microsecond=0), "timing": "next_period"}
        form = ChangePlanForm(request.POST or None, initial=initial, subscription=sub)
        if request.method == "POST" and form.is_valid():
            try:
                new = subscription_change_plan(subscription=sub, **form.cleaned_data)
            except ValidationError as exc:
                service_errors_to_form(form, exc)
            else:
                self.message_user(
                    request,
                    f"Moved: {sub.customer.key} is on {new.plan_version} from {new.start:%Y-%m-%d %H:%M} UTC.",
                    messages.SUCCESS,
                )
                return redirect("admin:billing_subscription_change", new.pk)
        return self._render(
            request,
            title=f"Change the plan of {sub.customer.key}",
            form=form,
            intro=f"Now on {sub.plan_version}. Immediately: flat fees are prorated by the second and usage "
            "is priced on each side by its own plan. Periods keep their anchor either way.",
            submit="Change plan",
            subscriptions=[sub],
        )

    def cancel_view(self, request):
        ids = [int(i) for i in request.GET.get("ids", "").split(",") if i.isdigit()]
        subs = list(
            Subscription.objects.select_related("customer", "plan_version__plan").filter(pk__in=ids)
        )
        if not self.has_change_permission(request):
            raise PermissionDenied
        form = CancelForm(
            request.POST or None,
            initial={"at": timezone.now().replace(microsecond=0), "timing": "period_end"},
        )
        if request.method == "POST" and form.is_valid() and subs:
            for sub in subs:
                try:
                    ended = subscription_cancel(subscription=sub, **form.cleaned_data)
                except ValidationError as exc:
                    self.message_user(
                        request, f"{sub}: not cancelled: {' '.join(exc.messages)}", messages.ERROR
                    )
                else:
                    self.message_user(
                        request,
                        f"{sub.customer.key}: ends {ended.end:%Y-%m-%d %H:%M} UTC.",
                        messages.SUCCESS,
                    )
            return redirect("admin:billing_subscription_changelist")
        return self._render(
            request,
            title="Cancel subscriptions",
            form=form,
            intro="Each subscription ends at the chosen instant, or at the end of its period holding it."
            if subs
            else "No subscriptions selected.",
            submit="Cancel subscriptions",
            subscriptions=subs,
        )

    def migrate_view(self, request):
        """Choose a version and when; Preview (a dry run: each next invoice now and after)
        or Migrate (each subscription in its own transaction, reported per row)."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        ids = [int(i) for i in request.GET.get("ids", "").split(",") if i.isdigit()]
        subs = list(
            Subscription.objects.select_related("customer", "plan_version__plan")
            .filter(pk__in=ids)
            .order_by("customer__key", "start")
        )
        form = MigrateForm(request.POST or None, initial={"timing": "next_period"})
        preview = None
        if request.method == "POST" and form.is_valid() and subs:
            data = form.cleaned_data
            dry_run = "migrate" not in request.POST
            report = subscriptions_migrate(
                subscriptions=subs,
                to_version=data["to_version"],
                at=data["at"] if data["timing"] == "immediately" else None,
                at_next_period=data["timing"] == "next_period",
                dry_run=dry_run,
                now=timezone.now(),
            )
            if dry_run:
                preview = migration_rows(report)
            else:
                self._migration_messages(request, report)
                return redirect("admin:billing_subscription_changelist")
        context = {
            **self.admin_site.each_context(request),
            "title": "Migrate subscriptions to another plan version",
            "opts": self.model._meta,
            "form": form,
            "subscriptions": subs,
            "preview": preview,
            "media": self.media + form.media,
        }
        return render(request, "admin/billing/subscription_migrate.html", context)

    def _migration_messages(self, request, report) -> None:
        level = messages.WARNING if report.count(FAILED) else messages.SUCCESS
        self.message_user(request, report.summary, level)
        for row in report.rows:
            if row.status == FAILED:
                self.message_user(
                    request, f"{row.customer_key}: not moved: {row.reason}", messages.ERROR
                )

    # -- upcoming invoice ---------------------------------------------------------

    def upcoming_view(self, request, key: str):
        if not self.has_view_permission(request):
            raise PermissionDenied
        customer = get_object_or_404(Customer, key=key)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Upcoming invoice of {customer.key}",
            "opts": self.model._meta,
            "customer": customer,
        }
        try:
            upcoming = upcoming_invoice(customer=customer, now=timezone.now())
        except NoSubscription as exc:
            context.update(problem=str(exc), account=exc.account)
        else:
            context.update(upcoming_context(upcoming))
        return render(request, "admin/billing/upcoming_invoice.html", context)


def migration_rows(report) -> list[dict]:
    """A migration report as display rows: money at its currency's precision."""
    labels = {"moved": "moved", "would_move": "would move", FAILED: "cannot move"}
    rows = []
    for row in report.rows:
        money = {
            name: format_money(value, row.currency, code=True) if value is not None else "—"
            for name, value in (("current", row.current_total), ("new", row.new_total))
        }
        change = (
            format_money(row.new_total - row.current_total, row.currency, code=True)
            if row.new_total is not None and row.current_total is not None
            else ""
        )
        rows.append(
            {
                "customer": row.customer_key,
                "from_version": row.from_version,
                "effective": row.effective,
                "period": period_html(row.period, row.timezone) if row.period else "—",
                "status": labels[row.status],
                "reason": row.reason,
                "change": change,
                **money,
            }
        )
    return rows


def _quantity(text) -> str:
    try:
        return format_quantity(text)
    except (InvalidOperation, TypeError, ValueError):
        return str(text)


def _units(start: str, end: str) -> str:
    """A slice ``(start, end]``: whole units ``start + 1`` to ``end``; "no usage" for the
    empty slice that charges a first tier's flat fee at zero usage."""
    low = Decimal(start)
    if Decimal(end) == low:
        return "no usage"
    first = _quantity(low + 1) if low == low.to_integral_value() else f"over {_quantity(low)}"
    return f"{first} – {_quantity(end)}"


def _breakdown_row(step: dict, currency: str) -> dict:
    """One tier (or package) slice: units ``from + 1`` to ``to``; its amounts at the
    currency's minor unit, as the invoice will show them (the API has them exactly)."""
    tier = step.get("tier")
    packages = step.get("packages")
    flat = Decimal(step.get("flat_price") or 0)
    return {
        "tier": "—" if tier is None else tier + 1,
        "units": _units(step["from"], step["to"]),
        "quantity": _quantity(step["quantity"]),
        "unit_price": format_price(step["unit_price"], currency, code=True)
        + (f" per {_quantity(step['package_size'])}" if packages is not None else ""),
        "flat_price": format_money(flat, currency, code=True) if flat else "",
        "amount": format_money(step["amount"], currency, code=True),
    }


def upcoming_context(upcoming) -> dict:
    """The upcoming invoice as display rows: lines grouped by the customer they belong
    to, money at its currency's precision, unit prices exact, quantities with thousands
    separators, service periods in the billing account's time zone."""
    currency = upcoming.rated.currency
    zone_name = upcoming.account.timezone
    kinds = dict(LineKind.choices)
    groups = []
    for customer_key, lines in upcoming.lines_by_customer:
        rows = [
            {
                "kind": kinds.get(line.kind, line.kind),
                "description": line.description,
                "feature": upcoming.feature_keys.get(line.feature_id, ""),
                "period": period_html(line, zone_name),
                "quantity": format_quantity(line.quantity),
                "unit_price": format_price(line.unit_price, currency, code=True),
                "amount": format_money(line.amount, currency, code=True),
                "shared": line.group_quantity is not None and line.group_quantity != line.quantity,
                "group_quantity": format_quantity(line.group_quantity),
                "group_amount": format_money(line.group_amount, currency, code=True),
                "breakdown": [_breakdown_row(step, currency) for step in line.breakdown],
            }
            for line in lines
        ]
        subtotal = sum((line.amount for line in lines), 0)
        groups.append(
            {
                "customer": customer_key,
                "rows": rows,
                "subtotal": format_money(subtotal, currency, code=True),
            }
        )
    rated = upcoming.rated
    return {
        "upcoming": upcoming,
        "account": upcoming.account,
        "currency": currency,
        "groups": groups,
        "subtotal": format_money(rated.subtotal, currency, code=True),
        "taxes": [
            {
                "name": t.name,
                "percentage": format_quantity(t.percentage),
                "inclusive": t.inclusive,
                "amount": format_money(t.amount, currency, code=True),
            }
            for t in rated.taxes
        ],
        "total": format_money(rated.total, currency, code=True),
    }
