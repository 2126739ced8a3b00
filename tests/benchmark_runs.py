"""Running a benchmark under bench/ once at a tiny size from a test, and reading its
figures: the smoke tests' shared part (tests/test_benchmarks*.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NUMBER = r"[\d,]+(\.\d+)?"


def bench_database(suffix: str) -> str:
    """A benchmark database per test database (two test runs on one server never share
    one) and per smoke-test file (they truncate their tables freely)."""
    return f"{os.environ.get('TEST_DATABASE_NAME') or 'test_billing'}_{suffix}"


def run_benchmark(script: str, *args: str, database: str, timeout: float = 180) -> str:
    """``bench/<script> <args> --database <database>``; its output, which must end well."""
    result = subprocess.run(
        [sys.executable, f"bench/{script}", *args, "--database", database],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def figure(output: str, label: str) -> str:
    """The text after ``label:`` on its line of the benchmark's output."""
    match = re.search(rf"^{re.escape(label)}:\s+(.*)$", output, re.MULTILINE)
    assert match, f"no '{label}' line in:\n{output}"
    return match.group(1)
