"""The `ach` settlement rail's pure parts: NACHA files, return files, banking days."""

from rails.ach.calendar import is_banking_day, next_banking_day
from rails.ach.nacha import (
    AchDebit,
    AchOriginator,
    NachaEntry,
    NachaFile,
    nacha_file_build,
)
from rails.ach.nacha_records import aba_check_digit, routing_number_validate
from rails.ach.returns import (
    AchNotificationOfChange,
    AchReturn,
    AchReturnFile,
    NachaParseError,
    nacha_return_file_parse,
)
from rails.ach.returns_build import AchReturnInstruction, nacha_return_file_build

__all__ = [
    "AchDebit",
    "AchNotificationOfChange",
    "AchOriginator",
    "AchReturn",
    "AchReturnFile",
    "AchReturnInstruction",
    "NachaEntry",
    "NachaFile",
    "NachaParseError",
    "aba_check_digit",
    "is_banking_day",
    "nacha_file_build",
    "nacha_return_file_build",
    "nacha_return_file_parse",
    "next_banking_day",
    "routing_number_validate",
]
