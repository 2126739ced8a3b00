"""What billing's read-only admin pages share: a page that cannot be added to, changed or
deleted (ledgers, logs), its action form page, and links to other admin pages."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin import helpers
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

TEMPLATE = "admin/billing/notify/action_form.html"
CHANGE_FORM = "admin/billing/notify/change_form.html"


class ReadOnlyPermissions:
    """Nothing can be added, changed or deleted: a ledger, a log, an issued document."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyInline(ReadOnlyPermissions, admin.TabularInline):
    extra = 0
    max_num = 0
    can_delete = False


class ReadOnlyAdmin(ReadOnlyPermissions, admin.ModelAdmin):
    change_form_template = CHANGE_FORM

    def _page(self, request, *, title: str, back_url: str, **context):
        base = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "back_url": back_url,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, TEMPLATE, {**base, **context})

    def _list_url(self) -> str:
        return reverse(f"admin:billing_{self.model._meta.model_name}_changelist")

    def _change_url(self, pk) -> str:
        return reverse(f"admin:billing_{self.model._meta.model_name}_change", args=[pk])


def admin_link(model_name: str, pk, text) -> str:
    if pk is None:
        return "—"
    return format_html(
        '<a href="{}">{}</a>', reverse(f"admin:{model_name}_change", args=[pk]), text
    )
