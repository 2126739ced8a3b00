"""CSV files that a spreadsheet opens as data, never as formulas.

Every CSV the product writes goes through ``csv_safe_writer``: finance teams open these
files in Excel, LibreOffice or Google Sheets, and a cell that starts with ``=``, ``+``,
``-``, ``@``, a tab or a line break is run there as a formula (OWASP's "CSV injection":
an event subject of ``=HYPERLINK("http://x", "click")`` becomes a live link, ``@SUM(...)``
a calculation, and worse with DDE). The rules, after OWASP's guidance:

- **Text** (``str``: event subjects, sources, ids, keys, JSON, names: anything a user or a
  machine sent) is prefixed with a single quote ``'`` when its first character, or its
  first character after leading spaces, is one of ``= + - @``, a tab, a carriage return
  or a line feed. The spreadsheet shows the quote and the text; nothing runs. A text
  that looks like a negative number (a subject ``-12.50``) is text from outside: it is
  prefixed too.
- **Numbers** the product itself computes (``Decimal``, ``int``) are written as plain
  decimals (``core.money.plain_decimal``: no exponent, no padding) and never prefixed, so
  ``-12.5`` in a value or amount column stays a number a spreadsheet can add up. A
  float is refused, as everywhere money is written.
- **Instants and dates** are written in ISO 8601 (they start with a digit).
- Every cell is quoted (``QUOTE_ALL``), so a separator or a line break inside a text
  never starts a new cell, whatever separator the spreadsheet's locale expects; a quote
  inside a text is doubled, as CSV does.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

from core.money import plain_decimal

#: First characters a spreadsheet reads as the start of a formula (OWASP), plus the
#: line feed, which some import paths treat like a carriage return.
FORMULA_TRIGGERS = frozenset("=+-@\t\r\n")


class _Writable(Protocol):
    def write(self, value: str, /) -> Any: ...


def csv_cell_is_formula(text: str) -> bool:
    """True when a spreadsheet could read ``text`` as a formula: its first character, or
    the first after leading spaces (spreadsheets skip them), starts one."""
    return bool(text) and (text[0] in FORMULA_TRIGGERS or text.lstrip(" ")[:1] in FORMULA_TRIGGERS)


def csv_safe_cell(value: object) -> str:
    """One cell's text: ``None`` is empty; ``Decimal`` and ``int`` (numbers the product
    computed) are plain decimals; instants and dates ISO 8601; anything else is text,
    prefixed with ``'`` when it could run as a formula. Raises ``TypeError`` for a float
    or a bool (write the product's Decimal, or the text you mean)."""
    if value is None:
        return ""
    if isinstance(value, bool | float):
        raise TypeError(f"Write a CSV cell from Decimal, int or str, not {type(value).__name__}.")
    if isinstance(value, int | Decimal):
        return plain_decimal(value) or "0"
    if isinstance(value, datetime | date):
        return value.isoformat()
    text = str(value)
    return f"'{text}" if csv_cell_is_formula(text) else text


class CsvSafeWriter:
    """``csv.writer`` whose every cell goes through ``csv_safe_cell``, all cells quoted.
    ``writerow`` returns what the stream's ``write`` returns, as ``csv.writer`` does (so
    a pass-through stream yields each row's text for a streaming response)."""

    def __init__(self, stream: _Writable) -> None:
        self._writer = csv.writer(stream, quoting=csv.QUOTE_ALL)

    def writerow(self, row: Iterable[object]) -> Any:
        return self._writer.writerow([csv_safe_cell(cell) for cell in row])

    def writerows(self, rows: Iterable[Iterable[object]]) -> None:
        for row in rows:
            self.writerow(row)


def csv_safe_writer(stream: _Writable) -> CsvSafeWriter:
    """The one way the product writes CSV: see the module's rules."""
    return CsvSafeWriter(stream)


__all__ = [
    "FORMULA_TRIGGERS",
    "CsvSafeWriter",
    "csv_cell_is_formula",
    "csv_safe_cell",
    "csv_safe_writer",
]
