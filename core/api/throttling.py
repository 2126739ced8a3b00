"""Per-API-key rate limits, counted in Redis in fixed one-second windows.

A key's limit is its own ``rate_limit`` (requests per second) or the setting
``API_RATE_LIMIT_PER_SECOND`` for its scope; past it the API answers 429 with
``Retry-After``. Every web worker counts in the same Redis key, so they share one count.

The count is one round trip on this process's Redis client (``core.raw_redis``): a
pipelined ``INCR`` of the window's key and ``EXPIRE``. ``INCR`` creates the key at 1 when
it is missing, so there is no race between creating and counting; the key names its
one-second window, so moving its expiry with every request only keeps it a few seconds
after the window's last request. (``EXPIRE … NX`` would spare that write, but needs
Redis 7; the embedded Redis of the demo is 6.) Without Redis (development) the cache API
counts.
"""

from __future__ import annotations

import math
import time

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle

from core.models import ApiKey
from core.raw_redis import raw_redis

# A window's key outlives its second by a few, so a clock a little apart between web
# servers still counts into the same key; then Redis drops it.
WINDOW_KEY_SECONDS = 5


def _count_in_cache(cache_key: str) -> int:
    if cache.add(cache_key, 1, timeout=WINDOW_KEY_SECONDS):
        return 1
    try:
        return cache.incr(cache_key)
    except ValueError:  # expired between add and incr
        cache.add(cache_key, 1, timeout=WINDOW_KEY_SECONDS)
        return 1


def request_count(cache_key: str) -> int:
    """Count one more request under ``cache_key`` (a window's key) and return the count."""
    client = raw_redis()
    if client is None:
        return _count_in_cache(cache_key)
    key = cache.make_key(cache_key)
    pipe = client.pipeline(transaction=False)
    pipe.incr(key)
    pipe.expire(key, WINDOW_KEY_SECONDS)
    count, _ = pipe.execute()
    return count


class ApiKeyRateThrottle(BaseThrottle):
    scope = "default"

    def allow_request(self, request, view) -> bool:
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            return True
        scope = getattr(view, "throttle_scope", self.scope)
        limit = api_key.rate_limit or settings.API_RATE_LIMIT_PER_SECOND.get(scope)
        if not limit:
            return True
        now = time.time()
        window = int(now)
        count = request_count(f"throttle:{api_key.prefix}:{scope}:{window}")
        self._wait = (window + 1) - now
        return count <= limit

    def wait(self) -> float:
        return max(1, math.ceil(getattr(self, "_wait", 1)))
