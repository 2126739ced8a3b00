from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from celery.schedules import crontab

from config.embedded import BASE_DIR, VAR_DIR, embedded_postgres_url


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
    "backoffice.apps.BackofficeAdminConfig",  # django.contrib.admin, on the back office's site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from here, not a CDN
    "djmoney",
    "simple_history",
    "core",
    "customers",
    "metering",
    "billing",
    "rails",
    "backoffice",  # operator screens that read every app: above the domain apps
    "demo",
    "audit",  # last: its post_migrate syncs the roles once every app's permissions exist
]

MIDDLEWARE = [
    # A NUL in the URL (%00) is refused first: no lookup can hold one (see core.middleware).
    "core.middleware.NulInUrlRefusalMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Sessions, the session user and messages are Django's, skipped for requests under
    # /api/ that carry a bearer API key (see core.middleware).
    "core.middleware.BrowserSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",  # as is: check --deploy looks for it
    "core.middleware.BrowserAuthenticationMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",  # who made each audited change
    "core.middleware.BrowserMessageMiddleware",
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
# Persistent connections (60 s) without a health check per request: the check is a
# `SELECT 1` round trip before every request's first query, on the gateways' hot path
# (the entitlement check's only other statement is its usage). After PostgreSQL restarts, a worker's old connection fails once:
# that request errors (the value check retries it once on a new connection), and Django
# closes the broken connection when the request ends, so the next one reconnects.
# DATABASE_HEALTH_CHECKS=true restores the check. See docs/performance.md.
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL,
        conn_max_age=60,
        conn_health_checks=env_bool("DATABASE_HEALTH_CHECKS", default=False),
    )
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
FORMAT_MODULE_PATH = ["config.formats"]  # the admin's dates as 2026-11-02 09:00
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Under var/ (BILLING_VAR_DIR), beside the embedded servers: another BILLING_VAR_DIR is
# another instance of the product, files included.
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "static"))
MEDIA_URL = "media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
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
    "billing-run": {"task": "billing.run", "schedule": timedelta(minutes=5)},
    "settlements-drive": {"task": "rails.settlements_drive_due", "schedule": timedelta(minutes=1)},
    "webhook-deliveries": {
        "task": "billing.webhook_deliveries_send_due",
        "schedule": timedelta(minutes=1),
    },
    "thresholds-check": {"task": "billing.thresholds_check", "schedule": timedelta(minutes=1)},
    "credits-expire": {"task": "billing.credits_expire", "schedule": timedelta(hours=1)},
    # 13:00 UTC is 8-9 am in New York, before a bank's usual morning cutoff; a re-run exports nothing twice.
    "ach-export": {"task": "rails.ach_export", "schedule": crontab(hour=13, minute=0)},
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
    # A body is a JSON object of storable text (see core.api.parsers).
    "DEFAULT_PARSER_CLASSES": ["core.api.parsers.JSONObjectParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "core.api.negotiation.ContentNegotiation",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_THROTTLE_CLASSES": ["core.api.throttling.ApiKeyRateThrottle"],
    "DEFAULT_PAGINATION_CLASS": "core.api.pagination.Pagination",
    "DEFAULT_SCHEMA_CLASS": "core.api.schema.ProblemAutoSchema",
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
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # A plan change and a cancellation both name their timing; each set gets its own name.
    "ENUM_NAME_OVERRIDES": {
        "PlanChangeTimingEnum": ["immediately", "next_period"],
        "CancelTimingEnum": ["immediately", "period_end"],
    },
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
# Gateway forward-auth (GET /api/v1/gateways/authorize): a subject mapped to no customer
# is refused ("deny") or let through ("allow").
GATEWAY_AUTHORIZE_UNKNOWN_SUBJECT = os.environ.get("GATEWAY_AUTHORIZE_UNKNOWN_SUBJECT", "deny")

# Invoicing. A draft waits BILLING_GRACE_PERIOD_HOURS after its period ends for late
# usage, then is issued (overridable per customer on its billing profile).
BILLING_GRACE_PERIOD_HOURS = int(os.environ.get("BILLING_GRACE_PERIOD_HOURS", "24"))
BILLING_NET_TERMS_DAYS = int(os.environ.get("BILLING_NET_TERMS_DAYS", "30"))
BILLING_INVOICE_PREFIX = os.environ.get("BILLING_INVOICE_PREFIX", "INV")
BILLING_CREDIT_NOTE_PREFIX = os.environ.get("BILLING_CREDIT_NOTE_PREFIX", "CN")
# Late usage for issued periods ending within this many days is billed on the next invoice.
BILLING_LATE_USAGE_LOOKBACK_DAYS = int(os.environ.get("BILLING_LATE_USAGE_LOOKBACK_DAYS", "180"))
# Called inside the issuing transaction with (invoice=, now=): the settlement outbox
# (rails) and credits register here, so billing never imports them.
BILLING_INVOICE_ISSUING_HOOKS: list[str] = ["billing.credits.services.credits_apply_on_issue"]
BILLING_INVOICE_ISSUED_HOOKS: list[str] = [
    "rails.outbox.settlement_open_for_invoice",
    "billing.notifications.services.notify_invoice_issued",
]
BILLING_INVOICE_VOIDED_HOOKS: list[str] = ["rails.corrections.settlement_on_void"]
BILLING_CREDIT_NOTE_HOOKS: list[str] = ["rails.corrections.settlement_on_credit_note"]
# Meters rolled up at once, each on its own database connection (a catch-up after a
# backlog then uses the database's cores, as a parallel GROUP BY would). 1: one by one.
METERING_ROLLUP_WORKERS = int(os.environ.get("METERING_ROLLUP_WORKERS", "2"))
# Accounts per transaction in a billing run (drafts made, drafts issued): larger is faster,
# and a run that dies loses at most one chunk's work (rolled back; the next run redoes it).
BILLING_RUN_CHUNK = int(os.environ.get("BILLING_RUN_CHUNK", "200"))
# Called at the end of every billing run with (now=): drive settlements and the like.
BILLING_RUN_HOOKS: list[str] = [
    "rails.outbox.settlements_drive_due",
    "billing.notifications.thresholds.thresholds_check",
    "billing.notifications.delivery.deliveries_send_due",
    "billing.credits.services.credit_expire_due",
]

# Webhook notifications (Standard Webhooks): retried with exponential backoff, capped per
# delay, until delivered or given up after WEBHOOK_MAX_ATTEMPTS (12 attempts at 30 s base
# keep trying for about a day).
WEBHOOK_MAX_ATTEMPTS = int(os.environ.get("WEBHOOK_MAX_ATTEMPTS", "12"))
WEBHOOK_RETRY_BASE_SECONDS = int(os.environ.get("WEBHOOK_RETRY_BASE_SECONDS", "30"))
WEBHOOK_RETRY_MAX_SECONDS = int(os.environ.get("WEBHOOK_RETRY_MAX_SECONDS", str(6 * 3600)))
WEBHOOK_TIMEOUT_SECONDS = float(os.environ.get("WEBHOOK_TIMEOUT_SECONDS", "5"))
# Webhook endpoints must be public addresses (checked when saved, and on every address the
# host resolves to when sending, see core.outbound); true allows loopback, RFC 1918,
# 100.64.0.0/10 and fc00::/7 receivers on premises. Link-local, metadata and other
# special addresses stay refused.
NOTIFICATION_WEBHOOKS_ALLOW_PRIVATE = env_bool("NOTIFICATION_WEBHOOKS_ALLOW_PRIVATE", default=False)
# CA bundle (file or directory) to verify webhook receivers' TLS certificates with, e.g. an
# in-house CA on premises; empty: the public CAs (certifi).
WEBHOOK_CA_BUNDLE = os.environ.get("WEBHOOK_CA_BUNDLE", "")

# Invoice documents: the company printed on every invoice and credit note.
BILLING_SELLER = {
    "name": os.environ.get("BILLING_SELLER_NAME", "Example Cloud Inc."),
    "address_lines": [
        p
        for p in os.environ.get(
            "BILLING_SELLER_ADDRESS", "100 Example Street|San Francisco, CA 94105|United States"
        ).split("|")
        if p.strip()
    ],
    "email": os.environ.get("BILLING_SELLER_EMAIL", "billing@example.com"),
    "phone": os.environ.get("BILLING_SELLER_PHONE", ""),
    "website": os.environ.get("BILLING_SELLER_WEBSITE", ""),
    "tax_id": os.environ.get("BILLING_SELLER_TAX_ID", ""),
    "logo_text": os.environ.get("BILLING_SELLER_LOGO_TEXT", ""),  # empty: the name
    "page_size": os.environ.get(
        "BILLING_PAGE_SIZE", ""
    ),  # A4 | Letter | empty: by customer country
    "footer_note": os.environ.get("BILLING_SELLER_FOOTER_NOTE", ""),
    "bank_transfer": {  # printed for manual-rail customers; only the fields that are set
        "bank_name": os.environ.get("BILLING_BANK_NAME", ""),
        "account_name": os.environ.get("BILLING_BANK_ACCOUNT_NAME", ""),
        "account_number": os.environ.get("BILLING_BANK_ACCOUNT_NUMBER", ""),
        "routing_number": os.environ.get("BILLING_BANK_ROUTING_NUMBER", ""),
        "iban": os.environ.get("BILLING_BANK_IBAN", ""),
        "swift": os.environ.get("BILLING_BANK_SWIFT", ""),
    },
}
# Signed invoice links (hosted page and PDF) expire after this many days.
BILLING_INVOICE_LINK_TTL_DAYS = int(os.environ.get("BILLING_INVOICE_LINK_TTL_DAYS", "90"))
BILLING_PORTAL_SESSION_HOURS = int(os.environ.get("BILLING_PORTAL_SESSION_HOURS", "12"))
# Origin used in mailed sign-in links; empty: the request's host (which ALLOWED_HOSTS guards).
BILLING_PUBLIC_BASE_URL = os.environ.get("BILLING_PUBLIC_BASE_URL", "")

EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", default=False)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "billing@example.com")

# Stripe: sandbox mode while STRIPE_API_KEY is unset. See docs/rails/stripe.md.
STRIPE_API_KEY = os.environ.get("STRIPE_API_KEY", "")
STRIPE_WEBHOOK_SECRET = os.environ.get("STRIPE_WEBHOOK_SECRET", "")
STRIPE_API_BASE = os.environ.get("STRIPE_API_BASE", "https://api.stripe.com")
STRIPE_MAX_NETWORK_RETRIES = int(os.environ.get("STRIPE_MAX_NETWORK_RETRIES", "2"))
STRIPE_TIMEOUT_SECONDS = float(os.environ.get("STRIPE_TIMEOUT_SECONDS", "30"))

# NetSuite (SuiteTalk REST, OAuth 1.0 TBA): sandbox mode while the credentials are unset.
# NETSUITE_BASE_URL defaults to https://<account>.suitetalk.api.netsuite.com/services/rest.
NETSUITE_ACCOUNT_ID = os.environ.get("NETSUITE_ACCOUNT_ID", "")
NETSUITE_CONSUMER_KEY = os.environ.get("NETSUITE_CONSUMER_KEY", "")
NETSUITE_CONSUMER_SECRET = os.environ.get("NETSUITE_CONSUMER_SECRET", "")
NETSUITE_TOKEN_ID = os.environ.get("NETSUITE_TOKEN_ID", "")
NETSUITE_TOKEN_SECRET = os.environ.get("NETSUITE_TOKEN_SECRET", "")
NETSUITE_BASE_URL = os.environ.get("NETSUITE_BASE_URL", "")
NETSUITE_MAX_CONCURRENCY = int(os.environ.get("NETSUITE_MAX_CONCURRENCY", "4"))
NETSUITE_SUBSIDIARY_ID = os.environ.get("NETSUITE_SUBSIDIARY_ID", "1")

# ACH (NACHA files). The rail runs in sandbox mode (placeholder originator values, files
# marked -sandbox) while ACH_ODFI_ROUTING or ACH_COMPANY_ID is unset. See docs/rails/ach.md.
ACH_ODFI_ROUTING = os.environ.get("ACH_ODFI_ROUTING", "")
ACH_ORIGIN_ID = os.environ.get("ACH_ORIGIN_ID", "")  # default: ACH_COMPANY_ID
ACH_COMPANY_ID = os.environ.get("ACH_COMPANY_ID", "")
ACH_COMPANY_NAME = os.environ.get("ACH_COMPANY_NAME", "")  # required when live
ACH_ODFI_NAME = os.environ.get("ACH_ODFI_NAME", "")
ACH_RETURN_WINDOW_BANKING_DAYS = int(os.environ.get("ACH_RETURN_WINDOW_BANKING_DAYS", "2"))
ACH_TIME_ZONE = os.environ.get("ACH_TIME_ZONE", "America/New_York")  # banking days are counted here
ACH_ENCRYPTION_KEY = os.environ.get(
    "ACH_ENCRYPTION_KEY", ""
)  # comma list: first encrypts, all decrypt

# Validates and normalises a customer's rail_settings when the customer is saved
# (rail=, rail_settings=) -> rail_settings; raises ValidationError.
CUSTOMER_RAIL_SETTINGS_HOOK = "rails.settings_hooks.rail_settings_clean"

# Settlement driving: failed attempts are retried with exponential backoff (base doubling
# per attempt, capped), up to RAILS_MAX_ATTEMPTS; a claimed attempt whose worker died is
# resumed after the lease with the same idempotency keys; rails that are polled are asked
# again every RAILS_POLL_SECONDS.
RAILS_MAX_ATTEMPTS = int(os.environ.get("RAILS_MAX_ATTEMPTS", "8"))
RAILS_RETRY_BASE_SECONDS = int(os.environ.get("RAILS_RETRY_BASE_SECONDS", "60"))
RAILS_RETRY_MAX_SECONDS = int(os.environ.get("RAILS_RETRY_MAX_SECONDS", str(6 * 3600)))
RAILS_SUBMIT_LEASE_SECONDS = int(os.environ.get("RAILS_SUBMIT_LEASE_SECONDS", "300"))
RAILS_POLL_SECONDS = int(os.environ.get("RAILS_POLL_SECONDS", "3600"))

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
