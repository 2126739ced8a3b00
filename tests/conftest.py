from __future__ import annotations

import pytest


@pytest.fixture
def api_client_for(db):
    """An API client authenticated with a new key holding ``scopes``."""

    from rest_framework.test import APIClient

    from core.services import api_key_create

    def make(*scopes: str) -> APIClient:
        issued = api_key_create(name="test", scopes=scopes or ["read", "write", "ingest"])
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
        client.api_key = issued.api_key
        return client

    return make


@pytest.fixture
def api(api_client_for):
    """A client whose key holds every scope."""
    return api_client_for("ingest", "read", "write")


@pytest.fixture(autouse=True, scope="session")
def _tasks_run_in_process(django_db_setup):
    """Tasks run in-process unless a test is about the queue (those start a real worker),
    also when REDIS_URL is set (CI), where the settings would send them to Redis."""
    from config.celery import app

    app.conf.update(task_always_eager=True, task_eager_propagates=True)


@pytest.fixture(autouse=True, scope="session")
def _clock_moved_everywhere(django_db_setup, django_db_blocker):
    """Under ``bin/test-at`` (BILLING_TEST_CLOCK holds the instant, in Unix seconds), the
    run proves that the clock it tests with is the moved one, in Python and in the
    database alike: a run whose clock did not move would pass for the wrong reason."""
    import os
    from datetime import UTC, datetime, timedelta

    expected = os.environ.get("BILLING_TEST_CLOCK")
    if not expected:
        return
    from django.db import connection

    instant = datetime.fromtimestamp(int(expected), UTC)
    clocks = [("Python", datetime.now(UTC))]
    # (a session without a database test sets no test database up: nothing to ask there)
    if connection.settings_dict["NAME"] == connection.creation._get_test_db_name():
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute("SELECT now()")
            clocks.append(("PostgreSQL", cursor.fetchone()[0]))
    for name, now in clocks:
        if not instant <= now < instant + timedelta(hours=1):
            pytest.exit(f"{name}'s clock reads {now}, not the moved clock ({instant}).", 3)


@pytest.fixture(autouse=True)
def _clean_event_store(request):
    """Transactional tests commit; Django's flush empties only the tables of managed
    models, so empty the event store (a partitioned table and its key table) too."""
    yield
    marker = request.node.get_closest_marker("django_db")
    if marker and marker.kwargs.get("transaction"):
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE metering_event, metering_eventkey")


@pytest.fixture
def celery_worker_process(transactional_db, tmp_path):
    """A real Celery worker on Redis, in its own process, using the test database.

    Yields a function that enqueues a task by name and waits for it to finish. Uses
    REDIS_URL when set, otherwise an embedded Redis under var/.
    """
    import os
    import subprocess
    import sys
    import time
    import uuid

    from celery import Celery
    from django.conf import settings
    from django.db import connection

    from config.embedded import embedded_redis_url
    from config.settings.base import _celery_url

    redis_url = settings.REDIS_URL or embedded_redis_url()
    db = connection.settings_dict
    host = db["HOST"] or ""
    database_url = (
        f"postgres://{db['USER']}@/{db['NAME']}?host={host}"
        if host.startswith("/")
        else f"postgres://{db['USER']}@{host}:{db['PORT'] or 5432}/{db['NAME']}"
    )
    queue = f"test-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "CELERY_RESULT_BACKEND": _celery_url(redis_url),
    }
    log = tmp_path / "worker.log"
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
            "solo",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "INFO",
        ],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        cwd=settings.BASE_DIR,
    )
    # not the current app: shared tasks must keep running eagerly on the project app
    client = Celery(
        "tests", broker=_celery_url(redis_url), backend=_celery_url(redis_url), set_as_current=False
    )

    def run(task_name: str, timeout: float = 60, **kwargs):
        result = client.send_task(task_name, kwargs=kwargs, queue=queue)
        return result.get(timeout=timeout)

    deadline = time.monotonic() + 60
    while "ready" not in log.read_text() and time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"The Celery worker exited:\n{log.read_text()}")
        time.sleep(0.2)
    try:
        yield run
    finally:
        worker.terminate()
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            worker.kill()
        client.close()


@pytest.fixture
def ingest(db):
    """Store events (dicts) through the same parse and store path as the endpoint."""
    import json

    from metering.ingest import events_parse
    from metering.services import events_ingest
    from tests.metering.conftest import RECEIVED

    def store(*events: dict, received_at=RECEIVED) -> int:
        parsed = events_parse(json.dumps(list(events)).encode(), batch=True, max_events=100_000)
        assert not parsed.errors, parsed.errors
        return events_ingest(events=parsed.events, received_at=received_at)

    return store


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path):
    """Rendered PDFs and exported files go to a temporary folder, not var/media."""
    settings.MEDIA_ROOT = tmp_path / "media"
