"""Metering in the admin: the meter catalog, the event explorer, unattributed usage,
usage charts, the rollup's failures and refused events, and Kong consumers. Importing the package
registers every model admin."""

from metering.admin.catalog import FeatureAdmin, MeterAdmin
from metering.admin.events import EventAdmin
from metering.admin.gateways import KongConsumerAdmin
from metering.admin.rollup import RefusedEventAdmin, RollupFailureAdmin

__all__ = [
    "EventAdmin",
    "FeatureAdmin",
    "KongConsumerAdmin",
    "MeterAdmin",
    "RefusedEventAdmin",
    "RollupFailureAdmin",
]
