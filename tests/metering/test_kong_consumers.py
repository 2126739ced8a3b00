"""Kong consumers imported from the Admin API (a local fake of its pagination) as
consumer keys to link, and what the admin shows of them."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from customers.services import consumer_mapping_create
from metering.gateways.consumers import KongAdminError, kong_consumers_import
from metering.gateways.kong.log import KongOptions, kong_log_events
from metering.models import KongConsumer
from tests.factories import CustomerFactory
from tests.metering.conftest import cloud_event
from tests.metering.fake_kong_admin import FakeKongAdmin, kong_consumer

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
TOKEN = "kong-admin-secret"


def text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.fixture
def kong():
    consumers = [
        kong_consumer(1, custom_id="acme-prod"),  # traffic carries the custom_id
        kong_consumer(2),  # no custom_id: the username
        kong_consumer(3, username=None),  # neither: Kong's id
        kong_consumer(4, custom_id="globex"),
        kong_consumer(5),
    ]
    fake = FakeKongAdmin(consumers=consumers, token=TOKEN).start()
    yield fake
    fake.stop()


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("kong_consumers_import", *args, stdout=out)
    return out.getvalue()


def test_an_import_reads_every_page_and_keys_consumers_by_the_subject_of_their_traffic(kong):
    result = kong_consumers_import(admin_url=kong.url, token=TOKEN, page_size=2, now=NOW)

    assert result.pages == 3
    assert [p.split("?")[0] for p in kong.requests] == ["/consumers"] * 3
    assert sorted(result.created) == sorted(
        ["acme-prod", "user-2", "00000000-0000-4000-8000-000000000003", "globex", "user-5"]
    )
    acme = KongConsumer.objects.get(key="acme-prod")
    assert (acme.username, acme.custom_id, acme.kong_id) == (
        "user-1",
        "acme-prod",
        "00000000-0000-4000-8000-000000000001",
    )
    assert acme.tags == ["team-a"] and acme.kong_created_at == datetime.fromtimestamp(
        1700000001, tz=UTC
    )
    # the same consumer in a Kong log becomes an event with that subject
    log = {
        "request": {"id": "r1", "method": "GET", "uri": "/x"},
        "response": {"status": 200},
        "started_at": int(NOW.timestamp() * 1000) - 60_000,
        "consumer": kong.consumers[0],
    }
    events = kong_log_events(log, options=KongOptions(source="kong"), received_at=NOW)
    assert events[0].subject == "acme-prod"


def test_the_command_prints_counts_and_a_second_run_changes_nothing(kong, monkeypatch):
    monkeypatch.setenv("KONG_ADMIN_TOKEN", TOKEN)

    first = run(kong.url, "--page-size", "2")
    again = run(kong.url, "--page-size", "2")
    kong.consumers[1]["tags"] = ["team-b"]
    changed = run(kong.url + "/", "--token", TOKEN, "--page-size", "2")

    assert "5 created, 0 updated, 0 unchanged (3 pages from http://127.0.0.1:" in first
    assert "created: acme-prod" in first
    assert "0 created, 0 updated, 5 unchanged (3 pages" in again
    assert "0 created, 1 updated, 4 unchanged" in changed and "updated: user-2" in changed
    assert KongConsumer.objects.count() == 5
    assert KongConsumer.objects.get(key="user-2").tags == ["team-b"]


def test_the_token_goes_in_the_header_named(kong):
    kong.token_header = "X-Admin-Key"

    with pytest.raises(CommandError, match="refused the request \\(401\\)"):
        run(kong.url, "--token", TOKEN)
    out = run(kong.url, "--token", TOKEN, "--token-header", "X-Admin-Key")

    assert "5 created" in out


def test_a_refused_token_imports_nothing(kong):
    with pytest.raises(CommandError, match="refused the request \\(401\\).*admin token"):
        run(kong.url, "--token", "wrong")
    assert not KongConsumer.objects.exists()


def test_a_bad_page_after_good_ones_imports_nothing(kong):
    kong.broken_page = 2

    with pytest.raises(KongAdminError, match="not JSON"):
        kong_consumers_import(admin_url=kong.url, token=TOKEN, page_size=2, now=NOW)

    assert len(kong.requests) == 3
    assert not KongConsumer.objects.exists()


def test_an_admin_api_that_is_not_there_is_a_clear_error(kong):
    url = kong.url
    kong.stop()

    with pytest.raises(CommandError, match="Could not reach the Kong Admin API"):
        run(url, "--token", TOKEN)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "kong-admin:8001", "ftp://h/", ""])
def test_only_http_urls_are_asked(url):
    with pytest.raises(CommandError, match="not an http\\(s\\) URL"):
        run(url)


def test_an_admin_api_under_a_path_is_followed_page_by_page():
    fake = FakeKongAdmin(consumers=[kong_consumer(n) for n in range(3)], prefix="/kong-admin")
    fake.start()
    try:
        result = kong_consumers_import(admin_url=fake.url, page_size=1, now=NOW)
    finally:
        fake.stop()
    assert (result.pages, len(result.created)) == (3, 3)


def test_consumers_with_the_same_key_are_reported_not_merged():
    fake = FakeKongAdmin(
        consumers=[kong_consumer(1, custom_id="shared"), kong_consumer(2, username="shared")]
    ).start()
    try:
        result = kong_consumers_import(admin_url=fake.url, now=NOW)
    finally:
        fake.stop()
    assert result.created == ("shared",)
    assert "same key 'shared'" in result.skipped[0].reason
    assert KongConsumer.objects.get().kong_id == "00000000-0000-4000-8000-000000000001"


# ------------------------------------------------------------------ admin


def test_the_admin_imports_from_a_form_and_lists_what_is_linked(admin_client, kong):
    url = reverse("admin:metering_kongconsumer_import")
    assert "Kong Admin API URL" in admin_client.get(url).content.decode()
    consumer_mapping_create(
        consumer_key="acme-prod",
        customer=CustomerFactory(key="acme"),
        valid_from=datetime(2026, 1, 1, tzinfo=UTC),
    )

    response = admin_client.post(
        url,
        {"admin_url": kong.url, "token_header": "Kong-Admin-Token", "token": TOKEN},
        follow=True,
    )

    body = response.content.decode()
    assert "Kong consumers: 5 created, 0 updated, 0 unchanged" in text(body)
    assert response.redirect_chain[-1][0].endswith("?linked=no")
    listed = text(re.search(r'<table id="result_list">(.*?)</table>', body, re.S).group(1))
    assert "user-2 not linked · Map to a customer" in listed
    assert "acme-prod" not in listed  # linked, filtered out
    assert reverse("admin:customers_consumermapping_add") + "?consumer_key=user-5" in body
    everything = text(
        admin_client.get(reverse("admin:metering_kongconsumer_changelist")).content.decode()
    )
    assert "acme-prod linked to acme" in everything


def test_the_admin_import_says_why_nothing_was_imported(admin_client, kong):
    response = admin_client.post(
        reverse("admin:metering_kongconsumer_import"),
        {"admin_url": kong.url, "token_header": "Kong-Admin-Token", "token": "wrong"},
    )

    assert response.status_code == 200
    assert "Nothing imported: The Kong Admin API refused the request (401)" in text(
        response.content.decode()
    )
    assert not KongConsumer.objects.exists()


def test_the_admin_import_refuses_a_url_that_is_not_http(admin_client):
    response = admin_client.post(
        reverse("admin:metering_kongconsumer_import"),
        {"admin_url": "file:///etc/passwd", "token_header": "Kong-Admin-Token"},
    )
    assert "is not an http(s) URL" in text(response.content.decode())


def test_unattributed_usage_tells_known_kong_consumers_from_unknown_subjects(
    admin_client, kong, ingest
):
    kong_consumers_import(admin_url=kong.url, token=TOKEN, now=NOW)
    ingest(cloud_event(1, subject="user-2"), cloud_event(2, subject="typo-gw"))

    body = admin_client.get(reverse("admin:metering_unattributed_usage") + "?since=all")

    rows = {
        row.split()[0]: row
        for row in (text(r) for r in re.findall(r"<tr>(.*?)</tr>", body.content.decode(), re.S))
    }
    assert "known" in rows["user-2"] and "not imported" not in rows["user-2"]
    assert "not imported" in rows["typo-gw"]


def test_a_cloud_metadata_address_is_never_asked():
    with pytest.raises(CommandError, match="Refused to call http://169.254.169.254/consumers"):
        run("http://169.254.169.254", "--token", TOKEN)
