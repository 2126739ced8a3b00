"""Load the demo: an API and AI business with three plans, an enterprise group on NetSuite,
a customer debited by ACH, self-service customers on Stripe and about a million usage
events over recent months; then bill it so that there are issued invoices with PDFs,
settlements in several states, ACH files and drafts waiting for review.

Safe to run again: a second run applies the same catalog (nothing changes), generates
no events and only runs the billing clock up to now.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager

from django.core.management.base import BaseCommand
from django.utils import timezone

from billing.run import billing_run, counts_text
from config.celery import app
from demo.models import DemoLoad
from demo.services import (
    ach_history,
    billing_history,
    demo_catalog_apply,
    demo_summary,
    demo_usage_generate,
    netsuite_refusal_history,
    stripe_paid_history,
    usage_rollup_complete,
)
from rails.outbox import settlements_drive_due

EVENTS = 1_000_000


@contextmanager
def _tasks_kept_in_process():
    """Send no task to the workers from this process: each step renders PDFs and drives
    settlements itself at the instant it simulates (the billing clock does both), so the
    tasks that issuing queues would only repeat them at the wrong time. The worker and
    the beat started after the load take over from the present on."""
    saved = {key: app.conf[key] for key in ("task_always_eager", "broker_url")}
    app.conf.update(task_always_eager=False, broker_url="memory://localhost/")
    try:
        yield
    finally:
        app.conf.update(saved)


@contextmanager
def _quiet():
    """PDF rendering and the rails log every step at INFO: keep the steps readable."""
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


class Command(BaseCommand):
    help = (
        "Load the demo data set (catalog, customers, about a million events) and bill it: "
        "issued invoices with PDFs, settlements in several states, ACH files and drafts "
        "in their grace period. Running it again does nothing heavy."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--events",
            type=int,
            default=EVENTS,
            help=f"How many usage events to generate on the first run (default {EVENTS:,}).",
        )

    def handle(self, *args, events: int, **options):
        with _tasks_kept_in_process(), _quiet():
            self._load(events=events)

    def _load(self, *, events: int) -> None:
        started = time.monotonic()
        now = timezone.now()
        state = DemoLoad.objects.first() or DemoLoad(reference_time=now)
        # The catalog's dates are relative to the first load, so a later run applies the
        # same file and changes nothing.
        reference = state.reference_time

        with self._step("catalog and customers"):
            report = demo_catalog_apply(reference=reference)
            self._note(f"{len(report.changes)} change(s)")

        if not state.events_loaded:
            with self._step("usage events"):
                state.events_loaded = demo_usage_generate(reference=reference, total=events)
                state.save()
                self._note(f"{state.events_loaded:,} events generated")

        with self._step("usage rollup"):
            rollup = usage_rollup_complete(now=now)
            self._note(f"{rollup.events:,} events rolled up")
            if rollup.waited_seconds:
                self._note(
                    f"waited {rollup.waited_seconds:.0f} s for older transactions on the "
                    "server to end"
                )
            if not rollup.complete:
                self.stderr.write(
                    "    Some events are not rolled up yet (a long transaction on the server "
                    "holds the rollup back): the first invoices may miss part of their usage."
                )

        if state.history_made_at is None:
            with self._step("billing history"):
                runs = billing_history(until=reference)
                self._note(f"the billing clock ran at {runs} instants")
            with self._step("settlement states"):
                for line in ach_history(now=now):
                    self._note(line)
                self._note(f"Stripe: {stripe_paid_history(now=now)} invoice(s) paid by webhook")
                for line in netsuite_refusal_history(now=now):
                    self._note(line)
                outcomes = settlements_drive_due(now=now)
                self._note(f"settlements due now driven: {counts_text(outcomes)}")
            state.history_made_at = now
            state.save()

        with self._step("billing run (now)"):
            result = billing_run(now=now)
            self._note(
                f"{result.drafts_created} draft(s) made, {result.invoices_issued} issued, "
                f"{result.pdfs_rendered} PDF(s) rendered"
            )

        for line in demo_summary(now=now):
            self.stdout.write(f"  {line}")
        self.stdout.write(f"Demo data ready in {time.monotonic() - started:.1f} s.")

    @contextmanager
    def _step(self, name: str):
        started = time.monotonic()
        self.stdout.write(f"  {name} …")
        yield
        self.stdout.write(f"    done in {time.monotonic() - started:.1f} s")

    def _note(self, text: str) -> None:
        self.stdout.write(f"    {text}")
