"""Metering in the admin: the meter catalog, the event explorer, unattributed usage and
usage charts. Importing the package registers every model admin."""

from metering.admin.catalog import FeatureAdmin, MeterAdmin
from metering.admin.events import EventAdmin

__all__ = ["EventAdmin", "FeatureAdmin", "MeterAdmin"]
