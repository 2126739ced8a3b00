"""Customers' document access in the admin: revoke a customer's invoice links.

A hosted-invoice link (and its PDF) is a signed token a customer may forward or leak;
revoking is the operator's answer (``billing.documents.links.customer_links_revoke``): every
link made up to now, pending portal sign-in links and portal sessions stop working, and
the customer gets new links from the next email or the portal. It is reached from the
customer's page and from an issued invoice's page (both by URL name), confirms first,
needs ``billing.change_customeraccess`` (the billing admin role) and is recorded in the
customer's audit history. Registers itself on import.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from billing.documents.links import customer_links_revoke
from billing.models import CustomerAccess
from customers.models import Customer
from customers.selectors import customer_billing_account


@admin.register(CustomerAccess)
class CustomerAccessAdmin(admin.ModelAdmin):
    """Which customers' links were revoked, and when (read-only: revoking is a button)."""

    list_display = ["customer", "links_valid_after", "updated_at"]
    list_select_related = ["customer"]
    search_fields = ["customer__key", "customer__name"]
    fields = readonly_fields = ["customer_link", "links_valid_after", "updated_at"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_revoke_permission(self, request) -> bool:
        return request.user.has_perm("billing.change_customeraccess")

    @admin.display(description="customer")
    def customer_link(self, access: CustomerAccess) -> str:
        url = reverse("admin:customers_customer_change", args=[access.customer_id])
        return format_html('<a href="{}">{}</a>', url, access.customer)

    def get_urls(self):
        return [
            path(
                "revoke/<int:customer_pk>/",
                self.admin_site.admin_view(self.revoke_view),
                name="billing_customer_links_revoke",
            ),
            *super().get_urls(),
        ]

    def revoke_view(self, request, customer_pk: int):
        if not self.has_revoke_permission(request):
            raise PermissionDenied
        customer = get_object_or_404(Customer, pk=customer_pk)
        back = request.GET.get("next") or request.POST.get("next") or ""
        if not back.startswith("/") or back.startswith("//"):
            back = reverse("admin:customers_customer_change", args=[customer.pk])
        if request.method == "POST":
            now = timezone.now()
            customer_links_revoke(
                customer=customer,
                now=now,
                reason=f"invoice links revoked by {request.user.get_username()}"[:100],
            )
            self.message_user(
                request,
                f"Every invoice link, PDF link and portal session of {customer} made up to "
                f"{now:%Y-%m-%d %H:%M} UTC no longer works.",
                messages.SUCCESS,
            )
            return redirect(back)
        account = customer_billing_account(customer=customer)
        access = CustomerAccess.objects.filter(customer=customer).first()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Revoke the invoice links of {customer}",
            "customer": customer,
            "account": account if account.pk != customer.pk else None,
            "account_url": reverse("admin:billing_customer_links_revoke", args=[account.pk]),
            "revoked_at": access.links_valid_after if access else None,
            "back": back,
        }
        return TemplateResponse(request, "admin/billing/customeraccess/revoke.html", context)
