"""Kong consumers from the gateway's Admin API, as consumer keys to link to customers.

``kong_consumers_import`` reads every page of ``GET /consumers`` first and then writes in
one transaction, so a failed page (refused token, connection lost, a body that is not
Kong's) writes nothing. The import only adds and updates: a consumer deleted in Kong
stays listed here, as its mappings and past events still name it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from django.db import connection, transaction

from core.outbound import OutboundRefused, outbound_get
from metering.gateways.kong.subject import kong_consumer_subject
from metering.gateways.kong.values import KongLogError
from metering.models import KongConsumer

DEFAULT_TOKEN_HEADER = "Kong-Admin-Token"
PAGE_SIZE = 1000  # Kong's largest page
MAX_PAGES = 1000  # a million consumers; past that, a server that never says "last page"
TIMEOUT = (5, 30)  # seconds: connect, read
# 1,000 consumers with long tags fit in a few MB; far more is not Kong's page
MAX_PAGE_BYTES = 32_000_000

_FIELDS = ("kong_id", "username", "custom_id", "tags", "kong_created_at", "admin_url")


class KongAdminError(Exception):
    """The Admin API could not be read: the message says why, for the operator."""


@dataclass(frozen=True)
class KongConsumerSkipped:
    """A consumer listed by Kong that was not imported, and why."""

    kong_id: str
    reason: str


@dataclass(frozen=True)
class KongConsumersImported:
    """What one import did: keys created, updated and unchanged, consumers skipped."""

    admin_url: str
    pages: int
    created: tuple[str, ...]
    updated: tuple[str, ...]
    unchanged: tuple[str, ...]
    skipped: tuple[KongConsumerSkipped, ...]

    def summary(self) -> str:
        text = (
            f"{len(self.created)} created, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged"
        )
        if self.skipped:
            text += f", {len(self.skipped)} skipped"
        return f"{text} ({self.pages} page{'s' if self.pages != 1 else ''} from {self.admin_url})"


def kong_admin_url_clean(*, admin_url: str) -> str:
    """The Admin API base URL without a trailing slash. Raises ``KongAdminError`` for a URL
    that is not http(s) with a host (no file:, no bare path)."""
    url = (admin_url or "").strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise KongAdminError(
            f"{admin_url!r} is not an http(s) URL of a Kong Admin API "
            "(for example http://kong-admin:8001)."
        )
    if parts.query or parts.fragment:
        raise KongAdminError("The Admin API URL takes no query string or fragment.")
    return url


def kong_consumers_fetch(
    *,
    admin_url: str,
    token: str = "",
    token_header: str = DEFAULT_TOKEN_HEADER,
    page_size: int = PAGE_SIZE,
    max_pages: int = MAX_PAGES,
) -> tuple[list[dict[str, Any]], int]:
    """Every consumer ``GET /consumers`` lists, following ``next`` (or ``offset``) page by
    page, and the number of pages read. ``token`` goes in the ``token_header`` header when
    given. Raises ``KongAdminError`` for a URL that is not http(s), a connection that
    fails, any answer but 200 (redirects are not followed: the token stays with the host
    it was meant for), a host on a link-local or cloud metadata address (core.outbound), a
    body that is not Kong's page, or more than ``max_pages`` pages."""
    base = kong_admin_url_clean(admin_url=admin_url)
    headers = {"Accept": "application/json"}
    if token:
        headers[(token_header or DEFAULT_TOKEN_HEADER).strip()] = token
    url: str | None = f"{base}/consumers?{urlencode({'size': page_size})}"
    consumers: list[dict[str, Any]] = []
    seen_offsets: set[str] = set()
    pages = 0
    while url:
        if pages >= max_pages:
            raise KongAdminError(f"More than {max_pages} pages of consumers; nothing imported.")
        body = _page(url, headers)
        pages += 1
        data = body.get("data")
        if not isinstance(data, list) or not all(isinstance(c, dict) for c in data):
            raise KongAdminError(f"{url}: the answer has no list of consumers in 'data'.")
        consumers += data
        url = _next_url(base, body, page_size, seen_offsets)
    return consumers, pages


def _page(url: str, headers: dict[str, str]) -> dict[str, Any]:
    # An operator types this URL: core.outbound refuses link-local and cloud metadata
    # addresses and pins the vetted address. Private ones are allowed, as Kong's Admin API
    # listens on the gateway's private network (or its loopback), never on the internet.
    try:
        with outbound_get(url, headers=headers, timeout=TIMEOUT, allow_private=True) as response:
            status = response.status_code
            raw = _read_capped(response) if status == 200 else b""
    except OutboundRefused as exc:
        raise KongAdminError(f"Refused to call {url}: {exc}.") from exc
    except requests.RequestException as exc:
        raise KongAdminError(f"Could not reach the Kong Admin API at {url}: {exc}") from exc
    if status in (401, 403):
        raise KongAdminError(
            f"The Kong Admin API refused the request ({status}): "
            "check the admin token and its header name."
        )
    if status != 200:
        raise KongAdminError(f"{url} answered {status}, not 200.")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise KongAdminError(f"{url}: the answer is not JSON; is this a Kong Admin API?") from exc
    if not isinstance(body, dict):
        raise KongAdminError(f"{url}: the answer is not a JSON object; is this Kong's?")
    return body


def _read_capped(response: requests.Response) -> bytes:
    body = bytearray()
    for chunk in response.iter_content(64 * 1024):
        body += chunk
        if len(body) > MAX_PAGE_BYTES:
            raise KongAdminError(
                f"A page of consumers is larger than {MAX_PAGE_BYTES // 1_000_000} MB; "
                "is this a Kong Admin API?"
            )
    return bytes(body)


def _next_url(base: str, body: dict[str, Any], page_size: int, seen: set[str]) -> str | None:
    """Kong's ``next`` is a path under the Admin API (``/consumers?offset=...``), null on
    the last page; ``offset`` alone also means another page."""
    next_path, offset = body.get("next"), body.get("offset")
    if not next_path and not offset:
        return None
    key = str(offset or next_path)
    if key in seen:
        raise KongAdminError("The Admin API repeated a page (same offset twice); nothing imported.")
    seen.add(key)
    if isinstance(next_path, str) and next_path.startswith("/") and not next_path.startswith("//"):
        return base + next_path
    if isinstance(offset, str) and offset:
        return f"{base}/consumers?{urlencode({'size': page_size, 'offset': offset})}"
    raise KongAdminError(f"Cannot follow the Admin API's next page {next_path!r}.")


def kong_consumers_import(
    *,
    admin_url: str,
    now: datetime,
    token: str = "",
    token_header: str = DEFAULT_TOKEN_HEADER,
    page_size: int = PAGE_SIZE,
    max_pages: int = MAX_PAGES,
) -> KongConsumersImported:
    """Create or update a ``KongConsumer`` per consumer the Admin API lists, keyed by the
    subject its traffic carries. Reads all pages, then writes in one transaction (under
    a lock, so two imports at once do not collide); safe to re-run: a second import of
    the same consumers changes nothing. A consumer with no identifier, one that cannot be
    a subject, or a second consumer with the same key is skipped and reported. Raises
    ``KongAdminError`` (see ``kong_consumers_fetch``), having written nothing."""
    base = kong_admin_url_clean(admin_url=admin_url)
    listed, pages = kong_consumers_fetch(
        admin_url=base,
        token=token,
        token_header=token_header,
        page_size=page_size,
        max_pages=max_pages,
    )
    incoming, skipped = _consumers_by_key(listed, admin_url=base)
    created, updated, unchanged = _consumers_save(incoming, now=now)
    return KongConsumersImported(
        admin_url=base,
        pages=pages,
        created=tuple(created),
        updated=tuple(updated),
        unchanged=tuple(unchanged),
        skipped=tuple(skipped),
    )


def _consumers_by_key(
    listed: list[dict[str, Any]], *, admin_url: str
) -> tuple[dict[str, dict[str, Any]], list[KongConsumerSkipped]]:
    """The ``KongConsumer`` fields of each listed consumer by its key (the subject its
    traffic carries), and the consumers skipped: no identifier, one that cannot be a
    subject, or a key an earlier consumer already has."""
    incoming: dict[str, dict[str, Any]] = {}
    skipped: list[KongConsumerSkipped] = []
    for consumer in listed:
        kong_id = _str(consumer.get("id"))
        try:
            key = kong_consumer_subject(consumer)
        except KongLogError as exc:
            skipped.append(KongConsumerSkipped(kong_id, str(exc)))
            continue
        if key is None:
            skipped.append(KongConsumerSkipped(kong_id, "no custom_id, username or id"))
            continue
        if key in incoming:
            skipped.append(
                KongConsumerSkipped(kong_id, f"another consumer has the same key {key!r}")
            )
            continue
        incoming[key] = {
            "kong_id": kong_id[:64],
            "username": _str(consumer.get("username"))[:255],
            "custom_id": _str(consumer.get("custom_id"))[:255],
            "tags": [t for t in consumer.get("tags") or [] if isinstance(t, str)]
            if isinstance(consumer.get("tags"), list)
            else [],
            "kong_created_at": _epoch(consumer.get("created_at")),
            "admin_url": admin_url,
        }
    return incoming, skipped


def _consumers_save(
    incoming: dict[str, dict[str, Any]], *, now: datetime
) -> tuple[list[str], list[str], list[str]]:
    """Create the new keys and update the changed ones, in one transaction under a lock
    so that two imports at once do not collide; the keys created, updated and
    unchanged."""
    created: list[str] = []
    updated: list[str] = []
    unchanged: list[str] = []
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('kong_consumers_import'))")
        existing = KongConsumer.objects.in_bulk(list(incoming), field_name="key")
        to_create, to_update = [], []
        for key, fields in incoming.items():
            row = existing.get(key)
            if row is None:
                to_create.append(KongConsumer(key=key, imported_at=now, updated_at=now, **fields))
                created.append(key)
            elif any(getattr(row, name) != value for name, value in fields.items()):
                for name, value in fields.items():
                    setattr(row, name, value)
                row.updated_at = now
                to_update.append(row)
                updated.append(key)
            else:
                unchanged.append(key)
        KongConsumer.objects.bulk_create(to_create, batch_size=1000)
        KongConsumer.objects.bulk_update(to_update, [*_FIELDS, "updated_at"], batch_size=1000)
    return created, updated, unchanged


def _str(value: Any) -> str:
    return value.replace("\x00", "") if isinstance(value, str) else ""


def _epoch(value: Any) -> datetime | None:
    """Kong's ``created_at``: seconds since the epoch."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(int(value), tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
