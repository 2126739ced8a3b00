"""The rollup's problems in the admin: meters whose rollup fails (``RollupFailure``) and
events that meters refused (``RefusedEvent``).

Failures are written by the rollup only and are read-only here (the run that succeeds
deletes them). Refused events can be acknowledged, which takes them off the dashboard
and changes nothing else (they stay out of the meter's buckets); and an operator may
refuse an event the meter has not rolled up yet ("Add refused event"): the way out for
a meter halted with no single event to blame.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from metering import services
from metering.models import RefusedEvent, RollupFailure


def event_url(pk: int) -> str:
    """The event explorer's page of the event with row id ``pk``."""
    return reverse("admin:metering_event_change", args=[pk])


def event_links(pks) -> str:
    return format_html_join(", ", '<a href="{}">{}</a>', ((event_url(pk), pk) for pk in pks))


def refused_events_url(*, meter_id: int) -> str:
    query = urlencode({"meter__id__exact": meter_id, "acknowledged": "no"})
    return f"{reverse('admin:metering_refusedevent_changelist')}?{query}"


def _meter_link(meter_id: int, key: str):
    return format_html(
        '<a href="{}">{}</a>', reverse("admin:metering_meter_change", args=[meter_id]), key
    )


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields] + list(self.readonly_fields)


@admin.register(RollupFailure)
class RollupFailureAdmin(_ReadOnly):
    list_display = [
        "meter_link",
        "stage",
        "consumer",
        "error",
        "events",
        "first_failed_at",
        "last_failed_at",
        "attempts",
    ]
    list_filter = ["stage"]
    list_select_related = ["meter"]
    readonly_fields = ["events"]
    actions = None

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # the run that succeeds deletes it

    @admin.display(description="meter", ordering="meter__key")
    def meter_link(self, obj: RollupFailure):
        return _meter_link(obj.meter_id, obj.meter.key)

    @admin.display(description="consumer key")
    def consumer(self, obj: RollupFailure) -> str:
        return obj.consumer_key or "—"

    @admin.display(description="events found to cause it")
    def events(self, obj: RollupFailure):
        return event_links(obj.event_ids) if obj.event_ids else "—"


class AcknowledgedFilter(admin.SimpleListFilter):
    title = "acknowledged"
    parameter_name = "acknowledged"

    def lookups(self, request, model_admin):
        return [("no", "Not yet"), ("yes", "Acknowledged")]

    def queryset(self, request, queryset):
        if self.value() in ("no", "yes"):
            return queryset.filter(acknowledged_at__isnull=self.value() == "no")
        return queryset


class RefuseEventForm(forms.ModelForm):
    """An operator refuses one stored event for one meter (``services.event_refuse``)."""

    class Meta:
        model = RefusedEvent
        fields = ["meter", "event_pk", "reason"]
        help_texts = {
            "event_pk": "The event's row id: the number in its event-explorer address.",
            "reason": "Why it must not count (kept with the refusal).",
        }

    def clean(self):
        cleaned = super().clean()
        meter, event_pk = cleaned.get("meter"), cleaned.get("event_pk")
        if meter is not None and event_pk is not None:
            blocker = services.event_refusal_blocker(meter=meter, event_pk=event_pk)
            if blocker:
                self.add_error("event_pk", blocker)
        return cleaned


@admin.register(RefusedEvent)
class RefusedEventAdmin(_ReadOnly):
    list_display = [
        "event_link",
        "meter_link",
        "event_time",
        "subject",
        "source",
        "event_id",
        "reason",
        "refused_at",
        "acknowledged_at",
    ]
    list_filter = [AcknowledgedFilter, "meter"]
    list_select_related = ["meter"]
    search_fields = ["subject", "event_id"]
    readonly_fields = ["event_link"]
    actions = ["acknowledge"]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # a refusal is a record; acknowledging it is the operator's answer

    def has_add_permission(self, request) -> bool:
        return admin.ModelAdmin.has_add_permission(self, request)

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = RefuseEventForm
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return super().get_readonly_fields(request, obj) if obj is not None else []

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["meter", "event_pk", "reason"]
        return super().get_fields(request, obj)

    def save_model(self, request, obj, form, change):
        if change:
            return
        refused = services.event_refuse(
            meter=obj.meter,
            event_pk=obj.event_pk,
            reason=obj.reason,
            actor=request.user.get_username(),
            now=timezone.now(),
        )
        obj.pk = refused.pk

    @admin.display(description="event", ordering="event_pk")
    def event_link(self, obj: RefusedEvent):
        return format_html('<a href="{}">{}</a>', event_url(obj.event_pk), obj.event_pk)

    @admin.display(description="meter", ordering="meter__key")
    def meter_link(self, obj: RefusedEvent):
        return _meter_link(obj.meter_id, obj.meter.key)

    @admin.action(description="Acknowledge (the events stay refused)", permissions=["change"])
    def acknowledge(self, request, queryset):
        done = services.refused_events_acknowledge(
            ids=list(queryset.values_list("pk", flat=True)), now=timezone.now()
        )
        self.message_user(
            request,
            f"Acknowledged {done} refused event{'s' if done != 1 else ''}; "
            f"{queryset.count() - done} already were.",
            messages.SUCCESS,
        )
