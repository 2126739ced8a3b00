"""A local fake of just enough of Stripe's API for the real ``stripe`` library to run
against: customers (create, search by metadata), invoices (create, list, retrieve,
update, finalize, pay, void, delete), invoice items and credit notes, with Stripe-like
JSON objects and form-encoded request bodies.

Like Stripe it checks the bearer key, and it honours ``Idempotency-Key``: a POST with a
key it has seen gets the stored answer back (``Idempotent-Replayed: true``), and the same
key with other parameters is an ``idempotency_error``. Answers are stored once the
endpoint ran; injected faults (``fail_next``) happen before that and are not stored.

Test controls: ``fail_next`` (500 / 429 with Retry-After for the next N requests),
``stop``/``start`` (connection refused, state kept), ``total_offset`` (Stripe's total
differs from the items), ``decline`` (the card is declined), ``processing`` (pay leaves
the invoice open), ``search_visible`` (Stripe's search lags behind writes).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import stripe


@dataclass
class Seen:
    """One request as the fake received it."""

    method: str
    path: str
    params: dict
    idempotency_key: str
    status: int = 0
    replayed: bool = False
    executed: bool = False


@dataclass
class _Fault:
    remaining: int
    status: int
    retry_after: int | None
    path: str | None


def form_decode(text: str) -> dict:
    """Stripe's form encoding (``metadata[k]=v``, ``expand[0]=x``) back into objects."""
    root: dict = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        parts = re.findall(r"[^\[\]]+", key)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def lists(node):
        if isinstance(node, dict):
            if node and all(k.isdigit() for k in node):
                return [lists(node[k]) for k in sorted(node, key=int)]
            return {k: lists(v) for k, v in node.items()}
        return node

    return lists(root)


class _Error(Exception):
    def __init__(
        self, status: int, message: str, type_: str = "invalid_request_error", **extra
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"type": type_, "message": message, **extra}}


def _page(objects: list[dict], url: str, object_type: str = "list") -> dict:
    return {"object": object_type, "data": objects, "has_more": False, "url": url}


class FakeStripe:
    def __init__(self, api_key: str = "sk_test_fake_4eC39HqLyjWDarjtT1zdp7dc") -> None:
        self.api_key = api_key
        self.lock = threading.RLock()
        self.customers: dict[str, dict] = {}
        self.invoices: dict[str, dict] = {}
        self.items: dict[str, dict] = {}
        self.credit_notes: dict[str, dict] = {}
        self.charges: list[dict] = []
        self.seen: list[Seen] = []
        self.idempotency: dict[str, tuple[str, str, dict, int, dict]] = {}
        self.faults: list[_Fault] = []
        self.total_offset = 0
        self.decline = False
        self.processing = False
        self.search_visible = True
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    # -------------------------------------------------------------- server

    def start(self) -> FakeStripe:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                status, headers, answer = fake.handle(
                    self.command, self.path, dict(self.headers), body
                )
                data = json.dumps(answer).encode()
                self.send_response(status)
                for name, value in {
                    **headers,
                    "Content-Type": "application/json",
                    "Content-Length": str(len(data)),
                }.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        """Close the port (connections are refused); the stored state is kept."""
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -------------------------------------------------------------- test controls

    def fail_next(
        self, n: int, status: int = 500, *, retry_after: int | None = None, path: str | None = None
    ) -> None:
        """Answer ``status`` to the next ``n`` requests (whose path contains ``path``)."""
        self.faults.append(_Fault(n, status, retry_after, path))

    def requests(
        self, method: str | None = None, path: str = "", *, executed: bool | None = None
    ) -> list[Seen]:
        """Requests received, filtered by method, a path regex (searched) and whether the
        endpoint ran (not a fault, not a replay)."""
        return [
            s
            for s in self.seen
            if (method is None or s.method == method)
            and re.search(path, s.path)
            and (executed is None or s.executed == executed)
        ]

    def pays(self) -> list[Seen]:
        return self.requests("POST", r"/pay$", executed=True)

    def counts(self) -> dict:
        """What Stripe holds, and how many times it charged."""
        held = {"customers": self.customers, "invoices": self.invoices, "items": self.items}
        return {name: len(objects) for name, objects in held.items()} | {"pays": len(self.pays())}

    def mark_paid(self, invoice_id: str) -> dict:
        """Stripe collected on its own (a Smart Retry, a bank debit that cleared)."""
        with self.lock:
            inv = self.invoices[invoice_id]
            self._paid(inv)
            return copy.deepcopy(inv)

    # -------------------------------------------------------------- dispatch

    def handle(
        self, method: str, raw_path: str, headers: dict, body: str
    ) -> tuple[int, dict, dict]:
        """One request, as Stripe would answer it: (status, headers, JSON body)."""
        with self.lock:
            parts = urlsplit(raw_path)
            params = form_decode(body if method == "POST" else parts.query)
            headers = {k.lower(): v for k, v in headers.items()}
            key = headers.get("idempotency-key", "")
            seen = Seen(method, parts.path, params, key)
            self.seen.append(seen)
            out = {"Request-Id": f"req_{next(self._ids)}"}
            stored = self.idempotency.get(key) if method == "POST" else None
            try:
                self._refuse(parts.path, headers, out)
                if stored and stored[:3] != (method, parts.path, params):
                    raise _Error(
                        400,
                        "Keys for idempotent requests can only be used with the same "
                        f"parameters they were first used with (key '{key}').",
                        "idempotency_error",
                    )
                if stored:
                    seen.replayed, (status, answer) = True, stored[3:]
                    out["Idempotent-Replayed"] = "true"
                else:
                    seen.executed = True
                    status, answer = 200, self._route(method, parts.path, params)
            except _Error as exc:
                status, answer = exc.status, exc.body
            if (
                seen.executed and method == "POST" and key
            ):  # the endpoint ran: Stripe keeps its answer
                self.idempotency[key] = (method, parts.path, params, status, answer)
            seen.status = status
            return status, out, copy.deepcopy(answer)

    def _refuse(self, path: str, headers: dict, out: dict) -> None:
        """Injected faults first (before the endpoint runs, so nothing is stored), then auth."""
        for fault in self.faults:
            if fault.remaining > 0 and (fault.path is None or fault.path in path):
                fault.remaining -= 1
                if fault.retry_after is not None:
                    out["Retry-After"] = str(fault.retry_after)
                if fault.status == 429:
                    raise _Error(429, "Too many requests.", code="rate_limit")
                raise _Error(fault.status, "Fake outage.", "api_error")
        if headers.get("authorization") != f"Bearer {self.api_key}":
            raise _Error(401, "Invalid API Key provided.")

    def _route(self, method: str, path: str, params: dict) -> dict:
        routes = [
            ("POST", r"/v1/customers", self._customer_create),
            ("GET", r"/v1/customers/search", self._customer_search),
            ("GET", r"/v1/customers/(cus_\w+)", self._customer_retrieve),
            ("POST", r"/v1/invoices", self._invoice_create),
            ("GET", r"/v1/invoices", self._invoice_list),
            ("GET", r"/v1/invoices/(in_\w+)", self._invoice_retrieve),
            ("POST", r"/v1/invoices/(in_\w+)", self._invoice_update),
            ("DELETE", r"/v1/invoices/(in_\w+)", self._invoice_delete),
            ("POST", r"/v1/invoices/(in_\w+)/finalize", self._invoice_finalize),
            ("POST", r"/v1/invoices/(in_\w+)/pay", self._invoice_pay),
            ("POST", r"/v1/invoices/(in_\w+)/void", self._invoice_void),
            ("POST", r"/v1/invoiceitems", self._item_create),
            ("GET", r"/v1/invoiceitems", self._item_list),
            ("POST", r"/v1/credit_notes", self._credit_note_create),
        ]
        for verb, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if verb == method and match:
                return copy.deepcopy(handler(params, *match.groups()))
        raise _Error(404, f"Unrecognized request URL ({method}: {path}).")

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids):06d}"

    def _get(self, store: dict, object_id: str, kind: str) -> dict:
        if object_id not in store:
            raise _Error(404, f"No such {kind}: '{object_id}'", code="resource_missing")
        return store[object_id]

    # -------------------------------------------------------------- customers

    def _customer_create(self, p: dict) -> dict:
        customer = {"id": self._new_id("cus"), "object": "customer", "livemode": False}
        customer |= {k: p.get(k) for k in ("name", "email", "address")}
        customer |= {"metadata": p.get("metadata", {}), "created": int(time.time())}
        self.customers[customer["id"]] = customer
        return customer

    def _customer_retrieve(self, p: dict, customer_id: str) -> dict:
        return self._get(self.customers, customer_id, "customer")

    def _customer_search(self, p: dict) -> dict:
        match = re.fullmatch(r"metadata\['(\w+)'\]:'((?:[^'\\]|\\.)*)'", p.get("query", ""))
        if not match:
            raise _Error(400, "Unsupported search query (fake).")
        name, value = match.group(1), re.sub(r"\\(.)", r"\1", match.group(2))
        found = (
            [c for c in self.customers.values() if c["metadata"].get(name) == value]
            if self.search_visible
            else []
        )
        return _page(found, "/v1/customers/search", "search_result")

    # -------------------------------------------------------------- invoices

    def _invoice_create(self, p: dict) -> dict:
        self._get(self.customers, p.get("customer", ""), "customer")
        if not p.get("currency"):
            raise _Error(400, "Missing required param: currency.", param="currency")
        invoice_id = self._new_id("in")
        invoice = {"id": invoice_id, "object": "invoice", "status": "draft", "livemode": False}
        invoice |= {k: p.get(k) for k in ("customer", "currency", "description")}
        invoice |= {
            "metadata": p.get("metadata", {}),
            "auto_advance": p.get("auto_advance") == "true",
        }
        invoice |= {"collection_method": p.get("collection_method", "charge_automatically")}
        invoice |= dict.fromkeys(("number", "hosted_invoice_url", "next_payment_attempt"), None)
        amounts = ("subtotal", "total", "amount_due", "amount_paid", "amount_remaining")
        invoice |= dict.fromkeys((*amounts, "attempt_count"), 0) | {"attempted": False}
        invoice |= dict.fromkeys(
            ("pre_payment_credit_notes_amount", "post_payment_credit_notes_amount"), 0
        )
        invoice |= {"created": int(time.time()), "_payments": []}
        invoice["lines"] = _page([], f"/v1/invoices/{invoice_id}/lines")
        self.invoices[invoice_id] = invoice
        return self._public(invoice)

    def _public(self, invoice: dict, expand: list | None = None) -> dict:
        out = {k: v for k, v in invoice.items() if not k.startswith("_")}
        if "payments" in (expand or []):
            out["payments"] = _page(invoice["_payments"], "/v1/invoice_payments")
        return out

    def _invoice_list(self, p: dict) -> dict:
        found = [
            self._public(i)
            for i in self.invoices.values()
            if p.get("customer") in (None, i["customer"])
        ]
        return _page(sorted(found, key=lambda i: i["id"], reverse=True), "/v1/invoices")

    def _invoice_retrieve(self, p: dict, invoice_id: str) -> dict:
        return self._public(self._get(self.invoices, invoice_id, "invoice"), p.get("expand"))

    def _invoice_update(self, p: dict, invoice_id: str) -> dict:
        invoice = self._get(self.invoices, invoice_id, "invoice")
        if "auto_advance" in p:
            invoice["auto_advance"] = p["auto_advance"] == "true"
        invoice["metadata"].update(p.get("metadata", {}))
        return self._public(invoice)

    def _invoice_delete(self, p: dict, invoice_id: str) -> dict:
        invoice = self._get(self.invoices, invoice_id, "invoice")
        if invoice["status"] != "draft":
            raise _Error(400, "You can only delete draft invoices.")
        del self.invoices[invoice_id]
        return {"id": invoice_id, "object": "invoice", "deleted": True}

    def _invoice_finalize(self, p: dict, invoice_id: str) -> dict:
        invoice = self._get(self.invoices, invoice_id, "invoice")
        if invoice["status"] != "draft":
            raise _Error(400, "This invoice is already finalized.", code="invoice_not_editable")
        subtotal = sum(line["amount"] for line in invoice["lines"]["data"])
        total = subtotal + self.total_offset
        invoice.update(
            subtotal=subtotal,
            total=total,
            amount_due=max(total, 0),
            amount_remaining=max(total, 0),
            status="open",
            number=f"FAKE-{next(self._ids):04d}",
            hosted_invoice_url=f"{self.url}/i/{invoice_id}",
            auto_advance=p.get("auto_advance", "false") == "true",
        )
        if invoice["amount_due"] == 0:
            self._paid(invoice)
        return self._public(invoice)

    def _paid(self, invoice: dict) -> None:
        intent = self._new_id("pi")
        charge = {
            "id": self._new_id("ch"),
            "object": "charge",
            "payment_intent": intent,
            "metadata": {},
        }
        charge |= {"amount": invoice["amount_due"], "currency": invoice["currency"]}
        charge |= {"refunded": False, "amount_refunded": 0}
        self.charges.append(charge)
        payment = {"type": "payment_intent", "payment_intent": intent}
        payment_id = self._new_id("inpay")
        invoice["_payments"].append(
            {"id": payment_id, "object": "invoice_payment", "status": "paid", "payment": payment}
        )
        invoice.update(
            status="paid", amount_paid=invoice["amount_due"], amount_remaining=0, attempted=True
        )

    def _invoice_pay(self, p: dict, invoice_id: str) -> dict:
        invoice = self._get(self.invoices, invoice_id, "invoice")
        if invoice["status"] == "paid":
            raise _Error(400, "Invoice is already paid.", code="invoice_already_paid")
        if invoice["status"] != "open":
            raise _Error(400, f"You cannot pay an invoice that is {invoice['status']}.")
        invoice["attempt_count"] += 1
        invoice["attempted"] = True
        if self.decline:
            raise _Error(
                402,
                "Your card has insufficient funds.",
                "card_error",
                code="card_declined",
                decline_code="insufficient_funds",
            )
        if not self.processing:
            self._paid(invoice)
        return self._public(invoice, p.get("expand"))

    def _invoice_void(self, p: dict, invoice_id: str) -> dict:
        invoice = self._get(self.invoices, invoice_id, "invoice")
        if invoice["status"] not in ("open", "uncollectible"):
            raise _Error(
                400,
                f"You can only void open or uncollectible invoices; this one is {invoice['status']}.",
            )
        invoice.update(status="void", amount_remaining=0)
        return self._public(invoice)

    # -------------------------------------------------------------- items and credit notes

    def _item_create(self, p: dict) -> dict:
        invoice = self._get(self.invoices, p.get("invoice", ""), "invoice")
        if invoice["status"] != "draft":
            raise _Error(400, "Invoice items can only be added to draft invoices.")
        if p.get("currency") != invoice["currency"] or p.get("customer") != invoice["customer"]:
            raise _Error(400, "The item's currency and customer must match its invoice's.")
        item = {"id": self._new_id("ii"), "object": "invoiceitem", "invoice": invoice["id"]}
        item |= {k: p.get(k) for k in ("currency", "customer", "description")}
        item |= {"amount": int(p["amount"]), "metadata": p.get("metadata", {})}
        self.items[item["id"]] = item
        line = {k: item[k] for k in ("amount", "currency", "description", "metadata")}
        invoice["lines"]["data"].append({"id": self._new_id("il"), "object": "line_item", **line})
        invoice["subtotal"] = invoice["total"] = sum(
            line["amount"] for line in invoice["lines"]["data"]
        )
        return item

    def _item_list(self, p: dict) -> dict:
        return _page(
            [i for i in self.items.values() if p.get("invoice") in (None, i["invoice"])],
            "/v1/invoiceitems",
        )

    def _credit_note_create(self, p: dict) -> dict:
        invoice = self._get(self.invoices, p.get("invoice", ""), "invoice")
        if invoice["status"] not in ("open", "paid"):
            raise _Error(400, f"You cannot credit an invoice that is {invoice['status']}.")
        amount = int(p["amount"])
        credited = sum(
            c["amount"] for c in self.credit_notes.values() if c["invoice"] == invoice["id"]
        )
        if amount + credited > invoice["total"]:
            raise _Error(400, "The credit note amount is more than the invoice's remaining total.")
        pre = min(amount, invoice["amount_remaining"])
        post = amount - pre
        settled = sum(
            int(p.get(k, 0)) for k in ("refund_amount", "credit_amount", "out_of_band_amount")
        )
        if post and settled != post:
            raise _Error(
                400,
                f"The sum of credit amount, refund amount and out of band amount ({settled}) must "
                f"equal the credit note's post-payment amount ({post}).",
            )
        invoice["amount_remaining"] -= pre
        invoice["amount_due"] -= pre
        invoice["pre_payment_credit_notes_amount"] += pre
        invoice["post_payment_credit_notes_amount"] += post
        note = {"id": self._new_id("cn"), "object": "credit_note", "invoice": invoice["id"]}
        note |= {"amount": amount, "memo": p.get("memo"), "metadata": p.get("metadata", {})}
        note |= {"status": "issued", "refund_amount": int(p.get("refund_amount", 0))}
        note |= {"pre_payment_amount": pre, "post_payment_amount": post}
        self.credit_notes[note["id"]] = note
        return note


def signed_event(
    event_type: str,
    obj: dict,
    *,
    secret: str,
    event_id: str | None = None,
    timestamp: int | None = None,
) -> tuple[bytes, str]:
    """A Stripe event and its ``Stripe-Signature`` header, signed as Stripe signs them."""
    event = {"id": event_id or f"evt_{time.time_ns()}", "object": "event", "type": event_type}
    event |= {"api_version": "2026-10-28.endive", "created": int(time.time()), "livemode": False}
    event |= {"data": {"object": obj}, "pending_webhooks": 1, "request": {"id": None}}
    payload = json.dumps(event)
    return payload.encode(), stripe.WebhookSignature.generate_signature_header(
        payload, secret, timestamp
    )
