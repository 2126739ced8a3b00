"""The project's settings plus a slow issuing hook, for a billing run a test kills in
the middle (``DJANGO_SETTINGS_MODULE=tests.billing.slow_settings``)."""

from config.settings import *  # noqa: F401,F403
from config.settings import BILLING_INVOICE_ISSUING_HOOKS

BILLING_INVOICE_ISSUING_HOOKS = [
    *BILLING_INVOICE_ISSUING_HOOKS,
    "tests.billing.slow_hooks.issue_slowly",
]
