"""One redis-py client per process for the hot paths, beside Django's cache.

Django's Redis cache builds a new ``redis.Redis`` object for every operation (its
constructor copies a dict of several hundred response callbacks: more CPU than the
command itself on loopback), and its ``incr`` is ``EXISTS`` then ``INCRBY``. The hot
paths (the API key's and the entitlement context's generations, the per-key rate limit)
use this client instead, on keys made with ``cache.make_key`` so they are the cache's
own keys. Integers are stored as plain numbers by the cache's serializer, so both read
them the same way.
"""

from __future__ import annotations

import os

from django.conf import settings

_clients: dict[int, object] = {}  # pid -> client
REDIS_CACHE = "django.core.cache.backends.redis.RedisCache"


def raw_redis():
    """This process's client on the default cache's (first) Redis server, or None when
    the default cache is not Redis (development without ``REDIS_URL``: callers then use
    the cache API)."""
    conf = settings.CACHES["default"]
    if conf["BACKEND"] != REDIS_CACHE:
        return None
    pid = os.getpid()  # a forked worker opens its own connections
    client = _clients.get(pid)
    if client is None:
        import redis

        location = conf["LOCATION"]
        url = location[0] if isinstance(location, list | tuple) else location.split(",")[0]
        client = redis.Redis.from_url(url.strip())
        _clients.clear()
        _clients[pid] = client
    return client
