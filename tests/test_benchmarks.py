"""The benchmarks under bench/ keep working: each runs once at a tiny size.

These are not timed tests: a slow machine never fails them. They check that a benchmark
runs to the end (exit code 0, gunicorn stopped, its own consistency checks passed) and
prints its figures. Each runs in its own database beside the test database, on the
server of DATABASE_URL (or the embedded one), as a developer would run it.
"""

from __future__ import annotations

import re

from tests.benchmark_runs import NUMBER, bench_database, figure, run_benchmark

DATABASE = bench_database("bench")


def test_ingest_benchmark_posts_every_event_and_prints_its_ratio_to_copy():
    output = run_benchmark(
        "ingest.py",
        "--events",
        "5000",
        "--clients",
        "2",
        "--workers",
        "2",
        "--rounds",
        "1",
        database=DATABASE,
    )
    assert re.match(NUMBER, figure(output, "endpoint events/s"))
    assert "all answered 204" in figure(output, "endpoint events/s")
    assert re.match(rf"p50 {NUMBER} ms, p99 {NUMBER} ms", figure(output, "request latency"))
    assert re.match(NUMBER, figure(output, "raw COPY events/s"))
    assert re.match(r"\d+\.\d\d \(", figure(output, "ratio endpoint/COPY"))


def test_rollup_benchmark_checks_its_buckets_and_prints_both_ratios():
    output = run_benchmark("rollup.py", "--events", "20000", "--subjects", "20", database=DATABASE)
    assert re.match(rf"{NUMBER} s", figure(output, "raw GROUP BY"))
    assert re.match(rf"{NUMBER} s", figure(output, "full rollup"))
    assert "equal the GROUP BY's" in figure(output, "check")
    for case in ("new traffic", "late events"):
        assert re.match(
            rf"{NUMBER} s for 200 events", figure(output, f"incremental rollup, {case}")
        )
        assert "MB, of it" in figure(output, f"incremental rollup, {case}")
    assert re.match(r"\d+\.\d\d \(", figure(output, "ratio full rollup/GROUP BY"))
    assert re.match(
        r"\d+\.\d+ = \d+\.\d% for new traffic \(target <= 5%: (met|MISSED)\); \d+\.\d% for late",
        figure(output, "ratio incremental/full"),
    )
