"""Production hardening on top of the base settings; passes ``manage.py check --deploy``.

Requires ``SECRET_KEY`` and ``ALLOWED_HOSTS`` in the environment. TLS is expected to end
at a proxy that sets ``X-Forwarded-Proto``.
"""

import os

from .base import *  # noqa: F401,F403
from .base import env_bool

if "SECRET_KEY" not in os.environ:
    raise RuntimeError("Set SECRET_KEY in the environment for production.")

DEBUG = False
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
