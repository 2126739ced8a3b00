"""Configuration as code: the catalog and customers as a YAML file.

``config_apply`` makes the database match a parsed file (create and update, never
delete, one transaction); ``config_export`` writes the current configuration in the
same format. The format is described in docs/configuration.md.
"""

from billing.config.apply import config_apply
from billing.config.export import config_export, document_dump
from billing.config.report import ApplyReport, Change, ConfigError
from billing.config.schema import document_load, document_validate

__all__ = [
    "ApplyReport",
    "Change",
    "ConfigError",
    "config_apply",
    "config_export",
    "document_dump",
    "document_load",
    "document_validate",
]
