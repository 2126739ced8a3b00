"""The event explorer (read-only, on the partitioned event table) and unattributed usage.

The event table may hold hundreds of millions of rows, so nothing here counts it: the
paginator counts at most ``COUNT_CAP`` rows, search is by exact value (the subject and
type have indexes; a LIKE would scan every partition), and there is no date hierarchy
(it asks for the distinct dates of the whole table); a time filter stands in for it.
"""

from __future__ import annotations

import json
from datetime import timedelta
from functools import cached_property
from urllib.parse import urlencode

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Exists, OuterRef, Q
from django.shortcuts import render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from customers.models import ConsumerMapping, Customer
from customers.selectors import consumer_mapping_at, consumers_resolve
from metering.gateways.selectors import kong_skips
from metering.models import Event, KongConsumer, Meter, RefusedEvent, RollupState
from metering.selectors import event_search, unattributed_usage

COUNT_CAP = 10_000


class CappedCountPaginator(Paginator):
    """Counts at most ``COUNT_CAP + 1`` rows (unordered, so the scan stops there): past
    that the changelist shows "10001 events" and pages up to there; narrow the search
    or filter to see older events."""

    @cached_property
    def count(self) -> int:
        return self.object_list.order_by()[: COUNT_CAP + 1].count()


class RecentFilter(admin.SimpleListFilter):
    """Event time. Until ``metering_event`` has an index on ``time``, ordering the whole
    table by time reads every partition; so a list not narrowed by a search, subject, type
    or event id shows the last ``DEFAULT`` by default (the type and time index answers
    that), and "Any time" is a choice away."""

    title = "event time"
    parameter_name = "recent"
    DEFAULT = "any"
    NARROWING = ("q", "subject", "type", "event_id")
    periods = {
        "1h": ("Last hour", timedelta(hours=1)),
        "24h": ("Last 24 hours", timedelta(days=1)),
        "7d": ("Last 7 days", timedelta(days=7)),
        "30d": ("Last 30 days", timedelta(days=30)),
        "any": ("Any time", None),
    }

    def __init__(self, request, params, model, model_admin):
        super().__init__(request, params, model, model_admin)
        self.narrowed = any(request.GET.get(name) for name in self.NARROWING)

    def lookups(self, request, model_admin):
        return [(k, label) for k, (label, _) in self.periods.items()]

    def value(self):
        chosen = super().value()
        if chosen in self.periods:
            return chosen
        return "any" if self.narrowed else self.DEFAULT

    def choices(self, changelist):
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request, queryset):
        period = self.periods[self.value()][1]
        return queryset.filter(time__gte=timezone.now() - period) if period else queryset


class TypeFilter(admin.SimpleListFilter):
    """The event types the meters count (any other type works as ``?type=...``)."""

    title = "type"
    parameter_name = "type"

    def lookups(self, request, model_admin):
        types = list(Meter.objects.order_by("event_type").values_list("event_type", flat=True))
        if self.value():  # a type no meter counts is still a filter (and is shown as one)
            types.append(self.value())
        return [(t, t) for t in dict.fromkeys(types)]

    def queryset(self, request, queryset):
        return queryset.filter(type=self.value()) if self.value() else queryset


def mapped_at_event_time():
    return Exists(
        ConsumerMapping.objects.filter(
            consumer_key=OuterRef("subject"), valid_from__lte=OuterRef("time")
        ).filter(Q(valid_to__isnull=True) | Q(valid_to__gt=OuterRef("time")))
    )


class AttributionFilter(admin.SimpleListFilter):
    title = "attribution"
    parameter_name = "attributed"

    def lookups(self, request, model_admin):
        return [("yes", "Mapped to a customer"), ("no", "Unattributed")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(mapped_at_event_time())
        if self.value() == "no":
            return queryset.filter(~mapped_at_event_time())
        return queryset


def _customer_link(customer_id: int, key: str):
    return format_html(
        '<a href="{}">{}</a>', reverse("admin:customers_customer_change", args=[customer_id]), key
    )


def mapping_add_url(subject: str) -> str:
    return (
        f"{reverse('admin:customers_consumermapping_add')}?{urlencode({'consumer_key': subject})}"
    )


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["time", "type", "subject_link", "customer", "event_id", "source", "ingested_at"]
    list_filter = [RecentFilter, TypeFilter, AttributionFilter]
    search_fields = ["subject", "event_id", "type"]  # exact matches, see get_search_results
    search_help_text = "An exact subject, event id or type."
    ordering = ["-time"]
    sortable_by = ["time"]
    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # facet counts would count the whole table
    list_per_page = 100
    actions = None
    change_list_template = "admin/metering/event/change_list.html"
    fieldsets = [
        (None, {"fields": ["event_id", "source", "type", "subject", "time"]}),
        ("Data", {"fields": ["pretty_data"]}),
        ("Attribution", {"fields": ["attribution", "meters"]}),
        ("Record", {"fields": ["ingested_at", "xid", "id"]}),
    ]
    readonly_fields = [
        "event_id",
        "source",
        "type",
        "subject",
        "time",
        "pretty_data",
        "attribution",
        "meters",
        "ingested_at",
        "xid",
        "id",
    ]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_search_results(self, request, queryset, search_term):
        # An OR of the three columns would scan every partition (event ids have no index
        # of their own); ask which of them the term is first, each from an index.
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(event_search(term=term)), False

    def get_changelist_instance(self, request):
        cl = super().get_changelist_instance(request)
        # the customers of a page's events: two queries, whatever the page size
        events = list(cl.result_list)
        ids = consumers_resolve(pairs=[(e.subject, e.time) for e in events])
        keys = dict(Customer.objects.filter(pk__in={i for i in ids if i}).values_list("pk", "key"))
        for event, customer_id in zip(events, ids, strict=True):
            event.customer_id = customer_id
            event.customer_key = keys.get(customer_id)
        return cl

    @admin.display(description="subject")
    def subject_link(self, obj: Event):
        url = f"{reverse('admin:metering_event_changelist')}?{urlencode({'subject': obj.subject})}"
        return format_html('<a href="{}" title="Events of this subject">{}</a>', url, obj.subject)

    @admin.display(description="customer at event time")
    def customer(self, obj: Event):
        key = getattr(obj, "customer_key", None)
        if key is None:
            return mark_safe('<span class="help">unattributed</span>')
        return _customer_link(obj.customer_id, key)

    @admin.display(description="data")
    def pretty_data(self, obj: Event):
        if obj.data is None:
            return "(no data)"
        return format_html(
            '<pre class="event-data" style="margin:0;white-space:pre-wrap">{}</pre>',
            json.dumps(obj.data, indent=2, sort_keys=True, ensure_ascii=False),
        )

    @admin.display(description="customer")
    def attribution(self, obj: Event):
        mapping = consumer_mapping_at(consumer_key=obj.subject, at=obj.time)
        if mapping is None:
            return format_html(
                "Unattributed: no consumer mapping covered {} at the event's time. "
                '<a href="{}">Map this consumer key to a customer</a>',
                obj.subject,
                mapping_add_url(obj.subject),
            )
        return format_html(
            '{} ({}), through <a href="{}">the mapping of {}</a> valid from {} {}.',
            _customer_link(mapping.customer_id, mapping.customer.key),
            mapping.customer.name,
            reverse("admin:customers_consumermapping_change", args=[mapping.pk]),
            obj.subject,
            mapping.valid_from.isoformat(),
            f"to {mapping.valid_to.isoformat()}" if mapping.valid_to else "on (open-ended)",
        )

    @admin.display(description="counted by meters")
    def meters(self, obj: Event):
        meters = list(Meter.objects.filter(event_type=obj.type).order_by("key"))
        if not meters:
            return f"No meter counts events of type {obj.type!r}."
        watermarks = dict(
            RollupState.objects.filter(meter__in=meters).values_list("meter_id", "watermark")
        )
        refused = dict(
            RefusedEvent.objects.filter(meter__in=meters, event_pk=obj.pk).values_list(
                "meter_id", "reason"
            )
        )

        def state(meter: Meter) -> str:
            if meter.pk in refused:
                return f"refused: {refused[meter.pk]}; not counted"
            return "rolled up" if obj.xid < watermarks.get(meter.pk, 0) else "not rolled up yet"

        return format_html_join(
            ", ",
            '<a href="{}">{}</a> ({})',
            (
                (reverse("admin:metering_meter_change", args=[m.pk]), m.key, state(m))
                for m in meters
            ),
        )

    def get_urls(self):
        return [
            path(
                "unattributed/",
                self.admin_site.admin_view(self.unattributed_view),
                name="metering_unattributed_usage",
            ),
            *super().get_urls(),
        ]

    UNATTRIBUTED_PERIODS = {
        "1": ("last 24 hours", timedelta(days=1)),
        "7": ("last 7 days", timedelta(days=7)),
        "30": ("last 30 days", timedelta(days=30)),
        "90": ("last 90 days", timedelta(days=90)),
        "all": ("all stored events", None),
    }

    UNATTRIBUTED_PER_PAGE = 200

    def unattributed_view(self, request):
        """Subjects with events that no consumer mapping covered, with a link to map each;
        and the Kong logs the receiver skipped (no subject at all, or unreadable)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        period = request.GET.get("since", "30")
        if period not in self.UNATTRIBUTED_PERIODS:
            period = "30"
        label, delta = self.UNATTRIBUTED_PERIODS[period]
        since = timezone.now() - delta if delta else None
        subjects = unattributed_usage(since=since)
        listed = Paginator(subjects, self.UNATTRIBUTED_PER_PAGE).get_page(request.GET.get("p"))
        ever_mapped = set(
            ConsumerMapping.objects.filter(
                consumer_key__in=[s.subject for s in listed]
            ).values_list("consumer_key", flat=True)
        )
        # Subjects the gateway knows as consumers (imported from Kong's Admin API) vs
        # subjects nobody imported: a typo'd header value, or a consumer not yet imported.
        known = KongConsumer.objects.in_bulk([s.subject for s in listed], field_name="key")
        events_url = reverse("admin:metering_event_changelist")
        mappings_url = reverse("admin:customers_consumermapping_changelist")
        rows = [
            {
                "item": s,
                "events_url": f"{events_url}?{urlencode({'subject': s.subject, 'attributed': 'no'})}",
                "map_url": mapping_add_url(s.subject),
                "kong_consumer": known.get(s.subject),
                "history_url": (
                    f"{mappings_url}?{urlencode({'q': s.subject})}"
                    if s.subject in ever_mapped
                    else None
                ),
            }
            for s in listed
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Unattributed usage",
            "opts": self.model._meta,
            "rows": rows,
            "listed": listed,
            "subject_count": len(subjects),
            "total_events": sum(s.events for s in subjects),
            "period": period,
            "period_label": label,
            "periods": [(k, v[0]) for k, v in self.UNATTRIBUTED_PERIODS.items()],
            "kong_consumers_url": reverse("admin:metering_kongconsumer_changelist"),
            "kong_skips": kong_skips(since=since.date() if since else None),
        }
        return render(request, "admin/metering/unattributed.html", context)
