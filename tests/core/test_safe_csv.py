"""CSV cells a spreadsheet would run as formulas are written as text (OWASP CSV injection);
numbers the product computes stay numbers."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from core.safe_csv import csv_safe_cell, csv_safe_writer

HOSTILE = [
    '=HYPERLINK("http://x")',
    "@SUM(1)",
    "+1",
    "-1+2",
    "\t=1",
    "\r=1",
    "\n=1",
    "  =1+2",
    "=cmd|' /C calc'!A0",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_a_text_a_spreadsheet_would_run_is_prefixed_with_a_quote(text):
    assert csv_safe_cell(text) == "'" + text


@pytest.mark.parametrize("text", ["acme-gw", "kong-eu-1", '{"route": "/-x"}', "a=b", "x@y.z", ""])
def test_ordinary_text_is_written_as_it_is(text):
    assert csv_safe_cell(text) == text


def test_a_negative_number_text_from_outside_is_text_but_the_products_number_stays_a_number():
    assert csv_safe_cell("-12.50") == "'-12.50"
    assert csv_safe_cell(Decimal("-12.50")) == "-12.5"
    assert csv_safe_cell(Decimal("1E+2")) == "100"
    assert csv_safe_cell(-3) == "-3"
    assert csv_safe_cell(None) == ""
    assert csv_safe_cell(datetime(2026, 11, 1, tzinfo=UTC)) == "2026-11-01T00:00:00+00:00"


def test_floats_are_refused():
    with pytest.raises(TypeError):
        csv_safe_cell(0.1)


def test_every_cell_is_quoted_so_a_separator_or_line_break_never_starts_a_new_cell():
    out = io.StringIO()
    writer = csv_safe_writer(out)
    writer.writerow(["subject", "value"])
    writer.writerow(["a;=1+2\n=2", Decimal("-1.5")])
    writer.writerow(['say "hi"', 7])

    text = out.getvalue()
    assert text.splitlines()[0] == '"subject","value"'
    assert '"a;=1+2\n=2","-1.5"' in text
    assert '"say ""hi""","7"' in text
    assert list(csv.reader(io.StringIO(text)))[1:] == [["a;=1+2\n=2", "-1.5"], ['say "hi"', "7"]]
