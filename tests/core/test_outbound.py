"""Which targets an operator-typed URL may reach: public addresses only, unless private
receivers are allowed; and never link-local, metadata, multicast or unspecified ones."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from django.core.exceptions import ValidationError

from core.outbound import (
    OutboundRefused,
    PublicUrlValidator,
    address_refusal,
    outbound_resolve,
    outbound_url_check,
)

ALWAYS_REFUSED = [
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/",
    "http://0.0.0.0:8000/",
    "http://[::]/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://100.100.100.200/",  # Alibaba Cloud's metadata service, inside 100.64.0.0/10
    "http://[fd00:ec2::254]/",  # AWS's IPv6 metadata service, inside fc00::/7
    "http://[::ffff:169.254.169.254]/",
    "http://192.0.2.1/",  # documentation
    "http://240.0.0.1/",  # reserved
    "http://255.255.255.255/",
]
PRIVATE = [
    "http://127.0.0.1:8000/hooks",
    "http://127.1/",
    "http://2130706433/",  # 127.0.0.1 as one decimal number
    "http://0x7f.0.0.1/",
    "http://017700000001/",  # octal
    "http://localhost:8080/hooks",
    "http://api.localhost/",
    "http://LOCALHOST./",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
    "http://[::ffff:10.0.0.1]/",
    "http://[64:ff9b::a00:1]/",  # NAT64 to 10.0.0.1
    "http://[2002:a00:1::]/",  # 6to4 of 10.0.0.1
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.10/",
    "http://100.64.0.1/",  # shared address space (carrier-grade NAT)
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
]
PUBLIC = [
    "https://hooks.example.com/billing",
    "https://93.184.215.14/x",
    "http://[2606:4700::1111]:8443/x",
    "https://xn--bcher-kva.example/",
]


@pytest.mark.parametrize("url", ALWAYS_REFUSED)
def test_special_addresses_are_refused_even_when_private_targets_are_allowed(url):
    for allow_private in (False, True):
        with pytest.raises(OutboundRefused) as refused:
            outbound_url_check(url, allow_private=allow_private)
        assert refused.value.private is False


@pytest.mark.parametrize("url", PRIVATE)
def test_loopback_and_private_targets_are_refused_unless_allowed(url):
    with pytest.raises(OutboundRefused) as refused:
        outbound_url_check(url, allow_private=False)
    assert refused.value.private is True
    outbound_url_check(url, allow_private=True)


@pytest.mark.parametrize("url", PUBLIC)
def test_public_targets_pass_the_check_without_any_network_access(url):
    outbound_url_check(url, allow_private=False)


@pytest.mark.parametrize(
    "url", ["ftp://example.com/", "file:///etc/passwd", "http:///x", "gopher://x/"]
)
def test_only_http_urls_with_a_host_are_called(url):
    with pytest.raises(OutboundRefused):
        outbound_url_check(url, allow_private=True)


def test_the_reason_names_the_address_and_what_it_is():
    with pytest.raises(OutboundRefused, match=r"169\.254\.169\.254 is a cloud metadata address"):
        outbound_url_check("http://169.254.169.254/", allow_private=False)
    with pytest.raises(
        OutboundRefused, match=r"::ffff:7f00:1 is an IPv6 form of 127\.0\.0\.1, a loopback address"
    ):
        outbound_url_check("http://[::ffff:127.0.0.1]/", allow_private=False)
    refusal = address_refusal(ipaddress.ip_address("100.64.0.1"), allow_private=False)
    assert refusal is not None and refusal.reason == "100.64.0.1 is a private address"


def answers(*addresses: str):
    def getaddrinfo(host, port, *args, **kwargs):
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]

    return getaddrinfo


def test_a_name_is_refused_when_any_address_it_resolves_to_is_not_public():
    target = outbound_url_check("https://hooks.example.com/", allow_private=False)
    assert outbound_resolve(
        target, allow_private=False, resolve=answers("93.184.215.14", "2606:4700::1111")
    ) == [ipaddress.ip_address("93.184.215.14"), ipaddress.ip_address("2606:4700::1111")]
    with pytest.raises(
        OutboundRefused, match=r"hooks\.example\.com resolves to 10\.0\.0\.1, a private address"
    ):
        outbound_resolve(target, allow_private=False, resolve=answers("93.184.215.14", "10.0.0.1"))
    with pytest.raises(OutboundRefused, match="169.254.169.254, a cloud metadata address"):
        outbound_resolve(target, allow_private=True, resolve=answers("169.254.169.254"))
    with pytest.raises(OutboundRefused, match="fe80::1, a link-local address"):
        outbound_resolve(target, allow_private=True, resolve=answers("fe80::1"))


def test_a_name_that_does_not_resolve_is_refused_with_the_resolvers_reason():
    def nowhere(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    target = outbound_url_check("https://nowhere.invalid/", allow_private=False)
    with pytest.raises(OutboundRefused, match=r"Cannot resolve nowhere\.invalid"):
        outbound_resolve(target, allow_private=False, resolve=nowhere)


def test_the_model_validator_reads_its_setting_when_it_validates(settings):
    validator = PublicUrlValidator("NOTIFICATION_WEBHOOKS_ALLOW_PRIVATE")
    settings.NOTIFICATION_WEBHOOKS_ALLOW_PRIVATE = False
    with pytest.raises(ValidationError) as refused:
        validator("http://10.0.0.1/hooks")
    assert refused.value.messages == [
        "Refused: 10.0.0.1 is a private address, not a public one (receivers on premises: "
        "set NOTIFICATION_WEBHOOKS_ALLOW_PRIVATE=true)."
    ]
    settings.NOTIFICATION_WEBHOOKS_ALLOW_PRIVATE = True
    validator("http://10.0.0.1/hooks")
    with pytest.raises(ValidationError, match="metadata"):
        validator("http://169.254.169.254/")
