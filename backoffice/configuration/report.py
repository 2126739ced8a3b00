"""What an apply did (or would do), and the errors that stopped it."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import IntegrityError, transaction

T = TypeVar("T")
KEPT_LIST_LIMIT = 20


class ConfigError(Exception):
    """The file cannot be applied; ``errors`` name each problem's place in the file.
    Nothing was changed."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(dict.fromkeys(errors))  # in order, each once
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True)
class Change:
    """One change: ``+`` created, ``~`` changed."""

    sign: str
    text: str

    def __str__(self) -> str:
        return f"{self.sign} {self.text}"


@dataclass(frozen=True)
class ApplyReport:
    changes: tuple[Change, ...]
    kept: tuple[str, ...]  # "meters a, b": in the database, not in the file, left alone
    dry_run: bool

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    @property
    def summary(self) -> str:
        if not self.changes:
            return "No changes."
        created = sum(1 for c in self.changes if c.sign == "+")
        updated = len(self.changes) - created
        counts = f"{created} created, {updated} changed"
        if self.dry_run:
            return f"Dry run: {len(self.changes)} changes ({counts}); nothing was changed."
        return f"Applied {len(self.changes)} changes ({counts})."

    def lines(self) -> list[str]:
        return [
            *(str(c) for c in self.changes),
            *(f"kept (not in file): {k}" for k in self.kept),
            self.summary,
        ]


def instant_text(value: datetime | None) -> str:
    """An instant as the file writes it: ISO 8601 in UTC with a Z."""
    if value is None:
        return ""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def no_such(kind: str, key: str, known: set[str]) -> str:
    match = difflib.get_close_matches(key, sorted(known), n=1)
    return f"no {kind} '{key}'" + (f" (did you mean '{match[0]}'?)" if match else ".")


def kept_line(label: str, keys: list[str]) -> list[str]:
    if not keys:
        return []
    more = len(keys) - KEPT_LIST_LIMIT
    shown = ", ".join(keys[:KEPT_LIST_LIMIT]) + (f" and {more} more" if more > 0 else "")
    return [f"{label} {shown}"]


def _sentence(message: str) -> str:
    # "Overlaps mapping #12" reads as "...valid_from: overlaps mapping #12" after a path.
    if len(message) > 1 and message[0].isupper() and message[1].islower():
        return message[0].lower() + message[1:]
    return message


_NESTED_PATH = re.compile(r"^[a-z_]+\[\d+\]")


def error_messages(path: str, exc: ValidationError, names: dict[str, str | None]) -> list[str]:
    """A service's ``ValidationError`` as file errors: model field names become the
    file's keys (``names``; ``None`` means the item itself) under ``path``."""
    out = []
    if hasattr(exc, "error_dict"):
        for name, messages in exc.message_dict.items():
            key = None if name == NON_FIELD_ERRORS else names.get(name, name)
            where = path if key is None else f"{path}.{key}"
            out += [f"{where}: {_sentence(m)}" for m in messages]
        return out
    for message in exc.messages:
        if _NESTED_PATH.match(message):  # already a path inside the item: rate_cards[2]...
            out.append(f"{path}.{message}")
        else:
            out.append(f"{path}: {_sentence(message)}")
    return out


@dataclass
class ApplyRun:
    """The state of one apply: errors found and changes made so far."""

    errors: list[str] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def change(self, sign: str, text: str) -> None:
        self.changes.append(Change(sign, text))

    def attempt(
        self, path: str, write: Callable[[], T], names: dict[str, str | None] | None = None
    ) -> T | None:
        """Run ``write`` in a savepoint; on a validation or integrity error record it
        under ``path`` and return ``None``, so the rest of the file is still checked."""
        try:
            with transaction.atomic():
                return write()
        except ValidationError as exc:
            self.errors += error_messages(path, exc, names or {})
        except IntegrityError as exc:
            self.error(path, str(exc).strip().splitlines()[0])
        return None
