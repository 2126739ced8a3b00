"""Browser tests: headless Chromium (Debian's package, through Selenium) against
pytest-django's live server, on small data sets made with the product's services.

The tests are skipped, saying why, only when Chromium cannot be installed or started on
this machine; anything else that goes wrong fails them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from tests.browser.chromium import (
    ChromiumUnavailable,
    chromium_ensure,
    chromium_start,
    chromium_stop,
    downloads_to,
)
from tests.browser.pages import OPERATOR, OPERATOR_PASSWORD


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium for the session."""
    try:
        import selenium  # noqa: F401
    except ImportError:  # a development dependency: its absence is a broken setup, not a skip
        pytest.fail("selenium is not installed: pip install -e '.[dev]'")
    try:
        chromium_ensure()
        driver = chromium_start()
    except ChromiumUnavailable as exc:
        pytest.skip(f"Headless Chromium is not available here: {exc}")
    driver.implicitly_wait(0)
    yield driver
    chromium_stop(driver)


@pytest.fixture
def downloads(tmp_path):
    return tmp_path / "downloads"


@pytest.fixture
def browser(chromium, live_server, downloads):
    """The session's Chromium with no cookies of the live server (each test starts
    signed out) and its downloads going to this test's ``downloads`` folder."""
    chromium.get(f"{live_server.url}/admin/login/")
    chromium.delete_all_cookies()
    downloads_to(chromium, downloads)
    chromium.live_server_url = live_server.url
    return chromium


@pytest.fixture
def operator(transactional_db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser(OPERATOR, "ops@example.com", OPERATOR_PASSWORD)


# ---------------------------------------------------------------------- data


@dataclass
class Books:
    """What a seed made: the instant it billed at and the customers by key."""

    now: datetime

    def customer(self, key: str):
        from customers.models import Customer

        return Customer.objects.get(key=key)

    def invoices(self, key: str, **filters):
        from billing.models import Invoice

        return Invoice.objects.filter(customer__key=key, **filters).order_by("period_start")


@pytest.fixture
def books(transactional_db):
    """Make the demo's catalog with only the named customers (no webhook endpoint: the
    tests send nothing anywhere), a little usage of theirs, and bill it at now:
    ``books("pendant", net_terms={"initech": 0})``."""

    def seed(*keys: str, events: int = 400, net_terms: dict[str, int] | None = None) -> Books:
        from backoffice.configuration.apply import config_apply
        from billing.models import BillingProfile
        from billing.run import billing_run
        from customers.models import ConsumerMapping, Customer
        from demo.data import SUBJECTS, demo_events
        from demo.services import demo_document, usage_rollup_complete

        now = timezone.now()
        document = demo_document(reference=now, keys=set(keys))
        document["webhook_endpoints"] = []
        config_apply(document=document, dry_run=False)
        for key, days in (net_terms or {}).items():
            BillingProfile.objects.update_or_create(
                customer=Customer.objects.get(key=key), defaults={"net_terms_days": days}
            )
        consumers = set(ConsumerMapping.objects.values_list("consumer_key", flat=True))
        subjects = {k: v for k, v in SUBJECTS.items() if k in consumers}
        if subjects:
            share = sum(s for s, _ in subjects.values())
            demo_events(
                start=now - timedelta(days=75),
                end=now,
                total=events,
                subjects={k: (s / share, llm) for k, (s, llm) in subjects.items()},
            )
            usage_rollup_complete(now=now, timeout=20)
        billing_run(now=now)
        return Books(now=now)

    return seed
