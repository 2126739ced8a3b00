"""A local stand-in for NetSuite's SuiteTalk REST API that checks OAuth 1.0 signatures
itself (RFC 5849 base string, HMAC-SHA256 with the consumer and token secrets), upserts
records by external id, and can be told to answer 429 or 500."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, quote, urlsplit

ACCOUNT = "1234567_SB1"
CONSUMER_KEY, CONSUMER_SECRET = "ck-test", "cs-test"
TOKEN_ID, TOKEN_SECRET = "tk-test", "ts-test"


def _enc(value: str) -> str:
    return quote(value, safe="~-._")


def signature_valid(method: str, url: str, authorization: str) -> tuple[bool, str]:
    if not authorization.startswith("OAuth "):
        return False, "no OAuth header"
    params = dict(
        (k.strip(), v.strip().strip('"'))
        for k, v in (p.split("=", 1) for p in authorization[6:].split(","))
    )
    params = {k: _unquote(v) for k, v in params.items()}
    if params.get("realm") != ACCOUNT:
        return False, f"realm {params.get('realm')!r} is not the account"
    if params.get("oauth_signature_method") != "HMAC-SHA256":
        return False, "signature method must be HMAC-SHA256"
    if (params.get("oauth_consumer_key"), params.get("oauth_token")) != (CONSUMER_KEY, TOKEN_ID):
        return False, "unknown consumer or token"
    parts = urlsplit(url)
    pairs = [(k, v) for k, v in params.items() if k.startswith("oauth_") and k != "oauth_signature"]
    pairs += parse_qsl(parts.query, keep_blank_values=True)
    normalized = "&".join(f"{k}={v}" for k, v in sorted((_enc(k), _enc(v)) for k, v in pairs))
    base_uri = f"{parts.scheme}://{parts.netloc.lower()}{parts.path}"
    base = "&".join([method.upper(), _enc(base_uri), _enc(normalized)])
    key = f"{_enc(CONSUMER_SECRET)}&{_enc(TOKEN_SECRET)}"
    expected = base64.b64encode(
        hmac.new(key.encode(), base.encode(), hashlib.sha256).digest()
    ).decode()
    return hmac.compare_digest(expected, params.get("oauth_signature", "")), "signature mismatch"


def _unquote(value: str) -> str:
    from urllib.parse import unquote

    return unquote(value)


class FakeNetSuite:
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_next: list[int] = []  # status codes to answer before working again
        self.next_id = 1000
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(
                self, status: int, body: dict | None = None, headers: dict | None = None
            ) -> None:
                payload = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if body is not None:
                    self.send_header(
                        "Content-Type",
                        "application/vnd.oracle.resource+json; type=error"
                        if status >= 400
                        else "application/json",
                    )
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                url = f"http://{self.headers['Host']}{self.path}"
                server.requests.append((method, self.path))
                ok, why = signature_valid(method, url, self.headers.get("Authorization", ""))
                if not ok:
                    return self._answer(
                        401,
                        {
                            "type": "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.2",
                            "title": "Unauthorized",
                            "status": 401,
                            "o:errorDetails": [
                                {
                                    "detail": f"Invalid login attempt ({why}).",
                                    "o:errorCode": "INVALID_LOGIN",
                                }
                            ],
                        },
                    )
                if server.fail_next:
                    status = server.fail_next.pop(0)
                    headers = {"Retry-After": "7"} if status == 429 else {}
                    return self._answer(
                        status,
                        {
                            "title": "Too Many Requests" if status == 429 else "Server Error",
                            "status": status,
                            "o:errorDetails": [
                                {
                                    "detail": "Concurrent request limit exceeded."
                                    if status == 429
                                    else "An unexpected error occurred.",
                                    "o:errorCode": "CONCURRENCY_LIMIT_EXCEEDED"
                                    if status == 429
                                    else "UNEXPECTED_ERROR",
                                }
                            ],
                        },
                        headers,
                    )
                path = urlsplit(self.path).path.removeprefix("/services/rest/record/v1/")
                record_type, _, ref = path.partition("/")
                eid = ref.removeprefix("eid:")
                key = (record_type, eid)
                if method == "PUT":
                    if record_type == "invoice" and not body.get("item", {}).get("items"):
                        return self._answer(
                            400,
                            {
                                "title": "Bad Request",
                                "status": 400,
                                "o:errorDetails": [
                                    {
                                        "detail": "You must enter at least one line item for this transaction.",
                                        "o:errorCode": "USER_ERROR",
                                    }
                                ],
                            },
                        )
                    record = server.records.get(key)
                    if record is None:
                        server.next_id += 1
                        record = {"id": str(server.next_id)}
                    record.update(body)
                    if record_type == "invoice":
                        total = sum(float(i["amount"]) for i in body["item"]["items"])
                        record.setdefault("amountRemaining", total)
                    server.records[key] = record
                    location = f"http://{self.headers['Host']}/services/rest/record/v1/{record_type}/{record['id']}"
                    return self._answer(204, None, {"Location": location})
                if method == "PATCH":
                    server.records.setdefault(key, {}).update(body)
                    return self._answer(204)
                if method == "GET":
                    record = server.records.get(key)
                    if record is None:
                        return self._answer(
                            404,
                            {
                                "title": "Not Found",
                                "status": 404,
                                "o:errorDetails": [
                                    {
                                        "detail": f"Record {eid} not found.",
                                        "o:errorCode": "NONEXISTENT_ID",
                                    }
                                ],
                            },
                        )
                    return self._answer(200, record)
                return self._answer(405, {"title": "Method Not Allowed", "status": 405})

            def do_PUT(self):
                self._handle("PUT")

            def do_GET(self):
                self._handle("GET")

            def do_PATCH(self):
                self._handle("PATCH")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/services/rest"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def pay(self, invoice_eid: str) -> None:
        self.records[("invoice", invoice_eid)]["amountRemaining"] = 0
