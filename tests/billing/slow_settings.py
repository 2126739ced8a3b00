"""The project's settings plus a slow issuing hook, for a billing run a test kills in
the middle (``DJANGO_SETTINGS_MODULE=tests.billing.slow_settings``)."""

from config.settings import *  # noqa: F401,F403
from config.settings import BILLING_INVOICE_ISSUING_HOOKS

BILLING_INVOICE_ISSUING_HOOKS = [
    *BILLING_INVOICE_ISSUING_HOOKS,
    "tests.billing.slow_hooks.issue_slowly",
]
# Two invoices per issuing transaction: a run killed at the fifth number has committed
# the first two chunks (four invoices) and loses the third.
BILLING_RUN_CHUNK = 2
