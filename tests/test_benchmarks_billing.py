"""The billing benchmarks keep working: ``bench/billing_run.py`` and ``bench/pdf.py`` run
once each at a tiny size (about 40 s for both).

Like ``tests/test_benchmarks.py``, these are not timed tests: a slow machine never fails
them. They check that a benchmark runs to the end (exit code 0, its own checks passed:
one invoice per account numbered without a gap, every PDF stored, the worker stopped)
and prints its figures. They run in a benchmark database of their own beside the test
database, on the server of DATABASE_URL (or the embedded one).
"""

from __future__ import annotations

import re

from tests.benchmark_runs import NUMBER, bench_database, figure, run_benchmark

DATABASE = bench_database("bench_billing")


def test_billing_run_benchmark_issues_every_account_and_prints_memory_and_its_ratio():
    output = run_benchmark(
        "billing_run.py", "--accounts", "30", "--events-per-account", "5", database=DATABASE
    )
    for size in ("3", "30"):
        assert re.match(
            rf"{NUMBER} s, {NUMBER} accounts/s, {NUMBER} ms per account",
            figure(output, f"billing run {size}"),
        )
        assert re.match(rf"{NUMBER} MB$", figure(output, f"peak RSS {size}"))
        assert re.match(rf"{size} invoices \(total", figure(output, f"written {size}"))
    assert f"; {30:,} issued" in figure(output, "run after grace 30")
    assert re.match(rf"peak RSS {NUMBER} MB after 3 accounts", figure(output, "memory"))
    assert re.match(rf"{NUMBER} s for the same", figure(output, "set-based SQL"))
    assert re.match(rf"{NUMBER} \(", figure(output, "ratio billing run/set-based SQL"))
    assert "projected" in figure(output, "target")


def test_pdf_benchmark_renders_in_one_process_and_in_workers_and_prints_the_ratio():
    output = run_benchmark("pdf.py", "--invoices", "4", "--workers", "2", database=DATABASE)
    assert re.match(rf"{NUMBER} \(4 PDFs in", figure(output, "one process PDFs/s"))
    assert re.match(rf"{NUMBER} \(2 worker processes", figure(output, "workers PDFs/s"))
    assert re.match(r"\d+\.\d\d \(", figure(output, "ratio workers/(cores × 1 process)"))
