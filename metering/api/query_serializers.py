"""Request and response shapes of the meter query, named as OpenMeter names them."""

from __future__ import annotations

import re

from rest_framework import serializers

from core.api.times import RFC3339Field
from metering.query import MAX_LIST_ITEMS, MeterQuery, WindowSize


def _strings(help_text: str) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.CharField(max_length=255),
        required=False,
        max_length=MAX_LIST_ITEMS,
        help_text=help_text,
    )


class MeterQueryRequestSerializer(serializers.Serializer):
    """The query, as query parameters (GET) or a JSON body (POST)."""

    to = RFC3339Field(
        required=False,
        allow_null=True,
        help_text="End of the period, RFC 3339, exclusive. Default: everything stored.",
    )
    windowSize = serializers.ChoiceField(  # noqa: N815 - OpenMeter's name
        choices=[w.value for w in WindowSize],
        required=False,
        allow_null=True,
        help_text="MINUTE, HOUR, DAY or MONTH. Without it: one row per group for the whole period.",
    )
    windowTimeZone = serializers.CharField(  # noqa: N815
        required=False,
        allow_null=True,
        default="UTC",
        help_text="IANA time zone the windows are cut in, e.g. America/New_York. Default UTC.",
    )
    subject = _strings("Only these subjects; rows are then per subject.")
    filterCustomerId = _strings(  # noqa: N815
        "Only usage attributed to these customers (customer keys); rows are then per customer."
    )
    groupBy = _strings(  # noqa: N815
        "Meter dimensions to group by, and the reserved subject and customerId."
    )
    filterGroupBy = serializers.DictField(  # noqa: N815
        child=serializers.ListField(child=serializers.CharField(), max_length=MAX_LIST_ITEMS),
        required=False,
        help_text='Only usage whose dimension has one of the values: {"model": ["gpt-4o"]}. '
        "As query parameters: filterGroupBy[model]=gpt-4o.",
    )

    def get_fields(self):
        # 'from' is a Python keyword, so it cannot be declared as a class attribute.
        return {
            "from": RFC3339Field(
                required=False,
                allow_null=True,
                help_text="Start of the period, RFC 3339, inclusive. Default: everything stored.",
            ),
            **super().get_fields(),
        }

    def to_query(self) -> MeterQuery:
        data = self.validated_data
        window = data.get("windowSize")
        return MeterQuery(
            start=data.get("from"),
            end=data.get("to"),
            window_size=WindowSize(window) if window else None,
            window_time_zone=data.get("windowTimeZone") or "UTC",
            subjects=tuple(dict.fromkeys(data.get("subject") or ())),
            customer_keys=tuple(dict.fromkeys(data.get("filterCustomerId") or ())),
            group_by=tuple(dict.fromkeys(data.get("groupBy") or ())),
            filter_group_by={k: tuple(v) for k, v in (data.get("filterGroupBy") or {}).items()},
        )


def request_data_from_query_params(params) -> dict:
    """GET parameters in the request body's shape: repeatable parameters as lists, and
    OpenMeter's deepObject ``filterGroupBy[name]=value`` as a mapping."""
    data: dict = {}
    for name in ("from", "to", "windowSize", "windowTimeZone"):
        if name in params:
            data[name] = params.get(name)
    for name in ("subject", "filterCustomerId", "groupBy"):
        if name in params:
            data[name] = params.getlist(name)
    filters = {}
    for name in params:
        match = re.fullmatch(r"filterGroupBy\[(.+)\]", name)
        if match:
            filters[match.group(1)] = params.getlist(name)
    if filters:
        data["filterGroupBy"] = filters
    return data


class MeterQueryRowSerializer(serializers.Serializer):
    """One window of one group (for the schema; the view renders rows itself)."""

    value = serializers.FloatField(help_text="The aggregated value, an exact JSON number.")
    windowStart = serializers.DateTimeField()  # noqa: N815
    windowEnd = serializers.DateTimeField()  # noqa: N815
    subject = serializers.CharField(allow_null=True)
    customerId = serializers.CharField(  # noqa: N815
        allow_null=True, help_text="Customer key, when grouped or filtered by customer."
    )
    groupBy = serializers.DictField(child=serializers.CharField(allow_null=True))  # noqa: N815


class MeterQueryResultSerializer(serializers.Serializer):
    to = serializers.DateTimeField(allow_null=True)
    windowSize = serializers.ChoiceField(  # noqa: N815
        choices=[w.value for w in WindowSize], allow_null=True
    )
    data = MeterQueryRowSerializer(many=True)

    def get_fields(self):
        return {"from": serializers.DateTimeField(allow_null=True), **super().get_fields()}
