"""Settings of the entitlement benchmark's server: the product's settings, plus a
bench-only URLconf that adds a trivial endpoint beside the real ones, and a cache key
prefix of its own so that the benchmark never shares cache entries with anyone."""

from config.settings import *  # noqa: F401,F403
from config.settings import CACHES

ROOT_URLCONF = "bench.entitlements_urls"
CACHES = {"default": {**CACHES["default"], "KEY_PREFIX": "bench-entitlements"}}
