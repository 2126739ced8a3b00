"""The usage chart of a feature, for all customers or one: ``usage_series`` drawn as SVG."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django import forms
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone as django_timezone

from customers.models import Customer, validate_timezone
from metering.admin.charts import Bar, bar_chart_svg, value_text
from metering.models import Aggregation, Feature
from metering.usage import UsagePoint, usage_series

MAX_DAYS = 366
MAX_HOURLY_DAYS = 31


class UsageChartForm(forms.Form):
    customer = forms.CharField(
        required=False,
        widget=forms.TextInput(attrs={"list": "customer-keys", "placeholder": "all customers"}),
        help_text="A customer key; empty for all usage (every customer, and unattributed).",
    )
    days = forms.IntegerField(min_value=1, max_value=MAX_DAYS, initial=30, required=False)
    until = forms.DateField(
        required=False,
        label="Last day",
        help_text="The last day shown (in the time zone); empty for today.",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    window = forms.ChoiceField(
        choices=[("day", "per day"), ("hour", "per hour")], initial="day", required=False
    )
    tz = forms.CharField(
        required=False,
        label="Time zone",
        validators=[validate_timezone],
        help_text="Days start at midnight here; default: the customer's time zone, or UTC.",
    )

    def clean_customer(self) -> Customer | None:
        key = self.cleaned_data["customer"].strip()
        if not key:
            return None
        try:
            return Customer.objects.get(key=key)
        except Customer.DoesNotExist as exc:
            raise ValidationError(f"No customer with key {key!r}.") from exc

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("window") == "hour" and (cleaned.get("days") or 30) > MAX_HOURLY_DAYS:
            self.add_error("days", f"Per hour, show at most {MAX_HOURLY_DAYS} days.")
        return cleaned


def usage_range(
    *, now: datetime, days: int, until: date | None, window: str, zone: zoneinfo.ZoneInfo
) -> tuple[datetime, datetime]:
    """``days`` local days ending with ``until`` (default: the day of ``now``); per hour, up
    to the end of the current hour when the range ends today."""
    last = until or now.astimezone(zone).date()
    end = datetime.combine(last + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
    start = datetime.combine(last - timedelta(days=days - 1), time(0), tzinfo=zone).astimezone(UTC)
    if window == "hour" and until is None:
        end = min(
            end, now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        )
    return start, end


def _bars(points: list[UsagePoint], window: str, zone: zoneinfo.ZoneInfo, tz: str) -> list[Bar]:
    bars = []
    for point in points:
        local = point.window_start.astimezone(zone)
        if window == "day":
            label, title = f"{local:%b} {local.day}", f"{local:%a %Y-%m-%d} ({tz})"
        else:
            label = f"{local:%b} {local.day}" if local.hour == 0 else f"{local:%H:%M}"
            title = f"{local:%a %Y-%m-%d %H:%M} ({tz})"
        bars.append(Bar(label=label, title=title, value=point.value))
    return bars


def _describe(feature: Feature) -> str:
    meter = feature.meter
    what = (
        "events"
        if meter.aggregation == Aggregation.COUNT
        else f"{meter.get_aggregation_display().lower()} of {meter.value_property}"
    )
    return f"{meter.key}: {what} of type {meter.event_type!r}"


def feature_usage_view(model_admin, request, object_id: str):
    """``/admin/metering/feature/<id>/usage/?customer=KEY&days=30&window=day&tz=UTC``;
    ``&format=svg`` answers the chart alone as ``image/svg+xml``."""
    feature = (
        Feature.objects.select_related("meter").filter(pk=object_id).first()
        if str(object_id).isdigit()
        else None
    )
    if feature is None:
        raise Http404("No such feature.")
    if not model_admin.has_view_permission(request, feature):
        raise PermissionDenied
    form = UsageChartForm(request.GET or None, initial={"days": 30, "window": "day"})
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "original": feature,
        "feature": feature,
        "meter_text": _describe(feature),
        "title": f"Usage of {feature.key}",
        "form": form,
    }
    if form.is_bound and not form.is_valid():
        return render(request, "admin/metering/feature/usage.html", context)
    cleaned = form.cleaned_data if form.is_bound else {}
    customer = cleaned.get("customer")
    tz = cleaned.get("tz") or (customer.timezone if customer else "UTC")
    window = cleaned.get("window") or "day"
    days = cleaned.get("days") or 30
    zone = zoneinfo.ZoneInfo(tz)
    start, end = usage_range(
        now=django_timezone.now(), days=days, until=cleaned.get("until"), window=window, zone=zone
    )
    points = usage_series(
        meter=feature.meter,
        feature=feature,
        customer=customer,
        start=start,
        end=end,
        window=window,
        timezone=tz,
    )
    scope = f"customer {customer.key}" if customer else "all customers and unattributed usage"
    svg = bar_chart_svg(
        bars=_bars(points, window, zone, tz),
        y_label=f"{feature.key} per {window} ({tz}), {scope}",
    )
    if request.GET.get("format") == "svg":
        return HttpResponse(svg, content_type="image/svg+xml; charset=utf-8")
    additive = feature.meter.aggregation in (Aggregation.COUNT, Aggregation.SUM)
    total = (
        sum((p.value for p in points if p.value is not None), start=Decimal(0))
        if additive
        else None
    )
    query = request.GET.copy()
    query["format"] = "svg"
    context.update(
        {
            "svg": svg,
            "rows": [
                (b.title, value_text(p.value))
                for b, p in zip(_bars(points, window, zone, tz), points, strict=True)
            ],
            "total": value_text(total) if total is not None else None,
            "customer": customer,
            "customer_url": (
                reverse("admin:customers_customer_change", args=[customer.pk]) if customer else None
            ),
            "scope": scope,
            "range_text": f"{start.astimezone(zone):%Y-%m-%d %H:%M} to "
            f"{end.astimezone(zone):%Y-%m-%d %H:%M} ({tz})",
            "svg_url": f"{request.path}?{query.urlencode()}",
            "customers": Customer.objects.order_by("key").values_list("key", flat=True)[:1000],
        }
    )
    return render(request, "admin/metering/feature/usage.html", context)
