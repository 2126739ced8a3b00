"""Usage: metering's one answer to "how much did these customers use".

Whole UTC hours come from the rollup buckets; the partial hours at a range's edges and
the events not rolled up yet come from the raw events, read in the same statement as the
watermark that says what the buckets hold: fresh to the last accepted event, and never
counted twice.

The entitlement value check reads ``feature_quantities``: the answers of
``feature_usage`` (which rates the invoice) through a faster statement.

Modules: ``exact`` (the reference: per-customer partial aggregates of any aggregation),
``fresh`` (the hot path for additive meters, with its per-process memories).
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
from metering.usage.fresh import (
    ConsumerTerm,
    consumer_terms,
    database_generation_bump,
    feature_quantities,
    usage_memories_clear,
)

__all__ = [
    "ConsumerTerm",
    "FeatureUsage",
    "Partial",
    "consumer_terms",
    "current_xmin",
    "database_generation_bump",
    "feature_quantities",
    "feature_usage",
    "quantity_of",
    "usage_changed_since",
    "usage_changed_since_many",
    "usage_memories_clear",
    "usage_of",
    "usage_partials",
]
