"""Kong consumers imported from the gateway's Admin API: which are linked to a customer
now, a link to map the others, and the import form."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef, Q
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from customers.models import ConsumerMapping, Customer
from customers.selectors import consumers_resolve
from metering.admin.events import mapping_add_url
from metering.gateways.consumers import (
    DEFAULT_TOKEN_HEADER,
    KongAdminError,
    kong_admin_url_clean,
    kong_consumers_import,
)
from metering.models import KongConsumer

# At most this many keys are named in an import's messages; the counts say the rest.
_NAMED = 20


class KongConsumersImportForm(forms.Form):
    admin_url = forms.CharField(
        label="Kong Admin API URL",
        max_length=500,
        help_text="Its base URL, e.g. http://kong-admin:8001; every page of /consumers is read.",
    )
    token_header = forms.CharField(
        label="Token header", max_length=100, initial=DEFAULT_TOKEN_HEADER
    )
    token = forms.CharField(
        label="Admin token",
        required=False,
        widget=forms.PasswordInput,
        help_text="Sent in the header above; leave empty for an Admin API without RBAC. "
        "Not stored.",
    )

    def clean_admin_url(self):
        try:
            return kong_admin_url_clean(admin_url=self.cleaned_data["admin_url"])
        except KongAdminError as exc:
            raise forms.ValidationError(str(exc)) from exc


def _mapped_now():
    now = timezone.now()
    return Exists(
        ConsumerMapping.objects.filter(consumer_key=OuterRef("key"), valid_from__lte=now).filter(
            Q(valid_to__isnull=True) | Q(valid_to__gt=now)
        )
    )


class LinkedFilter(admin.SimpleListFilter):
    title = "linked to a customer"
    parameter_name = "linked"

    def lookups(self, request, model_admin):
        return [("yes", "Linked now"), ("no", "Not linked")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(_mapped_now())
        if self.value() == "no":
            return queryset.exclude(_mapped_now())
        return queryset


@admin.register(KongConsumer)
class KongConsumerAdmin(admin.ModelAdmin):
    list_display = ["key", "linked", "username", "custom_id", "kong_id", "admin_url", "updated_at"]
    list_filter = [LinkedFilter, "admin_url"]
    search_fields = ["key", "username", "custom_id", "kong_id"]
    readonly_fields = [
        "key",
        "kong_id",
        "username",
        "custom_id",
        "tags",
        "kong_created_at",
        "admin_url",
        "imported_at",
        "updated_at",
    ]
    change_list_template = "admin/metering/kongconsumer/change_list.html"

    def has_add_permission(self, request) -> bool:
        return False  # consumers come from the gateway: see the import

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def get_changelist_instance(self, request):
        cl = super().get_changelist_instance(request)
        now = timezone.now()
        customer_ids = consumers_resolve(pairs=[(c.key, now) for c in cl.result_list])
        customers = Customer.objects.only("key", "name").in_bulk({i for i in customer_ids if i})
        for consumer, customer_id in zip(cl.result_list, customer_ids, strict=True):
            consumer.linked_customer = customers.get(customer_id)
        return cl

    @admin.display(description="customer now")
    def linked(self, obj: KongConsumer):
        customer = getattr(obj, "linked_customer", None)
        if customer is None:
            return format_html(
                'not linked · <a class="addlink" href="{}">Map to a customer</a>',
                mapping_add_url(obj.key),
            )
        return format_html(
            'linked to <a href="{}">{}</a>',
            reverse("admin:customers_customer_change", args=[customer.pk]),
            customer.key,
        )

    def get_urls(self):
        return [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="metering_kongconsumer_import",
            ),
            *super().get_urls(),
        ]

    def import_view(self, request):
        """Asks for the Admin API's URL and token, then imports on the POST."""
        if not request.user.has_perm("metering.add_kongconsumer"):
            raise PermissionDenied
        form = KongConsumersImportForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                result = kong_consumers_import(
                    admin_url=form.cleaned_data["admin_url"],
                    token=form.cleaned_data["token"],
                    token_header=form.cleaned_data["token_header"],
                    now=timezone.now(),
                )
            except KongAdminError as exc:
                form.add_error(None, f"Nothing imported: {exc}")
            else:
                self.message_user(request, f"Kong consumers: {result.summary()}.", messages.SUCCESS)
                for label, keys in (("Created", result.created), ("Updated", result.updated)):
                    if keys:
                        named = ", ".join(keys[:_NAMED]) + (" …" if len(keys) > _NAMED else "")
                        self.message_user(request, f"{label}: {named}", messages.INFO)
                for skip in result.skipped[:_NAMED]:
                    self.message_user(
                        request,
                        f"Skipped Kong consumer {skip.kong_id or '(no id)'}: {skip.reason}",
                        messages.WARNING,
                    )
                return redirect(f"{reverse('admin:metering_kongconsumer_changelist')}?linked=no")
        context = {
            **self.admin_site.each_context(request),
            "title": "Import consumers from Kong",
            "form": form,
            "opts": self.model._meta,
        }
        return render(request, "admin/metering/kongconsumer/import.html", context)
