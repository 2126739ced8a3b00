"""NetSuite over SuiteTalk REST: customers and invoices upserted by external id, payment
status polled, credit memos for credit notes.

Authentication is OAuth 1.0 token-based authentication (TBA) with HMAC-SHA256 and the
account id as realm (requests-oauthlib). Upserts (``PUT /record/v1/invoice/eid:...``)
are idempotent by construction: a retried attempt updates the record it created. A
configurable number of concurrent requests across all workers (NetSuite enforces an
account-wide limit and answers 429 past it) is kept with slots in the shared cache.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal

import requests
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from requests_oauthlib import OAuth1

from core.money import from_minor_units, money_text
from rails.base import CreditNoteDocument, Exchange, InvoiceDocument, RailResult, Step

SIGNATURE_METHOD = "HMAC-SHA256"


@dataclass(frozen=True)
class NetSuiteConfig:
    account_id: str
    consumer_key: str
    consumer_secret: str
    token_id: str
    token_secret: str
    base_url: str
    max_concurrency: int
    timeout: float

    @property
    def configured(self) -> bool:
        return all(
            [
                self.account_id,
                self.consumer_key,
                self.consumer_secret,
                self.token_id,
                self.token_secret,
            ]
        )


# What a sandbox's request URLs name when no NETSUITE_ACCOUNT_ID is set at all: plainly
# not a real account, yet a well-formed host (``your-account-id.suitetalk...``).
PLACEHOLDER_ACCOUNT_ID = "YOUR_ACCOUNT_ID"


def netsuite_account_host(account_id: str) -> str:
    """The account's label in NetSuite's host names: ``1234567_SB1`` -> ``1234567-sb1``."""
    return account_id.strip().lower().replace("_", "-")


def netsuite_base_url() -> str:
    """Where SuiteTalk REST requests go: ``NETSUITE_BASE_URL`` when set, else the URL
    derived from ``NETSUITE_ACCOUNT_ID``; with neither (sandbox only: the rail cannot be
    configured without an account), the URL of ``PLACEHOLDER_ACCOUNT_ID``."""
    explicit = getattr(settings, "NETSUITE_BASE_URL", "")
    if explicit:
        return explicit.rstrip("/")
    account = getattr(settings, "NETSUITE_ACCOUNT_ID", "") or PLACEHOLDER_ACCOUNT_ID
    return f"https://{netsuite_account_host(account)}.suitetalk.api.netsuite.com/services/rest"


def netsuite_config() -> NetSuiteConfig:
    return NetSuiteConfig(
        account_id=getattr(settings, "NETSUITE_ACCOUNT_ID", ""),
        consumer_key=getattr(settings, "NETSUITE_CONSUMER_KEY", ""),
        consumer_secret=getattr(settings, "NETSUITE_CONSUMER_SECRET", ""),
        token_id=getattr(settings, "NETSUITE_TOKEN_ID", ""),
        token_secret=getattr(settings, "NETSUITE_TOKEN_SECRET", ""),
        base_url=netsuite_base_url(),
        max_concurrency=int(getattr(settings, "NETSUITE_MAX_CONCURRENCY", 4)),
        timeout=float(getattr(settings, "NETSUITE_TIMEOUT_SECONDS", 30)),
    )


class _Retry(Exception):
    def __init__(
        self, message: str, retry_after: int | None = None, retryable: bool = True
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.retryable = retryable


@contextmanager
def _slot(config: NetSuiteConfig, wait_seconds: float = 10.0):
    """One of ``max_concurrency`` request slots shared by every worker."""
    deadline = time.monotonic() + wait_seconds
    while True:
        for i in range(config.max_concurrency):
            key = f"netsuite:slot:{config.account_id}:{i}"
            if cache.add(key, 1, timeout=int(config.timeout) + 30):
                try:
                    yield
                finally:
                    cache.delete(key)
                return
        if time.monotonic() > deadline:
            raise _Retry("All NetSuite request slots are busy; retrying later.", retry_after=30)
        time.sleep(0.05)


def _error_text(body: str) -> str:
    """NetSuite's error document (title and o:errorDetails) as one line."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:500]
    details = "; ".join(
        f"{d.get('o:errorCode', '')}: {d.get('detail', '')}".strip(": ")
        for d in doc.get("o:errorDetails", [])
    )
    return f"{doc.get('title', 'NetSuite error')} ({doc.get('status', '')}){': ' + details if details else ''}"


def _minor_to_amount(minor: int, currency: str) -> str | None:
    return money_text(from_minor_units(minor, currency), currency)


def _sandbox_note(config: NetSuiteConfig) -> str:
    note = "Sandbox: NetSuite credentials are not set; the requests were built, not sent."
    if not config.account_id and not getattr(settings, "NETSUITE_BASE_URL", ""):
        host = netsuite_account_host(PLACEHOLDER_ACCOUNT_ID)
        note += (
            f" NETSUITE_ACCOUNT_ID is not set either: their URLs name a placeholder"
            f" account ({host})."
        )
    return note


def _oauth(config: NetSuiteConfig) -> OAuth1:
    """Token-based authentication (OAuth 1.0a, HMAC-SHA256), signed per request."""
    return OAuth1(
        config.consumer_key,
        client_secret=config.consumer_secret,
        resource_owner_key=config.token_id,
        resource_owner_secret=config.token_secret,
        signature_method=SIGNATURE_METHOD,
        realm=config.account_id,
    )


def _refused_check(response: requests.Response) -> None:
    """Raise ``_Retry`` for an answer that is not a success: a 429 (concurrency limit)
    or a 5xx is retried, any other 4xx is final."""
    if response.status_code == 429:
        retry_after = response.headers.get("Retry-After")
        raise _Retry(
            "NetSuite concurrency limit exceeded (429).",
            retry_after=int(retry_after) if retry_after and retry_after.isdigit() else None,
        )
    if response.status_code >= 500:
        raise _Retry(f"NetSuite answered {response.status_code}: {_error_text(response.text)}")
    if response.status_code >= 400:
        raise _Retry(_error_text(response.text), retryable=False)


class NetSuiteRail:
    key = "netsuite"

    def is_sandbox(self) -> bool:
        return not netsuite_config().configured

    def clean_settings(self, rail_settings: dict) -> dict:
        entity = rail_settings.get("netsuite_entity_id")
        if entity is not None and not str(entity).strip().isdigit():
            raise ValidationError(
                "netsuite_entity_id: the customer's internal id in NetSuite (digits)."
            )
        terms = rail_settings.get("netsuite_terms_days")
        if terms is not None and (not isinstance(terms, int) or terms < 0):
            raise ValidationError("netsuite_terms_days: a whole number of days.")
        return rail_settings

    # -------------------------------------------------------------- requests

    def _call(
        self,
        exchanges: list,
        config: NetSuiteConfig,
        *,
        step: str,
        method: str,
        path: str,
        body: dict | None,
        key: str,
    ) -> requests.Response | None:
        url = f"{config.base_url}{path}"
        payload = json.dumps(body, sort_keys=True) if body is not None else ""
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Prefer": "transient",
        }
        if not config.configured:
            exchanges.append(
                Exchange(
                    step=step,
                    method=method,
                    url=url,
                    request_headers=headers,
                    request_body=payload,
                    idempotency_key=key,
                    sent=False,
                )
            )
            return None
        try:
            with _slot(config):
                response = requests.request(
                    method,
                    url,
                    data=payload or None,
                    headers=headers,
                    auth=_oauth(config),
                    timeout=config.timeout,
                )
        except requests.RequestException as exc:
            exchanges.append(
                Exchange(
                    step=step,
                    method=method,
                    url=url,
                    request_headers=headers,
                    request_body=payload,
                    error=str(exc),
                    idempotency_key=key,
                )
            )
            raise _Retry(f"NetSuite unreachable: {exc}") from exc
        exchanges.append(
            Exchange(
                step=step,
                method=method,
                url=url,
                request_headers={**headers, "Authorization": "OAuth ..."},
                request_body=payload,
                status_code=response.status_code,
                response_body=response.text[:20000],
                idempotency_key=key,
            )
        )
        _refused_check(response)
        return response

    def _run(self, steps) -> RailResult:
        exchanges: list[Exchange] = []
        config = netsuite_config()
        try:
            outcome, ids, note = steps(exchanges, config)
        except _Retry as exc:
            return RailResult(
                outcome="failed",
                exchanges=tuple(exchanges),
                error=str(exc),
                retryable=exc.retryable,
                retry_after_seconds=exc.retry_after,
            )
        if not config.configured:
            return RailResult(
                outcome="submitted",
                exchanges=tuple(exchanges),
                sandbox=True,
                note=_sandbox_note(config),
            )
        return RailResult(outcome=outcome, external_ids=ids, exchanges=tuple(exchanges), note=note)

    # -------------------------------------------------------------- the protocol

    @staticmethod
    def _invoice_body(invoice: InvoiceDocument, customer_ref: dict) -> dict:
        terms = invoice.customer.rail_settings.get("netsuite_terms_days")
        items = []
        for line in invoice.lines:
            item = {
                "description": line.description[:4000],
                "amount": _minor_to_amount(line.amount_minor, invoice.currency),
            }
            if line.rail_item:
                item["item"] = {"id": line.rail_item}
            if line.quantity is not None:
                item["quantity"] = line.quantity
            items.append(item)
        body = {
            "externalId": invoice.id,
            "tranId": invoice.number,
            "entity": customer_ref,
            "tranDate": invoice.issued_at.date().isoformat(),
            "dueDate": invoice.due_at.date().isoformat(),
            "currency": {"refName": invoice.currency},
            "memo": f"Usage billing invoice {invoice.number}",
            "item": {"items": items},
        }
        if invoice.period_start and invoice.period_end:
            body["startDate"] = invoice.period_start.date().isoformat()
            body["endDate"] = invoice.period_end.date().isoformat()
        if terms is not None:
            body["custbody_net_terms_days"] = terms
        return body

    def _customer_ref(self, exchanges, config, invoice: InvoiceDocument, step: Step) -> dict:
        entity_id = invoice.customer.rail_settings.get("netsuite_entity_id")
        if entity_id:
            return {"id": str(entity_id)}
        party = invoice.customer
        self._call(
            exchanges,
            config,
            step="customer",
            method="PUT",
            path=f"/record/v1/customer/eid:{party.key}",
            key=f"{step.idempotency_key}-customer",
            body={
                "externalId": party.key,
                "companyName": party.name,
                "email": party.email,
                "subsidiary": {"id": str(getattr(settings, "NETSUITE_SUBSIDIARY_ID", "1"))},
            },
        )
        return {"externalId": party.key}

    def submit(self, *, invoice: InvoiceDocument, step: Step) -> RailResult:
        def steps(exchanges, config):
            customer_ref = self._customer_ref(exchanges, config, invoice, step)
            response = self._call(
                exchanges,
                config,
                step="invoice",
                method="PUT",
                path=f"/record/v1/invoice/eid:{invoice.id}",
                body=self._invoice_body(invoice, customer_ref),
                key=f"{step.idempotency_key}-invoice",
            )
            location = response.headers.get("Location", "") if response is not None else ""
            ids = {"netsuite_invoice_eid": invoice.id}
            if location:
                ids["netsuite_invoice_id"] = location.rstrip("/").rsplit("/", 1)[-1]
            return "submitted", ids, "Invoice upserted in NetSuite; payment is polled."

        return self._run(steps)

    def check(self, *, invoice: InvoiceDocument, step: Step) -> RailResult:
        def steps(exchanges, config):
            response = self._call(
                exchanges,
                config,
                step="status",
                method="GET",
                path=f"/record/v1/invoice/eid:{invoice.id}?fields=amountRemaining,status",
                body=None,
                key="",
            )
            if response is None:
                return "pending", {}, ""
            doc = response.json()
            remaining = doc.get("amountRemaining")
            if remaining is not None and Decimal(str(remaining)) == 0:
                return "paid", {}, "NetSuite shows nothing remaining."
            return "pending", {}, f"NetSuite shows {remaining} remaining."

        result = self._run(steps)
        if result.outcome == "submitted" and result.sandbox:
            return RailResult(
                outcome="pending", exchanges=result.exchanges, sandbox=True, note=result.note
            )
        return result

    def void(self, *, invoice: InvoiceDocument, step: Step) -> RailResult:
        def steps(exchanges, config):
            self._call(
                exchanges,
                config,
                step="void",
                method="PATCH",
                path=f"/record/v1/invoice/eid:{invoice.id}",
                body={"status": {"id": "Voided"}},
                key=f"{step.idempotency_key}",
            )
            return "voided", {}, "Voided in NetSuite."

        result = self._run(steps)
        return (
            RailResult(outcome="voided", exchanges=result.exchanges, sandbox=result.sandbox)
            if result.sandbox
            else result
        )

    def credit(
        self, *, credit_note: CreditNoteDocument, invoice: InvoiceDocument, step: Step
    ) -> RailResult:
        def steps(exchanges, config):
            customer_ref = self._customer_ref(exchanges, config, invoice, step)
            default_item = next((line.rail_item for line in invoice.lines if line.rail_item), None)
            item = {
                "description": f"Credit note {credit_note.number}: {credit_note.reason}"[:4000],
                "amount": _minor_to_amount(credit_note.amount_minor, credit_note.currency),
            }
            if default_item:
                item["item"] = {"id": default_item}
            self._call(
                exchanges,
                config,
                step="credit_memo",
                method="PUT",
                path=f"/record/v1/creditMemo/eid:{credit_note.id}",
                key=f"{step.idempotency_key}",
                body={
                    "externalId": credit_note.id,
                    "tranId": credit_note.number,
                    "entity": customer_ref,
                    "createdFrom": {"externalId": invoice.id},
                    "tranDate": credit_note.issued_at.date().isoformat(),
                    "memo": credit_note.reason[:999],
                    "item": {"items": [item]},
                },
            )
            return (
                "submitted",
                {f"netsuite_credit_memo_{credit_note.number}": credit_note.id},
                "Credit memo upserted.",
            )

        return self._run(steps)
