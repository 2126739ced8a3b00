"""Rendering an invoice or credit note PDF makes no request and reads no file: the
documents reference no resource, and the renderer refuses every fetch."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from billing.documents.pdf import _pdf


def test_a_url_inside_a_document_is_never_fetched_while_rendering():
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        pdf = _pdf(
            f'<link rel="stylesheet" href="{base}/style.css">'
            f'<p>Invoice</p><img src="{base}/pixel.png"><img src="file:///etc/hostname">'
            f'<div style="background: url({base}/bg.png)">x</div>'
        )
    finally:
        server.shutdown()
        server.server_close()

    assert pdf.startswith(b"%PDF")
    assert requests == []
