"""Notification rules and the webhook delivery log in the admin. Importing this module
registers them.

Webhook deliveries are a log with every attempt, and a "Redeliver" action and button
(``redeliver``).
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, redirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from billing.admin_base import ReadOnlyAdmin, ReadOnlyInline, admin_link
from billing.models import (
    NotificationEvent,
    NotificationRule,
    WebhookAttempt,
    WebhookDelivery,
)
from billing.notifications.delivery import RESPONSE_KEEP, redeliver
from billing.notifications.thresholds import thresholds_validate


class NotificationRuleForm(forms.ModelForm):
    class Meta:
        model = NotificationRule
        fields = ["key", "kind", "feature", "customer", "thresholds", "endpoints", "enabled"]

    def clean(self):
        data = super().clean()
        kind = data.get("kind")
        if kind and "thresholds" in data:
            try:
                data["thresholds"] = thresholds_validate(kind=kind, thresholds=data["thresholds"])
            except ValidationError as exc:
                self.add_error("thresholds", exc)
        if kind == "spend_threshold" and data.get("feature"):
            self.add_error(
                "feature", "A spend threshold watches the whole invoice; leave the feature empty."
            )
        return data


@admin.register(NotificationRule)
class NotificationRuleAdmin(admin.ModelAdmin):
    form = NotificationRuleForm
    list_display = [
        "key", "kind", "feature", "customer", "thresholds_text", "endpoint_keys", "enabled"
    ]  # fmt: skip
    list_filter = ["kind", "enabled"]
    list_select_related = ["feature", "customer"]
    search_fields = ["key", "customer__key", "feature__key"]
    autocomplete_fields = ["customer", "feature"]
    filter_horizontal = ["endpoints"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("endpoints")

    @admin.display(description="thresholds")
    def thresholds_text(self, rule: NotificationRule) -> str:
        return ", ".join(
            f"{v}%" if k == "percent" else f"{k} {v}" for t in rule.thresholds for k, v in t.items()
        )

    @admin.display(description="endpoints")
    def endpoint_keys(self, rule: NotificationRule) -> str:
        return ", ".join(e.key for e in rule.endpoints.all()) or "subscribers of the event type"


# ---------------------------------------------------------------- webhook deliveries


def _pretty(payload) -> str:
    return format_html("<pre style='white-space:pre-wrap'>{}</pre>", json.dumps(payload, indent=2))


class AttemptInline(ReadOnlyInline):
    model = WebhookAttempt
    fields = ["at", "status", "duration_ms", "error"]
    readonly_fields = fields
    verbose_name_plural = "attempts"


class DeliveryInline(ReadOnlyInline):
    model = WebhookDelivery
    fields = [
        "delivery_link", "state", "attempts", "last_status_code", "next_attempt_at", "delivered_at"
    ]  # fmt: skip
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("endpoint")

    @admin.display(description="endpoint")
    def delivery_link(self, delivery: WebhookDelivery) -> str:
        return admin_link("billing_webhookdelivery", delivery.pk, delivery.endpoint.key)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "event_type", "endpoint", "state", "attempts", "last_status_code", "next_attempt_at",
        "delivered_at", "created_at"
    ]  # fmt: skip
    list_filter = ["state", "event__type", "endpoint"]
    list_select_related = ["event", "endpoint"]
    search_fields = ["event__dedupe_key", "endpoint__key", "endpoint__url"]
    actions = ["redeliver_selected"]
    inlines = [AttemptInline]
    fields = [
        "event_link", "endpoint", "url", "state", "attempts", "next_attempt_at", "last_status_code",
        "last_error", "delivered_at", "response", "payload", "created_at"
    ]  # fmt: skip
    readonly_fields = fields

    @admin.display(description="last response")
    def response(self, delivery: WebhookDelivery) -> str:
        """The status and the start of what the receiver said (escaped; at most
        ``RESPONSE_KEEP`` characters are kept, older rows are cut here too)."""
        if delivery.last_status_code is None and not delivery.response_body:
            return "—"
        excerpt = delivery.response_body[:RESPONSE_KEEP]
        status = f"HTTP {delivery.last_status_code}" if delivery.last_status_code else "no answer"
        if not excerpt:
            return status
        more = "…" if len(delivery.response_body) >= RESPONSE_KEEP else ""
        return format_html("{} · <code>{}</code>{}", status, excerpt, more)

    @admin.display(description="event", ordering="event__type")
    def event_type(self, delivery: WebhookDelivery) -> str:
        return delivery.event.type

    @admin.display(description="event")
    def event_link(self, delivery: WebhookDelivery) -> str:
        return admin_link(
            "billing_notificationevent",
            delivery.event_id,
            f"{delivery.event.type} ({delivery.event_id})",
        )

    @admin.display(description="URL")
    def url(self, delivery: WebhookDelivery) -> str:
        return delivery.endpoint.url

    @admin.display(description="payload")
    def payload(self, delivery: WebhookDelivery) -> str:
        return _pretty(delivery.event.payload)

    def has_redeliver_permission(self, request) -> bool:
        return request.user.has_perm("billing.change_webhookdelivery")

    def get_urls(self):
        return [
            path(
                "<int:pk>/redeliver/",
                self.admin_site.admin_view(self.redeliver_view),
                name="billing_webhookdelivery_redeliver",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        tools = []
        if self.has_redeliver_permission(request):
            tools.append(
                {
                    "label": "Redeliver",
                    "id": "webhook-redeliver",
                    "post": True,
                    "url": reverse("admin:billing_webhookdelivery_redeliver", args=[object_id]),
                }
            )
        return super().change_view(
            request, object_id, form_url, {"notify_tools": tools, **(extra_context or {})}
        )

    def _redeliver(self, request, deliveries) -> None:
        for delivery in deliveries:
            redeliver(delivery=delivery, now=timezone.now())
            self.message_user(request, f"{delivery}: queued for redelivery.", messages.SUCCESS)

    def redeliver_view(self, request, pk):
        if not self.has_redeliver_permission(request):
            raise PermissionDenied
        delivery = get_object_or_404(
            WebhookDelivery.objects.select_related("event", "endpoint"), pk=pk
        )
        if request.method == "POST":
            self._redeliver(request, [delivery])
        return redirect(self._change_url(delivery.pk))

    @admin.action(description="Redeliver selected deliveries", permissions=["redeliver"])
    def redeliver_selected(self, request, queryset):
        self._redeliver(request, queryset.select_related("event", "endpoint"))


@admin.register(NotificationEvent)
class NotificationEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "type", "customer", "dedupe_key", "delivery_summary"]
    list_filter = ["type"]
    list_select_related = ["customer"]
    search_fields = ["dedupe_key", "customer__key"]
    date_hierarchy = "created_at"
    inlines = [DeliveryInline]
    fields = ["id", "type", "customer", "dedupe_key", "created_at", "payload_pretty"]
    readonly_fields = fields

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                sent=Count("deliveries", filter=Q(deliveries__state="delivered")),
                total=Count("deliveries"),
            )
        )

    @admin.display(description="delivered")
    def delivery_summary(self, event: NotificationEvent) -> str:
        return f"{event.sent} of {event.total}"

    @admin.display(description="payload")
    def payload_pretty(self, event: NotificationEvent) -> str:
        return _pretty(event.payload)
