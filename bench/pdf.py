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
5. Prints PDFs/s for both, and ``ratio workers/(cores × 1 process)``: how close the
   workers come to the physical limit of every core rendering at the one-process rate
   (the database, Redis and the bench's own polling share those cores). On a machine
   shared with other work, wall-clock rates measure the share of the cores each phase
   got (a phase with more processes gets more of them), so the benchmark also reads CPU
   time from ``/proc``: the CPU per PDF in one process and in the workers (the pool
   processes and their parent), and ``other`` (every other process on the machine,
   including, in the workers' phase, their PostgreSQL backends: Celery closes a task's
   database connection when it ends, so those are gone before they can be read).
   ``ratio by CPU`` is one process's CPU per PDF over the workers': the cost of going
   through Celery, undisturbed by other load.
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
    backend_cpu_seconds,
    bench_database_url,
    bench_lock,
    children_of,
    cpu_delta,
    figure,
    migrate,
    process_cpu_seconds,
    safe_url,
    server_summary,
)


def invoices_make(conn, *, count: int) -> list[str]:
    """``count`` issued invoices (untimed); their ids."""
    from bench.billing_run import AFTER_GRACE, setup
    from billing.invoicing.services import invoices_issue_due, periods_close

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


def one_process(conn, ids: list[str]) -> dict:
    """Render and store every invoice's PDF here, one after the other."""
    from django.utils import timezone

    from billing.documents.pdf import invoice_pdf_bytes, invoice_pdf_store
    from billing.models import Invoice

    invoice_pdf_bytes(invoice=Invoice.objects.get(pk=ids[0]))  # warm-up: fonts, imports
    machine, backends = MachineCpu.read(), backend_cpu_seconds(conn)
    cpu, started = time.process_time(), time.perf_counter()
    size = 0
    for pk in ids:
        stored = invoice_pdf_store(invoice=Invoice(pk=pk), now=timezone.now())
        size += stored.pdf.size
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "bytes": size,
        "cpu": time.process_time() - cpu,
        "db_cpu": cpu_delta(backends, backend_cpu_seconds(conn)),
        "machine": MachineCpu.read() - machine,
    }


def worker_cpu_seconds(worker: subprocess.Popen) -> float:
    """CPU seconds so far of the worker and its pool processes."""
    return sum(process_cpu_seconds(p) for p in [worker.pid, *children_of(worker.pid)])


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
    conn,
    ids: list[str],
    *,
    worker: subprocess.Popen,
    queue: str,
    workers: int,
    log: Path,
    timeout: float,
) -> dict:
    """Send one render task per invoice and wait until every PDF is stored; the steady
    part is timed (and its CPU read) from when the first ``workers`` PDFs are stored."""
    from config.celery import app

    started = time.perf_counter()
    for pk in ids:
        app.send_task("billing.invoice_pdf_render", kwargs={"invoice_id": pk}, queue=queue)
    steady = None
    while True:
        done = pdfs_stored(conn)
        now = time.perf_counter()
        if steady is None and done >= workers:
            steady = {
                "at": now,
                "done": done,
                "cpu": worker_cpu_seconds(worker),
                "machine": MachineCpu.read(),
                "own": time.process_time(),
            }
        if done >= len(ids):
            break
        if now - started > timeout:
            raise SystemExit(
                f"only {done} of {len(ids)} PDFs stored after {timeout:.0f} s; worker log:\n"
                + log.read_text()[-3000:]
            )
        time.sleep(0.02)
    return {
        "seconds": now - steady["at"],
        "pdfs": done - steady["done"],
        "total": now - started,
        "cpu": worker_cpu_seconds(worker) - steady["cpu"],
        "own": time.process_time() - steady["own"],
        "machine": MachineCpu.read() - steady["machine"],
    }


def cpu_line(machine: MachineCpu, parts: dict[str, float], cores: int) -> str:
    """Where the machine's CPU went in a phase; ``other`` is everything not listed."""
    other = max(0.0, machine.busy - sum(parts.values()))
    idle = max(0.0, machine.total - machine.busy)
    listed = ", ".join(f"{name} {seconds:.1f}" for name, seconds in parts.items())
    return f"{listed}, other {other:.1f}, idle {idle:.1f} (CPU s over {cores} cores)"


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

        single = one_process(control, ids)
        single_rate = len(ids) / single["seconds"]
        figure(
            "one process PDFs/s",
            f"{single_rate:.2f} ({len(ids):,} PDFs in {single['seconds']:.2f} s, "
            f"{single['seconds'] / len(ids) * 1000:.0f} ms each, "
            f"{single['bytes'] / len(ids) / 1024:.0f} KB each)",
        )
        figure(
            "  one process CPU s",
            cpu_line(
                single["machine"],
                {"this process": single["cpu"], "PostgreSQL": single["db_cpu"]},
                cores,
            ),
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
        pool = with_workers(
            control,
            ids,
            worker=worker,
            queue=queue,
            workers=args.workers,
            log=log,
            timeout=args.timeout,
        )
        pool_rate = pool["pdfs"] / pool["seconds"] if pool["seconds"] > 0 else float("inf")
        figure(
            "workers PDFs/s",
            f"{pool_rate:.2f} ({args.workers} worker processes; {pool['pdfs']:,} PDFs in "
            f"{pool['seconds']:.2f} s after the first {len(ids) - pool['pdfs']}; "
            f"all {len(ids):,} in {pool['total']:.2f} s)",
        )
        figure(
            "  workers CPU s",
            cpu_line(pool["machine"], {"workers": pool["cpu"], "bench": pool["own"]}, cores),
        )
        single_cpu = single["cpu"] / len(ids) * 1000
        pool_cpu = pool["cpu"] / pool["pdfs"] * 1000
        figure(
            "CPU per PDF",
            f"one process {single_cpu:.0f} ms (+ {single['db_cpu'] / len(ids) * 1000:.1f} ms "
            f"PostgreSQL), worker processes {pool_cpu:.0f} ms",
        )
        ratio = pool_rate / (cores * single_rate)
        figure(
            "ratio workers/(cores × 1 process)",
            f"{ratio:.2f} ({pool_rate:.2f} against {cores} × {single_rate:.2f} PDFs/s)",
        )
        if args.workers != cores:
            figure(
                "ratio workers/(workers × 1 process)",
                f"{pool_rate / (args.workers * single_rate):.2f}",
            )
        figure(
            "ratio by CPU",
            f"{single_cpu / pool_cpu:.2f} (CPU per PDF in one process over the workers'; "
            "1.00: Celery costs nothing)",
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
