from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.models import Sum

from metering.models import UsageBucket
from metering.partitions import existing_partitions, partitions_ensure_ahead
from metering.services import meter_create
from tests.metering.conftest import cloud_event


@pytest.mark.django_db(transaction=True)
def test_the_rollup_task_runs_on_a_real_worker(ingest, celery_worker_process):
    meter = meter_create(key="calls", event_type="request", aggregation="COUNT")
    ingest(*[cloud_event(i) for i in range(25)])
    outcome = celery_worker_process("metering.usage_rollup")
    assert outcome["events"] == 25
    assert UsageBucket.objects.filter(meter=meter).aggregate(n=Sum("event_count"))["n"] == 25


@pytest.mark.django_db
def test_partitions_are_created_ahead_and_only_once():
    created = partitions_ensure_ahead(now=datetime(2030, 11, 15, tzinfo=UTC))
    assert [m.isoformat() for m in created] == [
        "2030-11-01",
        "2030-12-01",
        "2031-01-01",
        "2031-02-01",
    ]
    assert partitions_ensure_ahead(now=datetime(2030, 11, 20, tzinfo=UTC)) == []
    assert {m.isoformat() for m in existing_partitions()} >= {"2030-11-01", "2031-02-01"}
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM metering_event_p2031_01")
        assert cursor.fetchone() == (0,)
