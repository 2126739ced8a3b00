"""Configuration as code: the catalog and customers as a YAML file.

``config_apply`` makes the database match a parsed file (create and update, never
delete, one transaction); ``config_export`` writes the current configuration in the
same format. The format is described in docs/configuration.md.
"""

from backoffice.configuration.apply import config_apply
from backoffice.configuration.export import config_export, document_dump
from backoffice.configuration.report import ApplyReport, Change, ConfigError
from backoffice.configuration.schema import document_load, document_validate

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
