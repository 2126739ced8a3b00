"""A local fake of Kong's Admin API ``GET /consumers``: Kong's page shape (``data``,
``next`` as a path, ``offset``), ``size`` and ``offset`` parameters, and an RBAC token
checked in a header (``Kong-Admin-Token`` unless told otherwise).

Test controls: ``consumers`` (what Kong holds), ``token``/``token_header``, ``broken_page``
(that page answers a body that is not JSON), ``requests`` (the paths asked).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit


class FakeKongAdmin:
    def __init__(self, *, consumers: list[dict], token: str = "", prefix: str = "") -> None:
        self.consumers = consumers
        self.token = token
        self.token_header = "Kong-Admin-Token"
        self.prefix = prefix  # an Admin API served under a path, e.g. behind a proxy
        self.broken_page: int | None = None
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                fake.requests.append(self.path)
                status, body = fake.answer(self.path, self.headers)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{self.prefix}"

    def start(self) -> FakeKongAdmin:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, raw_path: str, headers) -> tuple[int, object]:
        if self.token and headers.get(self.token_header) != self.token:
            return 401, {"message": "Invalid credentials. Token or User credentials required"}
        parts = urlsplit(raw_path)
        if parts.path != f"{self.prefix}/consumers":
            return 404, {"message": "Not found"}
        query = parse_qs(parts.query)
        size = int(query.get("size", ["100"])[0])
        start = int(query.get("offset", ["0"])[0])
        page_number = start // size
        if self.broken_page == page_number:
            return 200, b"<html>502 Bad Gateway</html>"
        page = self.consumers[start : start + size]
        end = start + size
        more = end < len(self.consumers)
        body: dict = {"data": page, "next": None}
        if more:
            # Kong's offsets are opaque; a number is enough for a fake
            body["offset"] = str(end)
            # Kong behind a proxy does not know the proxy's prefix: ``next`` is relative
            # to the Admin API's base URL
            body["next"] = f"/consumers?{urlencode({'offset': end, 'size': size})}"
        return 200, body


def kong_consumer(n: int, **fields) -> dict:
    return {
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "username": f"user-{n}",
        "custom_id": None,
        "created_at": 1700000000 + n,
        "updated_at": 1700000000 + n,
        "tags": ["team-a"],
        **fields,
    }
