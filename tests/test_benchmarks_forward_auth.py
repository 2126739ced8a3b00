"""bench/forward_auth.py keeps working: it runs once at a tiny size.

Not a timed test: a slow machine never fails it. It checks that the benchmark runs to
the end (exit code 0: every request through nginx answered 200, the checked ones after a
204 from the forward-auth endpoint; nginx and gunicorn stopped) and prints its figures.
It runs in its own database beside the test database; nginx is installed with apt when
missing, and the test skips, saying why, only when it cannot be.
"""

from __future__ import annotations

import re

import pytest

from tests.benchmark_runs import NUMBER, bench_database, figure, run_benchmark
from tests.nginx import NginxUnavailable, nginx_ensure


def test_forward_auth_benchmark_measures_nginx_alone_and_with_the_check():
    try:
        nginx_ensure()
    except NginxUnavailable as exc:
        pytest.skip(f"nginx cannot be installed here: {exc}")
    output = run_benchmark(
        "forward_auth.py",
        "--rps", "50", "--seconds", "2", "--warmup", "1",
        "--accounts", "8", "--events-per-customer", "20",
        database=bench_database("bench_forward_auth"),
        timeout=300,
    )  # fmt: skip
    latency = rf"p50 {NUMBER} ms, p99 {NUMBER} ms, max {NUMBER} ms at {NUMBER} req/s achieved"
    assert re.match(latency, figure(output, "nginx alone"))
    assert re.match(latency, figure(output, "nginx + forward-auth"))
    assert "0 errors" in figure(output, "nginx + forward-auth")
    assert re.match(rf"p50 {NUMBER}x, p99 {NUMBER}x", figure(output, "ratio forward-auth/alone"))
