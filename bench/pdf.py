#!/usr/bin/env python
"""Benchmark of invoice PDF rendering: one process, then Celery workers on every core.

    .venv/bin/python bench/pdf.py [--invoices 200] [--workers CORES]

1. Works in its own database (``billing_bench`` on the server of ``--database-url`` /
   ``DATABASE_URL`` / the embedded server), migrated with ``manage.py migrate``; PDFs
   are stored under a temporary ``MEDIA_ROOT``, removed at the end.
2. Makes ``--invoices`` issued invoices the way ``bench/billing_run.py`` does (three
   plans: flat fees, unit, graduated with its tier breakdown, package and minimum
   commitment; every tenth invoice consolidated with a subsidiary), untimed.
3. One process: ``invoice_pdf_store`` (render with WeasyPrint, store the file, record
   it on the invoice) for every invoice, one after the other, after one warm-up render.
   That is the rate of one core.
4. Workers: the PDFs are cleared, a real Celery worker is started on Redis
   (``REDIS_URL``, else the embedded Redis) with ``--pool prefork --concurrency
   --workers`` (default: the number of cores) on a queue of its own, and one
   ``billing.invoice_pdf_render`` task per invoice is sent, as issuing sends them. The
   figure is the steady rate: PDFs stored per second from the moment the first
   ``--workers`` PDFs are stored (so, about, the first render of each worker process,
   which loads WeasyPrint and the fonts, is left out, as the warm-up render is in the
   one-process figure) to the last.
5. Prints PDFs/s for both, and ``ratio workers/(cores × one process)``: how close the
   workers come to the physical limit of every core rendering at the one-process rate
   (the database, Redis and the bench's own polling share those cores).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from bench.common import (  # noqa: E402
    MachineCpu,
    add_database_arguments,
    bench_database_url,
    bench_lock,
    figure,
    migrate,
    safe_url,
    server_summary,
)


def invoices_make(conn, *, count: int) -> list[str]:
    """``count`` issued invoices (untimed); their ids."""
    from billing.invoicing import invoices_issue_due, periods_close
    from bench.billing_run import AFTER_GRACE, setup

    setup(conn, accounts=count, per_account=20)
    periods_close(now=AFTER_GRACE)
    issued = invoices_issue_due(now=AFTER_GRACE)
    if issued != count:
        raise SystemExit(f"issued {issued} invoices, expected {count}")
    return [
        str(row[0])
        for row in conn.execute(
            "SELECT id FROM billing_invoice WHERE status = 'issued' ORDER BY number"
        )
    ]


def pdfs_clear(conn, media: Path) -> None:
    conn.execute("UPDATE billing_invoice SET pdf = '', pdf_rendered_at = NULL")
    shutil.rmtree(media / "invoices", ignore_errors=True)


def pdfs_stored(conn) -> int:
    return conn.execute("SELECT count(*) FROM billing_invoice WHERE pdf <> ''").fetchone()[0]


def one_process(ids: list[str]) -> tuple[float, int]:
    """Render and store every invoice's PDF here, one after the other; (seconds, bytes)."""
    from django.utils import timezone

    from billing.documents import invoice_pdf_bytes, invoice_pdf_store
    from billing.models import Invoice

    invoice_pdf_bytes(invoice=Invoice.objects.get(pk=ids[0]))  # warm-up: fonts, imports
    started = time.perf_counter()
    size = 0
    for pk in ids:
        stored = invoice_pdf_store(invoice=Invoice(pk=pk), now=timezone.now())
        size += stored.pdf.size
    return time.perf_counter() - started, size


def worker_start(*, url: str, redis_url: str, media: Path, queue: str, concurrency: int, log: Path):
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "REDIS_URL": redis_url,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "MEDIA_ROOT": str(media),
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-Q",
            queue,
            "--pool",
            "prefork",
            "--concurrency",
            str(concurrency),
            "--prefetch-multiplier",
            "1",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "INFO",
            "-n",
            f"{queue}@%h",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90
    while "ready" not in log.read_text():
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            raise SystemExit(f"the Celery worker did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    return worker


def worker_stop(worker: subprocess.Popen) -> None:
    worker.terminate()
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def with_workers(
    conn, ids: list[str], *, queue: str, workers: int, log: Path, timeout: float
) -> tuple[float, int, float, MachineCpu]:
    """Send one render task per invoice; (steady seconds, PDFs in them, all seconds, CPU)."""
    from config.celery import app

    cpu = MachineCpu.read()
    started = time.perf_counter()
    for pk in ids:
        app.send_task("billing.invoice_pdf_render", kwargs={"invoice_id": pk}, queue=queue)
    steady_from, steady_done = None, 0
    while True:
        done = pdfs_stored(conn)
        now = time.perf_counter()
        if steady_from is None and done >= workers:
            steady_from, steady_done = now, done
        if done >= len(ids):
            break
        if now - started > timeout:
            raise SystemExit(
                f"only {done} of {len(ids)} PDFs stored after {timeout:.0f} s; worker log:\n"
                + log.read_text()[-3000:]
            )
        time.sleep(0.02)
    return now - steady_from, done - steady_done, now - started, MachineCpu.read() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invoices", type=int, default=200)
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="worker processes (cores)"
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds, for the workers")
    add_database_arguments(parser)
    args = parser.parse_args(argv)
    if args.invoices < 2 * args.workers or args.workers < 1:
        parser.error("--invoices must be at least twice --workers, and --workers positive")

    from bench.billing_run import django_setup, redis_url_for_bench

    url = bench_database_url(database_url=args.database_url, database=args.database)
    migrated = migrate(url)
    redis_url = redis_url_for_bench()
    media = Path(tempfile.mkdtemp(prefix="bench-pdf-"))
    os.environ["MEDIA_ROOT"] = str(media)
    django_setup(url, redis_url)
    from config.celery import app

    queue = f"bench-pdf-{uuid.uuid4().hex[:8]}"
    app.conf.task_default_queue = f"{queue}-setup"  # what issuing enqueues: dropped
    cores = os.cpu_count() or 1
    control = psycopg.connect(url, autocommit=True)
    bench_lock(control, args.database)
    log = media / "worker.log"
    worker = None
    try:
        print(
            f"== bench/pdf: {args.invoices:,} invoices, one process then a Celery worker "
            f"with {args.workers} processes, {cores} CPU cores ==",
            flush=True,
        )
        figure("database", f"{safe_url(url)} (migrated in {migrated:.1f} s)")
        figure("server", server_summary(control))
        ids = invoices_make(control, count=args.invoices)
        lines = control.execute("SELECT count(*) FROM billing_invoiceline").fetchone()[0]
        figure(
            "invoices (untimed)",
            f"{len(ids):,} issued, {lines / len(ids):.1f} lines each on average",
        )
        import redis

        redis.Redis.from_url(redis_url).delete(f"{queue}-setup")

        seconds, size = one_process(ids)
        single = len(ids) / seconds
        figure(
            "one process PDFs/s",
            f"{single:.2f} ({len(ids):,} PDFs in {seconds:.2f} s, "
            f"{seconds / len(ids) * 1000:.0f} ms each, {size / len(ids) / 1024:.0f} KB each)",
        )
        if pdfs_stored(control) != len(ids):
            raise SystemExit("not every invoice got its PDF in one process")

        pdfs_clear(control, media)
        worker = worker_start(
            url=url,
            redis_url=redis_url,
            media=media,
            queue=queue,
            concurrency=args.workers,
            log=log,
        )
        steady, done, total, cpu = with_workers(
            control, ids, queue=queue, workers=args.workers, log=log, timeout=args.timeout
        )
        parallel = done / steady if steady > 0 else float("inf")
        figure(
            "workers PDFs/s",
            f"{parallel:.2f} ({args.workers} worker processes; {done:,} PDFs in {steady:.2f} s "
            f"after each process's first; all {len(ids):,} in {total:.2f} s)",
        )
        busy = cpu.busy / cpu.total if cpu.total else 0
        figure("machine CPU while workers ran", f"{busy:.0%} busy over {cores} cores")
        ratio = parallel / (cores * single)
        figure(
            "ratio workers/(cores × one process)",
            f"{ratio:.2f} ({parallel:.2f} against {cores} × {single:.2f})",
        )
        if args.workers != cores:
            figure(
                "ratio workers/(workers × one process)",
                f"{parallel / (args.workers * single):.2f}",
            )
    finally:
        if worker is not None:
            worker_stop(worker)
        import redis

        redis.Redis.from_url(redis_url).delete(queue, f"{queue}-setup")
        control.close()
        shutil.rmtree(media, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
