"""Admin for the meter catalog: meters (with one-click templates) and features.

Forms check what the services check, so a refused change shows on its field; saving
goes through ``services.meter_save`` / ``services.feature_save``.
"""

from __future__ import annotations

import copy

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, OuterRef, Subquery
from django.forms.models import construct_instance
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from core.money import format_quantity
from metering import services
from metering.admin.rollup import event_links, refused_events_url
from metering.admin.usage import feature_usage_view
from metering.meter_templates import TEMPLATES, template_apply
from metering.models import Feature, Meter, RollupFailure
from metering.selectors import meter_delete_blocker, rollup_problems

LOCKED_HELP = "Fixed: this meter has data. Create a new meter to count differently."


def _add_service_errors(form: forms.ModelForm, exc: ValidationError) -> None:
    """Put a service's ``ValidationError`` on the form's fields (others on the form)."""
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc)
        return
    for field, errors in exc.error_dict.items():
        form.add_error(field if field in form.fields else None, errors)


class MeterForm(forms.ModelForm):
    class Meta:
        model = Meter
        fields = [
            "key",
            "name",
            "description",
            "event_type",
            "aggregation",
            "value_property",
            "group_by",
        ]

    def clean(self):
        cleaned = super().clean()
        candidate = construct_instance(self, copy.copy(self.instance))
        try:
            services.meter_validate(meter=candidate)
        except ValidationError as exc:
            _add_service_errors(self, exc)
        changed = [f for f in services.LOCKED_METER_FIELDS if f in self.changed_data]
        if self.instance.pk and changed:
            stored = Meter.objects.get(pk=self.instance.pk)
            locked = services.meter_locked_fields(meter=stored)
            if locked:
                for field in (f for f in changed if f in locked):
                    self.add_error(
                        field,
                        f"{self.fields[field].label} cannot change once the meter has data "
                        f"(it is {getattr(stored, field) or 'empty'!r}); create a new meter instead.",
                    )
        return cleaned


class FeatureForm(forms.ModelForm):
    class Meta:
        model = Feature
        fields = ["key", "name", "meter", "filters"]

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("meter") is not None:
            candidate = construct_instance(self, copy.copy(self.instance))
            try:
                services.feature_validate(feature=candidate)
            except ValidationError as exc:
                _add_service_errors(self, exc)
        return cleaned


class FeatureInline(admin.TabularInline):
    model = Feature
    fields = ["link", "name", "filters", "usage"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False
    verbose_name_plural = "features on this meter"

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="key")
    def link(self, obj: Feature):
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:metering_feature_change", args=[obj.pk]), obj.key
        )

    @admin.display(description="usage")
    def usage(self, obj: Feature):
        return format_html(
            '<a href="{}">chart</a>', reverse("admin:metering_feature_usage", args=[obj.pk])
        )


@admin.register(Meter)
class MeterAdmin(admin.ModelAdmin):
    form = MeterForm
    list_display = [
        "key",
        "name",
        "event_type",
        "aggregation",
        "value_property",
        "dimensions",
        "feature_count",
        "watermark",
        "last_rollup",
        "events_rolled_up",
    ]
    list_filter = ["aggregation"]
    list_select_related = ["rollup_state"]
    search_fields = ["key", "name", "event_type"]
    readonly_fields = ["rollup", "created_at", "updated_at"]
    inlines = [FeatureInline]
    change_list_template = "admin/metering/meter/change_list.html"
    fieldsets = [
        (None, {"fields": ["key", "name", "description"]}),
        ("What it counts", {"fields": ["event_type", "aggregation", "value_property", "group_by"]}),
        ("Rollup", {"fields": ["rollup"]}),
        ("Record", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    def get_queryset(self, request):
        halted = RollupFailure.objects.filter(
            meter=OuterRef("pk"), stage=RollupFailure.Stage.ROLLUP
        ).values("first_failed_at")
        return (
            super()
            .get_queryset(request)
            .annotate(_feature_count=Count("features"), _halted_since=Subquery(halted[:1]))
        )

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is not None:
            for name in services.meter_locked_fields(meter=obj):
                field = form.base_fields[name]
                field.help_text = f"{LOCKED_HELP} {field.help_text}".strip()
        return form

    def save_model(self, request, obj, form, change):
        services.meter_save(meter=obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        if obj is not None and meter_delete_blocker(meter=obj):
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # deleting a meter is one at a time, checked
        return actions

    @admin.display(description="group by")
    def dimensions(self, obj: Meter) -> str:
        return ", ".join(sorted(obj.group_by or {})) or "—"

    @admin.display(description="features", ordering="_feature_count")
    def feature_count(self, obj: Meter) -> int:
        return obj._feature_count

    def _state(self, obj: Meter):
        try:
            return obj.rollup_state
        except Meter.rollup_state.RelatedObjectDoesNotExist:
            return None

    @admin.display(description="watermark (xid)", ordering="rollup_state__watermark")
    def watermark(self, obj: Meter):
        state = self._state(obj)
        return state.watermark if state else "not rolled up yet"

    @admin.display(description="last rollup", ordering="rollup_state__last_run_at")
    def last_rollup(self, obj: Meter):
        halted_since = getattr(obj, "_halted_since", None)
        if halted_since is not None:
            return format_html(
                '<strong style="color: var(--error-fg, #ba2121)">failing since {}</strong>',
                f"{timezone.localtime(halted_since):%Y-%m-%d %H:%M}",
            )
        state = self._state(obj)
        return state.last_run_at if state and state.last_run_at else "—"

    @admin.display(description="events rolled up", ordering="rollup_state__events_rolled_up")
    def events_rolled_up(self, obj: Meter):
        state = self._state(obj)
        return format_quantity(state.events_rolled_up) if state else 0

    @admin.display(description="rollup")
    def rollup(self, obj: Meter):
        state = self._state(obj) if obj.pk else None
        problems = rollup_problems(meter_ids=[obj.pk]) if obj.pk else []
        text = (
            format_html(
                "{} events rolled up; every event of a transaction below xid {} is in the "
                "buckets; last run {}.",
                format_quantity(state.events_rolled_up),
                state.watermark,
                state.last_run_at or "never",
            )
            if state is not None
            else "Not rolled up yet."
        )
        return format_html(
            "{}{}", text, format_html_join("", "{}", ((_problem_html(p),) for p in problems))
        )

    def get_urls(self):
        return [
            path(
                "templates/",
                self.admin_site.admin_view(self.templates_view),
                name="metering_meter_templates",
            ),
            *super().get_urls(),
        ]

    def templates_view(self, request):
        """Meters and features from a template, one button each (``template_apply``)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            if not self.has_add_permission(request):
                raise PermissionDenied
            name = request.POST.get("template", "")
            try:
                created = template_apply(name=name)
            except ValidationError as exc:
                self.message_user(
                    request, f"Nothing created: {' '.join(exc.messages)}", messages.ERROR
                )
            except ValueError as exc:  # UnknownTemplate
                self.message_user(request, str(exc), messages.ERROR)
            else:
                if created:
                    self.message_user(
                        request,
                        f"Template {name!r}: created {', '.join(created)}.",
                        messages.SUCCESS,
                    )
                else:
                    self.message_user(
                        request,
                        f"Template {name!r}: everything already exists; nothing created.",
                        messages.INFO,
                    )
            return redirect("admin:metering_meter_templates")
        templates = [_template_row(t) for t in _as_list(TEMPLATES)]
        keys = {k for t in templates for k in t["meters"] + t["features"]}
        existing_meters = set(Meter.objects.filter(key__in=keys).values_list("key", flat=True))
        existing_features = set(Feature.objects.filter(key__in=keys).values_list("key", flat=True))
        for t in templates:
            t["meters"] = [(k, k in existing_meters) for k in t["meters"]]
            t["features"] = [(k, k in existing_features) for k in t["features"]]
            t["complete"] = all(e for _, e in t["meters"] + t["features"])
        context = {
            **self.admin_site.each_context(request),
            "title": "Add meters from a template",
            "opts": self.model._meta,
            "templates": templates,
            "can_add": self.has_add_permission(request),
        }
        return render(request, "admin/metering/meter/templates.html", context)


def _problem_html(problem) -> str:
    """A meter's rollup problem (``MeterRollupProblem``) for its change page."""
    parts = []
    if problem.halted_since:
        parts.append(
            format_html(
                '<p class="errornote">The rollup of this meter fails since {} ({} attempts, '
                "the last at {}): {}. Its usage after the watermark is not counted until a "
                "run succeeds.{} Fix the meter if its paths are to blame; if stored events "
                'are, <a href="{}">refuse them</a> (only events not rolled up yet).</p>',
                f"{timezone.localtime(problem.halted_since):%Y-%m-%d %H:%M}",
                problem.attempts,
                f"{timezone.localtime(problem.last_failed_at):%Y-%m-%d %H:%M}",
                problem.error,
                format_html(" Events found to cause it: {}.", event_links(problem.event_ids))
                if problem.event_ids
                else "",
                f"{reverse('admin:metering_refusedevent_add')}?meter={problem.meter_id}",
            )
        )
    if problem.refused:
        parts.append(
            format_html(
                '<p>This meter refused <a href="{}">{} event{}</a> its buckets cannot hold '
                "(not acknowledged yet): {}.</p>",
                refused_events_url(meter_id=problem.meter_id),
                format_quantity(problem.refused),
                "s" if problem.refused != 1 else "",
                event_links(problem.event_ids) if not problem.halted_since else "see the list",
            )
        )
    if problem.reattributions:
        parts.append(
            format_html(
                '<p class="errornote">Re-attributing the usage of {} after a mapping change '
                "fails ({}); each run tries again.</p>",
                ", ".join(problem.reattributions),
                problem.reattribution_error,
            )
        )
    return format_html_join("", "{}", ((p,) for p in parts))


def _as_list(templates) -> list:
    return list(templates.values()) if isinstance(templates, dict) else list(templates)


def _template_row(template) -> dict:
    def get(name: str, default=None):
        if isinstance(template, dict):
            return template.get(name, default)
        return getattr(template, name, default)

    def keys(items) -> list[str]:
        return [i["key"] if isinstance(i, dict) else i.key for i in items or ()]

    return {
        "name": get("name"),
        "title": get("title") or get("name"),
        "description": get("description", ""),
        "meters": keys(get("meters")),
        "features": keys(get("features")),
    }


@admin.register(Feature)
class FeatureAdmin(admin.ModelAdmin):
    form = FeatureForm
    list_display = ["key", "name", "meter_link", "filter_text", "usage"]
    list_select_related = ["meter"]
    list_filter = ["meter"]
    search_fields = ["key", "name", "meter__key"]
    autocomplete_fields = ["meter"]
    readonly_fields = ["usage_link", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["key", "name", "meter", "filters"]}),
        ("Usage", {"fields": ["usage_link"]}),
        ("Record", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    def save_model(self, request, obj, form, change):
        services.feature_save(feature=obj)

    @admin.display(description="meter", ordering="meter__key")
    def meter_link(self, obj: Feature):
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:metering_meter_change", args=[obj.meter_id]),
            obj.meter.key,
        )

    @admin.display(description="filters")
    def filter_text(self, obj: Feature):
        if not obj.filters:
            return "all usage of the meter"
        return format_html_join(
            "; ", "{} in {}", ((k, ", ".join(map(str, v))) for k, v in sorted(obj.filters.items()))
        )

    @admin.display(description="usage")
    def usage(self, obj: Feature):
        return format_html(
            '<a href="{}">chart</a>', reverse("admin:metering_feature_usage", args=[obj.pk])
        )

    @admin.display(description="usage chart")
    def usage_link(self, obj: Feature):
        if obj.pk is None:
            return "Save the feature to see its usage."
        return format_html(
            '<a href="{}">Usage over the last 30 days</a>, per day, for all customers or one.',
            reverse("admin:metering_feature_usage", args=[obj.pk]),
        )

    def get_urls(self):
        return [
            path(
                "<path:object_id>/usage/",
                self.admin_site.admin_view(self.usage_view),
                name="metering_feature_usage",
            ),
            *super().get_urls(),
        ]

    def usage_view(self, request, object_id: str):
        return feature_usage_view(self, request, object_id)
