"""Outbound HTTP to URLs that operators type in (webhook endpoints): never to this
machine, its private network or a cloud metadata service, unless allowed.

A URL an operator saves is a request the server will make on its behalf: pointed at
``http://169.254.169.254/`` it reads the cloud's instance credentials, at
``http://127.0.0.1:6379/`` it talks to Redis, at ``http://10.0.0.5/admin`` to whatever
sits behind the firewall (server-side request forgery). So:

- **When the URL is saved**, ``outbound_url_check`` refuses a scheme other than http(s),
  a host that is an IP address (in any of the spellings a resolver accepts: ``127.1``,
  ``2130706433``, ``0x7f.0.0.1``, ``[::ffff:127.0.0.1]``) that is not public, and the
  names that always mean this machine (``localhost`` and ``*.localhost``).
- **When a request is sent**, ``outbound_post`` resolves the host, refuses it if any
  address it resolves to is not public, and then connects to the vetted address itself:
  the name is not looked up again by the HTTP client, so a DNS answer that changes
  between the check and the connection (DNS rebinding) cannot swap the target. The
  ``Host`` header, TLS SNI and certificate verification still use the name, so TLS is
  verified exactly as before. Redirects are never followed; proxies from the
  environment are not used (a proxy would resolve the name again).

Public means ``ipaddress``' global unicast, and neither reserved nor an IPv4 address
hidden in IPv6 (``::ffff:10.0.0.1``, NAT64 ``64:ff9b::a00:1``, 6to4) that is not
public itself. ``allow_private=True`` (for receivers on premises) also allows loopback,
RFC 1918 networks, the shared address space ``100.64.0.0/10`` and unique local IPv6
``fc00::/7``; the unspecified address, link-local (where cloud metadata services answer),
multicast, other reserved ranges and the known metadata addresses stay refused.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.deconstruct import deconstructible
from requests.adapters import HTTPAdapter
from urllib3.util import parse_url

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Loopback aside, what ``allow_private`` opens: networks of the operator's own.
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
#: Cloud instance metadata services outside link-local: refused even with ``allow_private``.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("100.100.100.200", "192.0.0.192", "fd00:ec2::254", "169.254.169.254")
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
# What inet_aton would read as an IPv4 address: decimal, octal or hex parts, 1 to 4 of them.
_NUMERIC_HOST = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?", re.IGNORECASE)


class OutboundRefused(ValueError):
    """The target is not one this product may call; the message says why, for an operator.
    ``private`` is true when ``allow_private`` would have allowed it."""

    def __init__(self, message: str, *, private: bool = False) -> None:
        super().__init__(message)
        self.private = private


class OutboundUnresolved(OutboundRefused):
    """The host name does not resolve (now): nothing to check, nothing to call."""


@dataclass(frozen=True)
class Refusal:
    address: Address
    kind: str  # "a loopback address"
    private: bool  # allowed with ``allow_private``

    @property
    def reason(self) -> str:
        return f"{self.address} is {self.kind}"


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries to (mapped, NAT64, 6to4, compatible)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64 or (address in IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_refusal(address: Address, *, allow_private: bool) -> Refusal | None:
    """Why a connection to ``address`` is refused, or None when it may be made."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        inner = address_refusal(embedded, allow_private=allow_private)
        if inner is None:
            return None
        return Refusal(address, f"an IPv6 form of {embedded}, {inner.kind}", inner.private)
    if address in METADATA_ADDRESSES:
        return Refusal(address, "a cloud metadata address", False)
    if address.is_unspecified:
        return Refusal(address, "the unspecified address (it reaches this machine)", False)
    if address.is_multicast:
        return Refusal(address, "a multicast address", False)
    if address.is_link_local:
        return Refusal(
            address, "a link-local address (cloud metadata services answer there)", False
        )
    if address.is_loopback:
        return None if allow_private else Refusal(address, "a loopback address", True)
    if any(address in n for n in PRIVATE_NETWORKS if address.version == n.version):
        return None if allow_private else Refusal(address, "a private address", True)
    if address.is_reserved or not address.is_global:
        return Refusal(address, "a reserved or special-purpose address", False)
    return None


def _refuse(refusal: Refusal | None, *, host: str | None = None) -> None:
    if refusal is None:
        return
    reason = f"{host} resolves to {refusal.address}, {refusal.kind}" if host else refusal.reason
    raise OutboundRefused(f"{reason}, not a public one", private=refusal.private)


def _literal_address(host: str) -> Address | None:
    """``host`` as an IP address when a resolver would take it as one, else None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host.rstrip(".")))
        except OSError:
            return None
    return None


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # lower case, no brackets, IDNA-encoded as the request will send it
    port: int


def outbound_url_check(url: str, *, allow_private: bool) -> Target:
    """The URL's target, checked without any network access: http(s), a host, and not
    an address (or ``localhost`` name) that ``address_refusal`` refuses.

    Raises ``OutboundRefused`` saying why."""
    try:
        parts = urlsplit(str(url).strip())
        port = parts.port
    except ValueError as exc:
        raise OutboundRefused(f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise OutboundRefused("only http and https URLs can be called")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise OutboundRefused("the URL has no host")
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise OutboundRefused("the URL's host is not a valid name") from None
    target = Target(scheme=scheme, host=host, port=port or (443 if scheme == "https" else 80))
    address = _literal_address(host)
    if address is not None:
        _refuse(address_refusal(address, allow_private=allow_private))
    elif (host in LOCAL_NAMES or host.endswith(".localhost")) and not allow_private:
        raise OutboundRefused(f"{host} names this machine (loopback)", private=True)
    return target


Resolver = Callable[..., list]


def outbound_resolve(
    target: Target, *, allow_private: bool, resolve: Resolver | None = None
) -> list[Address]:
    """Every address the target's host resolves to, checked: raises ``OutboundRefused``
    when it does not resolve, or when any one of them is refused (a name that answers
    one public and one private address is refused: the client could pick either)."""
    literal = _literal_address(target.host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = (resolve or socket.getaddrinfo)(
                target.host, target.port, type=socket.SOCK_STREAM
            )
        except (OSError, UnicodeError) as exc:
            raise OutboundUnresolved(f"Cannot resolve {target.host} ({exc})") from None
        addresses = []
        for info in infos:
            address = ipaddress.ip_address(info[4][0].split("%")[0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise OutboundUnresolved(f"Cannot resolve {target.host}: no address")
    for address in addresses:
        refusal = address_refusal(address, allow_private=allow_private)
        _refuse(refusal, host=None if literal is not None else target.host)
    return addresses


class PinnedAddressAdapter(HTTPAdapter):
    """Connects to ``address`` whatever the request's host resolves to now; TLS sends the
    host name as SNI and verifies the certificate against it."""

    def __init__(self, *, address: Address, hostname: str) -> None:
        self._address, self._hostname = str(address), hostname
        super().__init__(max_retries=0)

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = self._hostname
            pool_kwargs["assert_hostname"] = self._hostname
        host_params["host"] = self._address
        return host_params, pool_kwargs


@contextmanager
def outbound_post(
    url: str,
    *,
    data: bytes,
    headers: dict[str, str],
    timeout: float,
    allow_private: bool,
    verify: bool | str = True,
    resolve: Resolver | None = None,
) -> Iterator[requests.Response]:
    """POST to ``url`` after ``outbound_url_check`` and ``outbound_resolve``, connected to
    the first vetted address, never following redirects. A context manager: the
    response is streamed, read what you keep inside the block.

    Raises ``OutboundRefused`` before any connection is made when the target is refused,
    and ``requests.RequestException`` for network trouble."""
    with _outbound_send(
        requests.Request("POST", url, data=data, headers=headers),
        timeout=timeout,
        allow_private=allow_private,
        verify=verify,
        resolve=resolve,
    ) as response:
        yield response


@contextmanager
def outbound_get(
    url: str,
    *,
    headers: dict[str, str],
    timeout: float | tuple[float, float],
    allow_private: bool,
    verify: bool | str = True,
    resolve: Resolver | None = None,
) -> Iterator[requests.Response]:
    """GET ``url`` under the same checks as ``outbound_post`` (and the same errors)."""
    with _outbound_send(
        requests.Request("GET", url, headers=headers),
        timeout=timeout,
        allow_private=allow_private,
        verify=verify,
        resolve=resolve,
    ) as response:
        yield response


@contextmanager
def _outbound_send(
    unprepared: requests.Request,
    *,
    timeout: float | tuple[float, float],
    allow_private: bool,
    verify: bool | str,
    resolve: Resolver | None,
) -> Iterator[requests.Response]:
    url = unprepared.url
    target = outbound_url_check(url, allow_private=allow_private)
    addresses = outbound_resolve(target, allow_private=allow_private, resolve=resolve)
    request = unprepared.prepare()
    hostname = (parse_url(request.url).host or target.host).strip("[]")
    default_port = 443 if target.scheme == "https" else 80
    request.headers["Host"] = (f"[{hostname}]" if ":" in hostname else hostname) + (
        "" if target.port == default_port else f":{target.port}"
    )
    with requests.Session() as session:
        session.trust_env = False  # an environment proxy would resolve the name again
        adapter = PinnedAddressAdapter(address=addresses[0], hostname=hostname)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        with session.send(
            request, timeout=timeout, allow_redirects=False, stream=True, verify=verify
        ) as response:
            yield response


def refusal_text(exc: OutboundRefused, *, allow_private_setting: str) -> str:
    """``exc`` for an operator, naming the setting that would allow it when one would."""
    if isinstance(exc, OutboundUnresolved):
        return f"{exc}."
    hint = f" (receivers on premises: set {allow_private_setting}=true)" if exc.private else ""
    return f"Refused: {exc}{hint}."


@deconstructible
class PublicUrlValidator:
    """A model field validator: ``outbound_url_check`` with ``allow_private`` read from the
    named setting when validating (so the setting, not the migration, decides)."""

    def __init__(self, allow_private_setting: str) -> None:
        self.allow_private_setting = allow_private_setting

    def __call__(self, value: Any) -> None:
        allow = bool(getattr(settings, self.allow_private_setting, False))
        try:
            outbound_url_check(str(value), allow_private=allow)
        except OutboundRefused as exc:
            raise ValidationError(
                refusal_text(exc, allow_private_setting=self.allow_private_setting),
                code="url_not_public",
            ) from None

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, PublicUrlValidator)
            and other.allow_private_setting == self.allow_private_setting
        )


__all__ = [
    "METADATA_ADDRESSES",
    "PRIVATE_NETWORKS",
    "OutboundRefused",
    "OutboundUnresolved",
    "PinnedAddressAdapter",
    "PublicUrlValidator",
    "Refusal",
    "Target",
    "address_refusal",
    "outbound_post",
    "outbound_resolve",
    "outbound_url_check",
    "refusal_text",
]
