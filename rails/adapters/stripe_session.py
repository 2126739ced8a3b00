"""One Stripe adapter call's session: a ``StripeClient`` whose HTTP client records every
exchange (the library's own retries included), or in sandbox records each request exactly
as the library built it, sends nothing and answers placeholders (``cus_sandbox``,
``in_sandbox``); POSTs keyed by the step's idempotency key; and Stripe's errors turned into
failed ``RailResult``s, retryable or not. The flows that use it are
``rails.adapters.stripe``'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import stripe
from django.conf import settings

from rails.base import Exchange, RailResult, Step, redact

DEFAULT_API_BASE = "https://api.stripe.com"
SANDBOX_NOTE = "sandbox: nothing sent"
_SANDBOX_KEY = "sk_sandbox_nothing_is_sent"


def stripe_setting(name: str, default: Any) -> Any:
    """Read at call time, so overridden settings (and a late configuration) apply."""
    return getattr(settings, name, default) or default


class StripeStop(Exception):
    """Stop a flow with a failure that is ours to describe."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


# ------------------------------------------------------------------ recording HTTP clients


def _text(body: Any) -> str:
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body).decode("utf-8", errors="replace")
    return "" if body is None else str(body)


class _Log:
    """The exchanges of one adapter call, in order; ``step`` names the sub-step running."""

    def __init__(self, step: str) -> None:
        self.step = step
        self.exchanges: list[Exchange] = []

    def add(self, method, url, headers, body, *, status=None, response="", error="", sent=True):
        headers = dict(headers or {})
        self.exchanges.append(
            Exchange(
                step=self.step[:50],
                method=method.upper(),
                url=url,
                status_code=status,
                request_headers=redact(headers),
                request_body=_text(body),
                error=error,
                response_body=_text(response),
                sent=sent,
                idempotency_key=headers.get("Idempotency-Key", ""),
            )
        )


class _RecordingClient(stripe.RequestsClient):
    """Sends each try (the library's retries included) and records it."""

    name = "requests"

    def __init__(self, log: _Log, *, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self._log = log

    def request(self, method, url, headers, post_data=None, **kwargs):
        try:
            content, status, rheaders = super().request(method, url, headers, post_data)
        except stripe.APIConnectionError as exc:
            error = " ".join((exc.user_message or str(exc)).split())
            self._log.add(method, url, headers, post_data, error=error)
            raise
        self._log.add(method, url, headers, post_data, status=status, response=content)
        return content, status, rheaders


class _SandboxClient(stripe.HTTPClient):
    """Records each request exactly as the library built it, sends nothing, and answers
    with a placeholder so the flow carries on."""

    name = "requests"

    def __init__(self, log: _Log) -> None:
        super().__init__()
        self._log = log

    def request(self, method, url, headers, post_data=None, **kwargs):
        self._log.add(method, url, headers, post_data, sent=False)
        return json.dumps(_sandbox_answer(method, urlsplit(url).path)).encode(), 200, {}

    def request_stream(self, *args, **kwargs):  # pragma: no cover - never streamed
        raise NotImplementedError

    def close(self) -> None:
        pass


def _sandbox_answer(method: str, path: str) -> dict:
    if path.endswith("/search") or method == "get" and path.count("/") == 2:
        return {"object": "list", "data": [], "has_more": False, "url": path}
    kinds = {"customers": "cus", "invoiceitems": "ii", "credit_notes": "cn"}
    prefix = kinds.get(path.split("/")[2], "in")
    answer = {"id": f"{prefix}_sandbox", "object": "invoice" if prefix == "in" else prefix}
    if prefix == "in":
        answer |= {"status": "draft" if path == "/v1/invoices" else "open", "amount_remaining": 0}
    return answer


# ------------------------------------------------------------------ one call's Stripe session


class StripeSession:
    """A StripeClient for one adapter call, its exchanges, and the Stripe ids learnt."""

    def __init__(self, step: Step) -> None:
        api_key = stripe_setting("STRIPE_API_KEY", "")
        self.step, self.sandbox, self.log, self.ids = step, not api_key, _Log(step.name), {}
        timeout = float(stripe_setting("STRIPE_TIMEOUT_SECONDS", 30))
        http = (
            _SandboxClient(self.log)
            if self.sandbox
            else _RecordingClient(self.log, timeout=timeout)
        )
        retries = 0 if self.sandbox else int(getattr(settings, "STRIPE_MAX_NETWORK_RETRIES", 2))
        client = stripe.StripeClient(
            api_key or _SANDBOX_KEY,
            http_client=http,
            max_network_retries=retries,
            base_addresses={"api": stripe_setting("STRIPE_API_BASE", DEFAULT_API_BASE).rstrip("/")},
        )
        self.v1 = client.v1

    def post(self, sub: str, method: Callable, *args: str, **params: Any) -> dict:
        """A POST with the idempotency key ``<step key>-<sub>``, deterministic per attempt."""
        self.log.step = f"{self.step.name}:{sub}"
        options = {"idempotency_key": f"{self.step.idempotency_key}-{sub}"}
        return method(*args, params=params, options=options).to_dict()

    def get(self, sub: str, method: Callable, *args: str, **params: Any) -> dict:
        self.log.step = f"{self.step.name}:{sub}"
        return method(*args, params=params).to_dict()

    def each(self, sub: str, method: Callable, **params: Any) -> Iterator[dict]:
        """Every object of a list, page by page (each page recorded)."""
        self.log.step = f"{self.step.name}:{sub}"
        for obj in method(params=params).auto_paging_iter():
            yield obj.to_dict()

    def result(self, outcome: str, note: str = "", **kwargs: Any) -> RailResult:
        exchanges = tuple(self.log.exchanges)
        if self.sandbox:  # placeholder ids are not Stripe's: keep none
            return RailResult(
                outcome, exchanges=exchanges, sandbox=True, note=SANDBOX_NOTE, **kwargs
            )
        return RailResult(outcome, external_ids=self.ids, exchanges=exchanges, note=note, **kwargs)

    def failed(self, error: str, *, retryable: bool, retry_after: int | None = None) -> RailResult:
        return self.result(
            "failed", error=error, retryable=retryable, retry_after_seconds=retry_after
        )

    def run(self, flow: Callable[[StripeSession], RailResult]) -> RailResult:
        """Run a flow; our stops and Stripe's errors become failed results."""
        try:
            return flow(self)
        except StripeStop as stop:
            return self.failed(str(stop), retryable=stop.retryable)
        except stripe.StripeError as exc:
            return self._stripe_failure(exc)

    def _stripe_failure(self, exc: stripe.StripeError) -> RailResult:
        """Transient errors retryable (after Retry-After); card declines and other
        refusals not (Stripe reports a later payment by webhook)."""
        message = " ".join((exc.user_message or str(exc) or type(exc).__name__).split())
        status = exc.http_status
        if isinstance(exc, stripe.APIConnectionError):
            return self.failed(f"Could not reach Stripe: {message}", retryable=True)
        if isinstance(exc, stripe.CardError):
            code = getattr(exc.error, "decline_code", None) or exc.code or "declined"
            return self.failed(f"Payment declined ({code}): {message}", retryable=False)
        transient = isinstance(exc, stripe.RateLimitError | stripe.APIError)
        if transient or status in (409, 429) or (status or 0) >= 500:
            retry_after = str((exc.headers or {}).get("Retry-After", ""))  # case-insensitive
            seconds = max(1, int(retry_after)) if retry_after.isdigit() else None
            return self.failed(
                f"Stripe is unavailable ({status}): {message}", retryable=True, retry_after=seconds
            )
        return self.failed(f"Stripe refused the request ({status}): {message}", retryable=False)
