"""Webhook endpoints reach public receivers only: a URL pointing at this machine, a private
network or a metadata service is refused when it is saved (model, admin, billing_apply)
and again when a delivery is sent, after DNS, before any connection; the connection goes
to the address that was checked; redirects are not followed; and a receiver's answer is
kept and shown only as its status and a short, escaped excerpt."""

from __future__ import annotations

import base64
import datetime as dt
import importlib
import os
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.apps import apps
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import NoReverseMatch, clear_url_caches, reverse
from django.utils import timezone

import billing.notifications.admin  # noqa: F401  registers the delivery admin
from billing.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from billing.notifications.delivery import RESPONSE_KEEP, delivery_send
from billing.notifications.services import notify

REFUSED_URLS = {
    "http://127.0.0.1:8000/hooks": "127.0.0.1 is a loopback address",
    "http://localhost:8000/hooks": "localhost names this machine",
    "http://10.0.0.1/hooks": "10.0.0.1 is a private address",
    "http://169.254.169.254/latest/meta-data/": "169.254.169.254 is a cloud metadata address",
    "http://[::1]:8000/hooks": "::1 is a loopback address",
}
_real_getaddrinfo = socket.getaddrinfo


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def endpoint_for(url: str, key: str = "ops") -> WebhookEndpoint:
    """An endpoint stored without validation (as one saved before the check existed, or
    while private targets were allowed)."""
    return WebhookEndpoint.objects.create(
        key=key, url=url, secret=new_secret(), events=["invoice.paid"]
    )


def one_delivery(endpoint: WebhookEndpoint) -> WebhookDelivery:
    notify(
        type="invoice.paid",
        payload={"type": "invoice.paid", "data": {"number": "INV-2026-000001"}},
        dedupe_key=f"paid:{endpoint.key}",
        now=timezone.now(),
    )
    return WebhookDelivery.objects.get(endpoint=endpoint)


def resolving(monkeypatch, names: dict[str, list[str]]) -> dict[str, int]:
    """Make ``socket.getaddrinfo`` answer ``names`` (each lookup takes the next address,
    the last one repeating); IP literals resolve as usual. Returns lookups per name."""
    lookups: dict[str, int] = {}

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in names:
            return _real_getaddrinfo(host, port, *args, **kwargs)
        answers = names[host]
        address = answers[min(lookups.get(host, 0), len(answers) - 1)]
        lookups[host] = lookups.get(host, 0) + 1
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


@pytest.fixture
def connections(monkeypatch) -> list:
    """Every socket connection attempted from Python; any attempt fails the test's send."""
    attempted: list = []

    def connect(self, address):
        attempted.append(address)
        raise ConnectionRefusedError(f"the test forbids connecting to {address}")

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempted


class Receiver:
    """An HTTP(S) server on 127.0.0.1 answering a scripted status, headers and body, and
    recording each request's headers."""

    def __init__(self, *, status=200, headers=None, body=b"ok", tls: ssl.SSLContext | None = None):
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.requests.append(dict(self.headers.items()))
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def admin_urls():
    try:
        reverse("admin:billing_webhookdelivery_changelist")
    except NoReverseMatch:  # the URLconf was built before this module registered its admins
        import config.urls

        importlib.reload(config.urls)
        clear_url_caches()


# ---------------------------------------------------------------- when saved


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_an_endpoint_on_this_machine_or_a_private_network_cannot_be_saved(db, url):
    endpoint = WebhookEndpoint(key="ops", url=url, secret=new_secret(), events=["invoice.paid"])
    with pytest.raises(ValidationError) as refused:
        endpoint.full_clean()
    assert REFUSED_URLS[url] in refused.value.message_dict["url"][0]


def test_private_receivers_are_allowed_by_the_setting_but_metadata_never(db, settings):
    settings.NOTIFICATION_WEBHOOKS_ALLOW_PRIVATE = True
    for url in ("http://127.0.0.1:8000/hooks", "http://10.0.0.1/hooks", "http://[::1]/x"):
        WebhookEndpoint(key="ops", url=url, secret=new_secret(), events=["x"]).full_clean()
    with pytest.raises(ValidationError, match="metadata"):
        WebhookEndpoint(
            key="ops", url="http://169.254.169.254/", secret=new_secret(), events=["x"]
        ).full_clean()


def test_the_admin_says_why_an_endpoint_url_is_refused(admin_client):
    response = admin_client.post(
        reverse("admin:billing_webhookendpoint_add"),
        {
            "key": "ops",
            "url": "http://169.254.169.254/latest/meta-data/",
            "secret": new_secret(),
            "events": '["invoice.paid"]',
            "enabled": "on",
        },
    )
    assert response.status_code == 200
    assert "169.254.169.254 is a cloud metadata address" in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


def test_billing_apply_refuses_a_private_endpoint_naming_its_place(db, tmp_path):
    path = tmp_path / "hooks.yaml"
    path.write_text(
        "webhook_endpoints:\n"
        "  - {key: ops, url: 'http://10.0.0.1/hooks', secret: whsec_c2VjcmV0c2VjcmV0c2VjcmV0,"
        " events: [invoice.paid]}\n"
    )
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("billing_apply", str(path), stdout=StringIO(), stderr=err)
    assert "webhook_endpoints[0]" in err.getvalue()
    assert "10.0.0.1 is a private address" in err.getvalue()
    assert "NOTIFICATION_WEBHOOKS_ALLOW_PRIVATE=true" in err.getvalue()
    assert not WebhookEndpoint.objects.exists()


# ---------------------------------------------------------------- when sent


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_a_delivery_to_a_private_target_fails_before_any_connection(db, connections, url):
    delivery = delivery_send(delivery_id=one_delivery(endpoint_for(url)).pk, now=timezone.now())

    assert (delivery.state, delivery.attempts, delivery.last_status_code) == ("failed", 1, None)
    assert REFUSED_URLS[url] in delivery.last_error and "Nothing was sent" in delivery.last_error
    assert WebhookAttempt.objects.get(delivery=delivery).error == delivery.last_error
    assert connections == []


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("10.0.0.1", "a private address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("::ffff:a00:1", "an IPv6 form of 10.0.0.1, a private address"),
    ],
)
def test_a_public_looking_name_that_resolves_to_a_private_address_is_refused_at_send(
    db, connections, monkeypatch, address, reason
):
    resolving(monkeypatch, {"hooks.customer.example": [address]})
    endpoint = endpoint_for("https://hooks.customer.example/billing")
    endpoint.full_clean()  # nothing about the name says where it points

    delivery = delivery_send(delivery_id=one_delivery(endpoint).pk, now=timezone.now())

    assert delivery.state == "failed"
    assert f"hooks.customer.example resolves to {address}, {reason}" in delivery.last_error
    assert connections == []


def test_a_name_that_does_not_resolve_is_a_failed_attempt_that_says_so(
    db, connections, monkeypatch
):
    def nowhere(host, port, *args, **kwargs):
        if host == "hooks.gone.example":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return _real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", nowhere)
    endpoint = endpoint_for("https://hooks.gone.example/billing")

    delivery = delivery_send(delivery_id=one_delivery(endpoint).pk, now=timezone.now())

    assert delivery.state == "failed"
    assert delivery.last_error.startswith("Cannot resolve hooks.gone.example (")
    assert delivery.last_error.endswith("Nothing was sent.")
    assert connections == []


def test_the_connection_goes_to_the_address_checked_not_to_a_second_lookup(
    db, monkeypatch, settings
):
    """DNS rebinding: the name answers a receiver's address to the check and another
    address afterwards; only one lookup is made and the checked address is used."""
    settings.NOTIFICATION_WEBHOOKS_ALLOW_PRIVATE = True
    with Receiver() as receiver:
        lookups = resolving(monkeypatch, {"hooks.onprem.example": ["127.0.0.1", "127.0.0.2"]})
        endpoint = endpoint_for(f"http://hooks.onprem.example:{receiver.port}/billing")

        delivery = delivery_send(delivery_id=one_delivery(endpoint).pk, now=timezone.now())

    assert (delivery.state, delivery.last_status_code) == ("delivered", 200)
    assert lookups == {"hooks.onprem.example": 1}
    assert receiver.requests[0]["Host"] == f"hooks.onprem.example:{receiver.port}"


def test_a_redirect_is_a_failed_delivery_and_is_not_followed(db, settings):
    settings.NOTIFICATION_WEBHOOKS_ALLOW_PRIVATE = True
    with Receiver(status=302, headers={"Location": "http://169.254.169.254/latest/"}) as receiver:
        endpoint = endpoint_for(f"http://127.0.0.1:{receiver.port}/hooks")
        delivery = delivery_send(delivery_id=one_delivery(endpoint).pk, now=timezone.now())

    assert (delivery.state, delivery.last_status_code) == ("failed", 302)
    assert "redirect, not followed" in delivery.last_error
    assert len(receiver.requests) == 1


def test_a_receivers_answer_is_kept_short_and_shown_escaped(db, settings, admin_client, admin_urls):
    settings.NOTIFICATION_WEBHOOKS_ALLOW_PRIVATE = True
    page = b"<script>alert('x')</script>" + b"internal page " * 500
    with Receiver(status=500, body=page) as receiver:
        endpoint = endpoint_for(f"http://127.0.0.1:{receiver.port}/hooks")
        delivery = delivery_send(delivery_id=one_delivery(endpoint).pk, now=timezone.now())

    assert delivery.response_body == page.decode()[:RESPONSE_KEEP]
    shown = admin_client.get(
        reverse("admin:billing_webhookdelivery_change", args=[delivery.pk])
    ).content.decode()
    assert (
        "HTTP 500 · <code>&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;internal page" in shown
    )
    assert "<script>alert" not in shown
    assert "internal page " * 20 not in shown


def test_answers_stored_before_are_cut_to_the_excerpt_by_the_migration(db):
    endpoint = endpoint_for("https://hooks.example.com/x")
    delivery = one_delivery(endpoint)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(response_body="y" * 5000)
    migration = importlib.import_module(
        "billing.migrations.0007_webhook_targets_public_and_short_responses"
    )

    migration.responses_truncate(apps, None)

    delivery.refresh_from_db()
    assert delivery.response_body == "y" * RESPONSE_KEEP


# ---------------------------------------------------------------- TLS to the checked address


def _certificates(tmp_path, name: str) -> tuple[str, ssl.SSLContext]:
    """A CA (its file path) and a server context with a certificate for ``name`` it signed."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return str(ca_path), context


def test_tls_to_the_checked_address_verifies_the_certificate_of_the_name(
    db, monkeypatch, settings, tmp_path
):
    settings.NOTIFICATION_WEBHOOKS_ALLOW_PRIVATE = True
    ca, context = _certificates(tmp_path, "hooks.onprem.example")
    settings.WEBHOOK_CA_BUNDLE = ca
    resolving(
        monkeypatch,
        {"hooks.onprem.example": ["127.0.0.1"], "other.onprem.example": ["127.0.0.1"]},
    )
    with Receiver(tls=context) as receiver:
        right = endpoint_for(f"https://hooks.onprem.example:{receiver.port}/b", key="right")
        delivered = delivery_send(delivery_id=one_delivery(right).pk, now=timezone.now())
        wrong = endpoint_for(f"https://other.onprem.example:{receiver.port}/b", key="wrong")
        refused = delivery_send(delivery_id=one_delivery(wrong).pk, now=timezone.now())

    assert (delivered.state, delivered.last_status_code) == ("delivered", 200)
    assert receiver.requests[0]["Host"] == f"hooks.onprem.example:{receiver.port}"
    assert (refused.state, refused.last_status_code) == ("failed", None)
    assert "SSLError" in refused.last_error and "other.onprem.example" in refused.last_error
    assert len(receiver.requests) == 1
