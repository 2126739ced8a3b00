"""The benchmarks under bench/ keep working: each runs once at a tiny size.

These are not timed tests: a slow machine never fails them. They check that a benchmark
runs to the end (exit code 0, gunicorn stopped, its own consistency checks passed) and
prints its figures. Each runs in its own database beside the test database, on the
server of DATABASE_URL (or the embedded one), as a developer would run it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NUMBER = r"[\d,]+(\.\d+)?"


def bench_database() -> str:
    # Apart from a developer's billing_bench, and per test database so that two test runs
    # on one server do not truncate each other's tables.
    return f"{os.environ.get('TEST_DATABASE_NAME') or 'test_billing'}_bench"


def run_benchmark(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, f"bench/{script}", *args, "--database", bench_database()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def figure(output: str, label: str) -> str:
    match = re.search(rf"^{re.escape(label)}:\s+(.*)$", output, re.MULTILINE)
    assert match, f"no '{label}' line in:\n{output}"
    return match.group(1)


def test_ingest_benchmark_posts_every_event_and_prints_its_ratio_to_copy():
    output = run_benchmark(
        "ingest.py", "--events", "5000", "--clients", "2", "--workers", "2", "--rounds", "1"
    )
    assert re.match(NUMBER, figure(output, "endpoint events/s"))
    assert "all answered 204" in figure(output, "endpoint events/s")
    assert re.match(rf"p50 {NUMBER} ms, p99 {NUMBER} ms", figure(output, "request latency"))
    assert re.match(NUMBER, figure(output, "raw COPY events/s"))
    assert re.match(r"\d+\.\d\d \(", figure(output, "ratio endpoint/COPY"))


def test_rollup_benchmark_checks_its_buckets_and_prints_both_ratios():
    output = run_benchmark("rollup.py", "--events", "20000", "--subjects", "20")
    assert re.match(rf"{NUMBER} s", figure(output, "raw GROUP BY"))
    assert re.match(rf"{NUMBER} s", figure(output, "full rollup"))
    assert "equal the GROUP BY's" in figure(output, "check")
    assert re.match(rf"{NUMBER} s for 200 new events", figure(output, "incremental rollup"))
    assert re.match(r"\d+\.\d\d \(", figure(output, "ratio full rollup/GROUP BY"))
    assert re.match(r"\d+\.\d+ = ", figure(output, "ratio incremental/full"))
