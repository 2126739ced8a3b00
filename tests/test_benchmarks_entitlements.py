"""bench/entitlements.py keeps working: it runs once at a tiny size.

Not a timed test: a slow machine never fails it. It checks that the benchmark runs to
the end (exit code 0: every request answered 200, gunicorn stopped, the sampled answers
equal to the uncached computation) and prints its figures. It runs in its own database
beside the test database, on the server of DATABASE_URL (or the embedded one).
"""

from __future__ import annotations

import re

from tests.benchmark_runs import NUMBER, bench_database, figure, run_benchmark


def test_entitlement_benchmark_measures_both_endpoints_and_checks_its_answers():
    output = run_benchmark(
        "entitlements.py",
        "--rps", "50", "--seconds", "3", "--warmup", "1",
        "--accounts", "12", "--events-per-customer", "40",
        database=bench_database("bench_entitlements"),
        timeout=300,
    )  # fmt: skip
    latency = rf"p50 {NUMBER} ms, p99 {NUMBER} ms, max {NUMBER} ms at {NUMBER} req/s achieved"
    assert re.match(latency, figure(output, "trivial endpoint"))
    assert re.match(latency, figure(output, "value check"))
    assert "0 errors" in figure(output, "value check")
    assert re.match(rf"p50 {NUMBER}x, p99 {NUMBER}x", figure(output, "ratio value/trivial"))
    assert re.match(r"\d+ sampled checks equal", figure(output, "answers checked"))
    assert re.match(r"p99 <= 10 ms at 500 req/s: (met|MISSED)", figure(output, "target"))
    assert "12 accounts" in figure(output, "setup")
