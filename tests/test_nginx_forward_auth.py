"""A real nginx in front of a small upstream asks the billing's forward-auth endpoint
(``auth_request``) before each request: a Free customer's calls pass until its hard
limit, then nginx answers 403 and the upstream sees no more of them."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.utils import timezone

from billing.catalog.services import subscription_create
from core.services import api_key_create
from metering.models import Meter
from metering.rollup import meter_rollup
from metering.services import feature_create, meter_create
from tests.factories import ConsumerMappingFactory, CustomerFactory, PlanVersionFactory
from tests.nginx import NginxUnavailable, free_port, nginx_conf, nginx_ensure, nginx_running

LIMIT = 3

DOCS = Path(__file__).resolve().parent.parent / "docs" / "gateways.md"


def documented_server(*, port: int, upstream_port: int, billing: str, key: str) -> str:
    """The nginx ``server`` block docs/gateways.md shows, with this test's ports, billing
    URL and key put in place of the example's: the test runs the documented config."""
    text = DOCS.read_text()
    block = text.split("```nginx\n", 1)[1].split("```", 1)[0]
    for example, actual in (
        ("127.0.0.1:8080", f"127.0.0.1:{port}"),
        ("http://127.0.0.1:9000", f"http://127.0.0.1:{upstream_port}"),
        ("http://billing.example.com", billing),
        ("<the key>", key),
    ):
        assert example in block, f"docs/gateways.md's nginx example lost {example!r}"
        block = block.replace(example, actual)
    return block


class Upstream:
    """A tiny HTTP service on loopback that counts the requests reaching it."""

    def __init__(self) -> None:
        self.count = 0
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                upstream.count += 1
                body = b'{"flights": []}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream():
    service = Upstream()
    yield service
    service.stop()


@pytest.fixture
def nginx_installed():
    try:
        nginx_ensure()
    except NginxUnavailable as exc:
        pytest.skip(f"nginx cannot be installed here: {exc}")


@pytest.fixture
def free_customer(transactional_db):
    """A Free plan with a hard limit of 3 API calls; acme subscribed, its gateway
    consumer acme-gw mapped to it."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    meter = meter_create(key="api_requests", event_type="request", aggregation="COUNT")
    calls = feature_create(key="api_calls", meter=meter)
    version = PlanVersionFactory(
        free=True,
        feature=calls,
        entitlements=({"feature": "api_calls", "type": "metered", "limit": LIMIT, "hard": True},),
    )
    acme = CustomerFactory(key="acme")
    subscription_create(customer=acme, plan_version=version, start=start)
    ConsumerMappingFactory(consumer_key="acme-gw", customer=acme, valid_from=start)
    return calls


def get(url: str, headers: dict | None = None, data: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.django_db(transaction=True)
def test_nginx_stops_a_free_customer_at_its_hard_limit_before_the_upstream(
    nginx_installed, free_customer, live_server, upstream, tmp_path: Path
):
    gateway_key = api_key_create(name="nginx", scopes=["read"]).secret
    ingest_key = api_key_create(name="usage", scopes=["ingest"]).secret
    port = free_port()
    prefix = tmp_path / "nginx"
    conf = nginx_conf(
        prefix=prefix,
        port=port,
        servers=documented_server(
            port=port,
            upstream_port=upstream.port,
            billing=live_server.url.replace("://localhost", "://127.0.0.1"),
            key=gateway_key,
        ),
    )

    def call(consumer: str) -> int:
        return get(f"http://127.0.0.1:{port}/flights", {"X-Consumer": consumer})

    def usage_recorded(i: int) -> None:
        # what the gateway's log would send: one request event per proxied call
        event = {
            "specversion": "1.0",
            "id": f"call-{i}",
            "source": "nginx",
            "type": "request",
            "subject": "acme-gw",
            "time": timezone.now().isoformat(),
            "data": {"route": "/flights"},
        }
        status = get(
            f"{live_server.url}/api/v1/events",
            {
                "Authorization": f"Bearer {ingest_key}",
                "Content-Type": "application/cloudevents+json",
            },
            json.dumps(event).encode(),
        )
        assert status in (200, 202, 204), status

    with nginx_running(prefix=prefix, conf=conf, port=port):
        statuses = []
        for i in range(LIMIT + 3):
            status = call("acme-gw")
            statuses.append(status)
            if status == 200:
                usage_recorded(i)
            if i == 1:  # part of the usage rolled up, part still raw events
                meter_rollup(meter=Meter.objects.get(key="api_requests"), now=timezone.now())
        unknown = call("nobody-gw")

    assert statuses == [200] * LIMIT + [403] * 3
    assert upstream.count == LIMIT
    assert unknown == 403
    assert upstream.count == LIMIT
