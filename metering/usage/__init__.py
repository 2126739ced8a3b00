"""Usage: metering's one answer to "how much did these customers use".

Whole UTC hours come from the rollup buckets; the partial hours at a range's edges and
the events not rolled up yet come from the raw events, read in the same statement as the
watermark that says what the buckets hold: fresh to the last accepted event, and never
counted twice.

Modules: ``exact`` (the reference: per-customer partial aggregates of any aggregation).
"""

from metering.usage.exact import (
    FeatureUsage,
    Partial,
    current_xmin,
    feature_usage,
    quantity_of,
    usage_changed_since,
    usage_changed_since_many,
    usage_of,
    usage_partials,
)

__all__ = [
    "FeatureUsage",
    "Partial",
    "current_xmin",
    "feature_usage",
    "quantity_of",
    "usage_changed_since",
    "usage_changed_since_many",
    "usage_of",
    "usage_partials",
]
