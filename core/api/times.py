"""Instants the API takes: one rule for every date-time in a body, a filter or a query
parameter.

Python reads offsets up to ±23:59 and years 1 to 9999; PostgreSQL's ``timestamptz`` takes
offsets only up to ±15:59 (its "time zone displacement out of range" would be a server
error), and billing adds months and years to what it is given (a year 9999 anchor has no
next period). So an instant is refused with a 400 naming the field when its UTC offset
is 16 hours or more, or when it falls outside ``[INSTANT_MIN, INSTANT_MAX)``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from django import forms
from django.db import models
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_filters import rest_framework as filters
from django_filters.fields import IsoDateTimeField
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

INSTANT_MIN = datetime(1970, 1, 1, tzinfo=UTC)
INSTANT_MAX = datetime(3000, 1, 1, tzinfo=UTC)  # exclusive
MAX_UTC_OFFSET = timedelta(hours=16)  # exclusive: PostgreSQL's limit

RFC3339_MESSAGE = "Give an RFC 3339 date-time with an offset, e.g. 2026-11-01T00:00:00Z."

# RFC 3339 date-time: a 'T' (or space) between date and time, and an offset or 'Z'.
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
# '+' in an offset arrives as a space when the client did not percent-encode the query.
_DECODED_PLUS = re.compile(r"(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)$")
_NANOSECONDS = re.compile(r"(\.\d{6})\d+")


def instant_problem(value: datetime) -> str | None:
    """Why the API refuses the aware datetime ``value``, or None when it takes it."""
    offset = value.utcoffset()
    if offset is not None and abs(offset) >= MAX_UTC_OFFSET:
        return (
            f"The UTC offset of {value.isoformat()} is out of range: "
            "give one between -15:59 and +15:59 (or Z)."
        )
    try:
        in_range = INSTANT_MIN <= value < INSTANT_MAX
    except OverflowError:  # an offset that takes year 1 or 9999 past the calendar
        in_range = False
    if not in_range:
        return (
            f"{value.isoformat()} is out of range: give an instant from "
            f"{INSTANT_MIN:%Y-%m-%d} to before {INSTANT_MAX:%Y-%m-%d} (UTC)."
        )
    return None


def instant_parse(text: str, *, strict: bool = False) -> datetime:
    """An ISO 8601 date-time with an offset (``strict``: exactly RFC 3339's form) as an
    aware datetime, with the offset it was given.

    Digits past microseconds are cut; a '+' that arrived as a space (an unencoded query
    string) is read as '+'. Raises ``ValueError`` with a message for the client when the
    text is not such a date-time or ``instant_problem`` refuses it.
    """
    if not isinstance(text, str):
        raise ValueError(RFC3339_MESSAGE)
    text = _DECODED_PLUS.sub(r"\1+\2", text.strip())
    if strict and not _RFC3339.match(text):
        raise ValueError(RFC3339_MESSAGE)
    try:
        value = parse_datetime(_NANOSECONDS.sub(r"\1", text.upper()))
    except ValueError as exc:  # a 13th month, a 25th hour
        raise ValueError(RFC3339_MESSAGE) from exc
    if value is None or timezone.is_naive(value):
        raise ValueError(RFC3339_MESSAGE)
    problem = instant_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def instant_query_param(params, name: str, *, default: datetime | None) -> datetime | None:
    """The query parameter ``name`` as an instant, ``default`` when absent or empty; a 400
    naming the parameter when it cannot be read or stored."""
    raw = params.get(name)
    if not raw:
        return default
    try:
        return instant_parse(raw)
    except ValueError as exc:
        raise serializers.ValidationError({name: [str(exc)]}) from exc


class InstantField(serializers.DateTimeField):
    """DRF's ``DateTimeField`` (any ISO 8601 date-time; without an offset, UTC) that
    refuses what ``instant_problem`` refuses, and answers UTC."""

    def enforce_timezone(self, value: datetime) -> datetime:
        if timezone.is_aware(value):
            problem = instant_problem(value)
            if problem:
                raise serializers.ValidationError(problem, code="invalid")
        value = super().enforce_timezone(value)
        if timezone.is_aware(value):
            problem = instant_problem(value)
            if problem:
                raise serializers.ValidationError(problem, code="invalid")
        return value


class InstantModelSerializer(serializers.ModelSerializer):
    """A model serializer whose date-time model fields are ``InstantField``s."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.DateTimeField: InstantField,
    }


@extend_schema_field(OpenApiTypes.DATETIME)
class RFC3339Field(serializers.Field):
    """A strict RFC 3339 date-time (offset required), as OpenMeter's query takes it."""

    default_error_messages = {"invalid": RFC3339_MESSAGE}

    def to_internal_value(self, data) -> datetime:
        try:
            return instant_parse(data, strict=True)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc), code="invalid") from exc

    def to_representation(self, value: datetime) -> str:
        return value.isoformat()


class InstantFormField(IsoDateTimeField):
    """The form field of ``InstantFilter``: ISO 8601, refused as ``InstantField`` refuses."""

    def to_python(self, value):
        value = super().to_python(value)
        if value is not None:
            problem = instant_problem(value)
            if problem:
                raise forms.ValidationError(problem, code="invalid")
            value = value.astimezone(UTC)
        return value


class InstantFilter(filters.IsoDateTimeFilter):
    """A django-filter date-time filter (ISO 8601) whose instants the database can store."""

    field_class = InstantFormField
