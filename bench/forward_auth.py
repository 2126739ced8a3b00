#!/usr/bin/env python
"""Benchmark of gateway forward-auth through a real nginx, beside nginx answering alone.

    .venv/bin/python bench/forward_auth.py [--rps 300] [--seconds 8] [--accounts 100]

1. Sets up the entitlement benchmark's data (bench/entitlements.py: accounts,
   subsidiaries, one gateway consumer per customer, plans with hard and soft limits,
   a month of rolled-up usage and fresh events not rolled up) in its own database.
2. Starts gunicorn (the product, ``bench.entitlements_settings``) and nginx (Debian's,
   installed with apt when missing, as the tests do) on loopback, nginx with two
   locations that serve the same small static file:
   - ``/static``: nginx alone;
   - ``/checked/<consumer>``: ``auth_request`` to ``GET /api/v1/gateways/authorize
     ?feature=api_calls`` first, the subject taken from the path (the configuration of
     docs/gateways.md, with the subject from the path instead of a header because the
     load generator sends the same headers with every request).
3. Keeps the consumers whose check answers 204 (a customer over its hard limit would
   answer 403, which the load would count as an error), asks each once (cold contexts
   apart), then runs bench/entitlements.py's open-loop load (``--rps`` fixed, latency
   from the instant each request was due) against ``/static`` and then ``/checked/…``
   for ``--seconds`` each, and prints p50/p99 and the ratio.

Stops nginx and gunicorn at the end, also on error or SIGTERM. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from bench.common import (  # noqa: E402
    Gunicorn,
    add_database_arguments,
    bench_database_url,
    bench_lock,
    checkpoint,
    figure,
    migrate,
    safe_url,
)
from bench.entitlements import (  # noqa: E402
    SETTINGS,
    api_key_for_bench,
    cache_forget,
    django_setup,
    prime,
    redis_url_for_bench,
    run_phase,
    setup,
)
from tests.nginx import free_port, nginx_conf, nginx_ensure, nginx_running  # noqa: E402

DEFAULT_DATABASE = "billing_bench_forward_auth"
FEATURE = "api_calls"
MARKER = b'"ok"'

SERVERS = """
    map $request_uri $consumer {{
        ~^/checked/(?<c>[^/?]+) $c;
        default "";
    }}
    server {{
        listen 127.0.0.1:{port} backlog=2048;
        keepalive_requests 1000000;
        root {html};

        location = /static {{
            try_files /ok.json =404;
        }}

        location /checked/ {{
            auth_request /_authorize;
            try_files /ok.json =404;
        }}

        location = /_authorize {{
            internal;
            proxy_pass http://billing/api/v1/gateways/authorize?feature={feature};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Host 127.0.0.1;
            proxy_set_header X-Billing-Subject $consumer;
            proxy_set_header Authorization "Bearer {key}";
        }}
    }}
    upstream billing {{
        server 127.0.0.1:{billing_port};
        keepalive 64;
    }}
"""


class _Through:
    """What ``run_phase`` needs of a server: the port the load goes to (nginx's) and the
    CPU of the product's workers (gunicorn's)."""

    def __init__(self, port: int, server: Gunicorn) -> None:
        self.port, self.server = port, server

    def worker_cpu_seconds(self) -> float:
        return self.server.worker_cpu_seconds()


def consumers_allowed(conn, *, limit: int) -> tuple[list[str], int]:
    """Consumers whose check answers 204 now (computed in this process), and how many
    were refused."""
    from billing.entitlements.gateway import gateway_authorize

    keys = [
        row[0]
        for row in conn.execute(
            "SELECT consumer_key FROM customers_consumermapping "
            "WHERE valid_to IS NULL ORDER BY consumer_key"
        )
    ]
    now = datetime.now(UTC)
    allowed = [k for k in keys if gateway_authorize(subject=k, feature_key=FEATURE, at=now).allowed]
    return allowed[:limit], len(keys) - len(allowed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rps", type=int, default=300, help="requests per second offered")
    parser.add_argument("--seconds", type=float, default=8, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured seconds first")
    parser.add_argument("--accounts", type=int, default=100, help="billing accounts")
    parser.add_argument("--events-per-customer", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn gthread workers")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker")
    parser.add_argument("--clients", type=int, default=1, help="load generator processes")
    add_database_arguments(parser)
    parser.set_defaults(database=DEFAULT_DATABASE)
    args = parser.parse_args(argv)
    if args.rps < 1 or args.seconds <= 0 or args.accounts < 1 or args.events_per_customer < 1:
        parser.error("--rps, --seconds, --accounts and --events-per-customer must be positive")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    nginx_ensure()
    url = bench_database_url(database_url=args.database_url, database=args.database)
    migrated = migrate(url)
    redis_url = redis_url_for_bench()
    django_setup(url)
    control = psycopg.connect(url, autocommit=True)
    bench_lock(control, args.database)
    print(
        f"== bench/forward_auth: nginx auth_request to the forward-auth check at "
        f"{args.rps:,} requests/s for {args.seconds:g} s (after {args.warmup:g} s of "
        f"warm-up), beside nginx serving the same file alone; {args.accounts:,} accounts; "
        f"gunicorn {args.workers} gthread workers x {args.threads} threads ==",
        flush=True,
    )
    figure("database", f"{safe_url(url)} (migrated in {migrated:.1f} s)")
    made = setup(
        control,
        accounts=args.accounts,
        per_customer=args.events_per_customer,
        now=datetime.now(UTC),
    )
    token = api_key_for_bench(control)
    cache_forget(redis_url)
    consumers, refused = consumers_allowed(control, limit=10_000)
    if not consumers:
        raise SystemExit("no consumer has access to api_calls: nothing to measure")
    figure(
        "setup",
        f"{made['accounts']:,} accounts, {made['customers']:,} customers, "
        f"{made['events']:,} events rolled up + {made['fresh']:,} not; "
        f"{len(consumers):,} consumers with access checked, {refused:,} refused left out",
    )
    rng = random.Random(7)
    count = max(1000, int(args.rps * (args.seconds + args.warmup)))
    paths = [f"/checked/{rng.choice(consumers)}" for _ in range(count)]
    checkpoint(control)

    work = Path(tempfile.mkdtemp(prefix="bench-forward-auth-"))
    (work / "html").mkdir()
    (work / "html" / "ok.json").write_text('"ok"\n')
    log = work / "gunicorn.log"
    server = Gunicorn(
        url=url,
        workers=args.workers,
        log=log,
        options=(
            "--worker-class", "gthread", "--threads", str(args.threads),
            "--keep-alive", "75", "--backlog", "2048",
        ),
        env={"DJANGO_SETTINGS_MODULE": SETTINGS, "REDIS_URL": redis_url},
    )  # fmt: skip
    port = free_port()
    try:
        server.start()
        conf = nginx_conf(
            prefix=work / "nginx",
            port=port,
            servers=SERVERS.format(
                port=port,
                html=work / "html",
                feature=FEATURE,
                key=token,
                billing_port=server.port,
            ),
        )
        with nginx_running(prefix=work / "nginx", conf=conf, port=port):
            through = _Through(port, server)
            common = {
                "server": through, "token": token, "rate": args.rps, "warmup": args.warmup,
                "seconds": args.seconds, "clients": args.clients, "control": control,
                "redis_url": redis_url, "marker": MARKER,
            }  # fmt: skip
            alone = run_phase(name="nginx alone", paths=["/static"], **common)
            primed, _cold = prime(port=port, token=token, paths=sorted(set(paths)))
            checked = run_phase(name="forward-auth", paths=paths, **common)
    except BaseException:
        if log.exists():
            print(f"gunicorn's log:\n{log.read_text()[-3000:]}", file=sys.stderr)
        nginx_log = work / "nginx" / "error.log"
        if nginx_log.exists():
            print(f"nginx's error log:\n{nginx_log.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    for phase in (alone, checked):
        if phase.errors:
            print(f"{phase.name}: first errors: {phase.errors[:5]}", file=sys.stderr)
    figure("nginx alone", alone.line())
    figure("nginx + forward-auth", checked.line())
    figure(
        "ratio forward-auth/alone",
        f"p50 {checked.p(checked.latencies, 50) / alone.p(alone.latencies, 50):.1f}x, "
        f"p99 {checked.p(checked.latencies, 99) / alone.p(alone.latencies, 99):.1f}x",
    )
    ms = 1000
    figure(
        "added by the check",
        f"p50 {(checked.p(checked.latencies, 50) - alone.p(alone.latencies, 50)) * ms:.2f} ms, "
        f"p99 {(checked.p(checked.latencies, 99) - alone.p(alone.latencies, 99)) * ms:.2f} ms",
    )
    figure("first check of each consumer", f"{primed:.1f} s for all, before the load")
    control.close()
    failed = alone.errors or checked.errors or not alone.drained or not checked.drained
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
