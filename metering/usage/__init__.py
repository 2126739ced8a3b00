"""Usage: metering's one answer to "how much did these customers use".

Whole UTC hours come from the rollup buckets; the partial hours at a range's edges and
the events not rolled up yet come from the raw events, read in the same statement as the
watermark that says what the buckets hold: fresh to the last accepted event, and never
counted twice.

The entitlement value check reads ``feature_quantities``: the answers of
``feature_usage`` (which rates the invoice) through a faster statement. An invoice
line's usage is proven with ``usage_breakdown``, ``usage_buckets`` and
``usage_events_iter``.

The dashboard's trends come from ``meter_events_per_day``. Breakdowns per subject, per
customer, per dimension and per window (minute to month, in any time zone) are the meter
query's (``metering.query.meter_query``, OpenMeter's API), and a feature's series for a
chart is ``usage_series``.

Modules: ``exact`` (the reference: per-customer partial aggregates of any aggregation),
``fresh`` (the hot path for additive meters), ``memories`` (its per-process memories),
``lines`` (what a quantity is made of, for proof), ``trends`` (many meters at once, for
charts), ``series`` (one feature per local day or hour, for charts).
"""

from metering.usage.exact import (
    FeatureUsage,
    Partial,
    current_xmin,
    customers_with_usage_changed_since,
    feature_usage,
    quantity_of,
    usage_changed_since,
    usage_changed_since_many,
    usage_of,
    usage_partials,
)
from metering.usage.fresh import ConsumerTerm, consumer_terms, feature_quantities
from metering.usage.lines import (
    EVENT_COLUMNS,
    UsageBreakdown,
    UsageTotals,
    usage_breakdown,
    usage_buckets,
    usage_events_iter,
)
from metering.usage.memories import database_generation_bump, usage_memories_clear
from metering.usage.series import MAX_SERIES_WINDOWS, UsagePoint, series_windows, usage_series
from metering.usage.trends import meter_events_per_day

__all__ = [
    "MAX_SERIES_WINDOWS",
    "UsagePoint",
    "series_windows",
    "usage_series",
    "EVENT_COLUMNS",
    "ConsumerTerm",
    "FeatureUsage",
    "Partial",
    "UsageBreakdown",
    "UsageTotals",
    "consumer_terms",
    "current_xmin",
    "customers_with_usage_changed_since",
    "database_generation_bump",
    "feature_quantities",
    "feature_usage",
    "meter_events_per_day",
    "quantity_of",
    "usage_breakdown",
    "usage_buckets",
    "usage_changed_since",
    "usage_changed_since_many",
    "usage_events_iter",
    "usage_memories_clear",
    "usage_of",
    "usage_partials",
]
