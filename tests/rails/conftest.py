"""Fixtures for the Stripe rail: a fake Stripe on a random local port, and settings
pointing the real ``stripe`` library at it."""

from __future__ import annotations

import pytest
from django.test import override_settings

from tests.rails.fake_stripe import FakeStripe

WEBHOOK_SECRET = "whsec_test_0123456789abcdef"


@pytest.fixture
def fake_stripe():
    """A running fake Stripe (``fake.stop()`` refuses connections, ``fake.start()`` resumes)."""
    fake = FakeStripe().start()
    yield fake
    fake.stop()


@pytest.fixture
def stripe_live(fake_stripe):
    """Stripe configured (not sandbox) against the fake, with fast library retries."""
    with override_settings(
        STRIPE_API_KEY=fake_stripe.api_key,
        STRIPE_API_BASE=fake_stripe.url,
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        STRIPE_MAX_NETWORK_RETRIES=2,
        STRIPE_TIMEOUT_SECONDS=5,
    ):
        yield fake_stripe


@pytest.fixture
def stripe_sandbox(fake_stripe):
    """No STRIPE_API_KEY: sandbox mode (the base still points at the fake, to prove
    that nothing reaches it)."""
    with override_settings(
        STRIPE_API_KEY="", STRIPE_API_BASE=fake_stripe.url, STRIPE_WEBHOOK_SECRET=""
    ):
        yield fake_stripe
