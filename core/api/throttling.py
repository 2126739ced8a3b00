"""Per-API-key rate limits, counted in Redis (Django's cache) in fixed one-second windows.

A key's limit is its own ``rate_limit`` (requests per second) or the setting
``API_RATE_LIMIT_PER_SECOND`` for its scope; past it the API answers 429 with
``Retry-After``. Counting uses the cache's atomic increment, so several web workers
share one count.
"""

from __future__ import annotations

import math
import time

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle

from core.models import ApiKey


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
        cache_key = f"throttle:{api_key.prefix}:{scope}:{window}"
        if cache.add(cache_key, 1, timeout=5):
            count = 1
        else:
            try:
                count = cache.incr(cache_key)
            except ValueError:  # expired between add and incr
                cache.add(cache_key, 1, timeout=5)
                count = 1
        self._wait = (window + 1) - now
        return count <= limit

    def wait(self) -> float:
        return max(1, math.ceil(getattr(self, "_wait", 1)))
