from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.utils import timezone
from django.utils.html import format_html

from core import services
from core.models import ApiKey, ApiKeyScope


class ApiKeyCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ApiKeyScope.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text="ingest: post usage events (gateways). read: read configuration, usage and invoices. "
        "write: change configuration.",
    )

    class Meta:
        model = ApiKey
        fields = ["name", "scopes"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "scope_list", "status", "last_used_at", "created_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    actions = ["revoke"]
    readonly_fields = ["prefix", "scopes", "created_at", "created_by", "last_used_at", "revoked_at"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name", "scopes"]
        return [
            "name",
            "prefix",
            "scopes",
            "created_at",
            "created_by",
            "last_used_at",
            "revoked_at",
        ]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    @admin.display(description="status", ordering="revoked_at")
    def status(self, obj: ApiKey):
        if obj.revoked_at:
            return format_html(
                '<span style="color:#ba2121">revoked {}</span>', obj.revoked_at.strftime("%Y-%m-%d")
            )
        return "active"

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["name"])
            return
        issued = services.api_key_create(
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"],
            created_by=request.user,
        )
        obj.pk = issued.api_key.pk
        self.message_user(
            request,
            format_html(
                "Copy this secret now; it is not stored and will not be shown again: <code>{}</code>",
                issued.secret,
            ),
            messages.WARNING,
        )

    @admin.action(description="Revoke the selected API keys")
    def revoke(self, request, queryset):
        now = timezone.now()
        for key in queryset:
            services.api_key_revoke(api_key=key, now=now)
        self.message_user(
            request,
            f"Revoked {queryset.count()} key(s); they are refused from now on.",
            messages.SUCCESS,
        )

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoke instead, so the record of who had access stays
