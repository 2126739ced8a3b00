"""Customer access to their documents without a login: signed links and portal sign-in.

A hosted-invoice link is a signed, expiring token (``django.core.signing``, its own salt)
carrying the invoice id, the billing account's id, the instant it was made and when it
expires. Nothing is stored per link; a customer's links are revoked together by one
instant on ``CustomerAccess`` (links made at or before it stop working, and so do
portal sessions started before it). The portal's sign-in links are signed the same way
under another salt, last 15 minutes and are single-use.

Every check fails the same way, ``LinkInvalid``, whatever the reason, so that views
answer 404 and never tell a guesser which part was wrong.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core import signing
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.urls import reverse

from billing.documents.models import CustomerAccess
from billing.documents.pdf import seller
from billing.models import CreditNote, Invoice, InvoiceStatus
from customers.models import Customer

INVOICE_LINK_SALT = "billing.documents.links.invoice-link"
SIGN_IN_SALT = "billing.documents.links.portal-sign-in"
DEFAULT_LINK_TTL_DAYS = 90
SIGN_IN_TTL = timedelta(minutes=15)
DEFAULT_PORTAL_SESSION_HOURS = 12
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class LinkInvalid(Exception):
    """The link was tampered with, has expired, was revoked, was used already, or names
    a document its customer may not see. Deliberately one error for all of them."""


def _micros(instant: datetime) -> int:
    """An instant as integer microseconds: exact, unlike a float timestamp."""
    return (instant - _EPOCH) // timedelta(microseconds=1)


def _revoked(customer_id: int, made_at: int) -> bool:
    cutoff = (
        CustomerAccess.objects.filter(customer_id=customer_id)
        .values_list("links_valid_after", flat=True)
        .first()
    )
    return cutoff is not None and made_at <= _micros(cutoff)


def _loads(token: str, salt: str) -> dict:
    try:
        data = signing.loads(token, salt=salt)
    except (signing.BadSignature, ValueError, TypeError) as exc:
        raise LinkInvalid("bad signature") from exc
    if not isinstance(data, dict):
        raise LinkInvalid("bad payload")
    return data


# ---------------------------------------------------------------- hosted invoice links


def invoice_token(*, invoice: Invoice, now: datetime, ttl_days: int | None = None) -> str:
    """A signed token for ``invoice``'s hosted page and PDF, valid ``ttl_days``
    (``BILLING_INVOICE_LINK_TTL_DAYS``, default 90). Raises ``ValueError`` for a draft:
    customers only ever see issued invoices."""
    if invoice.status == InvoiceStatus.DRAFT:
        raise ValueError(f"{invoice} is a draft; customers only see issued invoices.")
    days = (
        ttl_days
        if ttl_days is not None
        else getattr(settings, "BILLING_INVOICE_LINK_TTL_DAYS", DEFAULT_LINK_TTL_DAYS)
    )
    payload = {
        "i": invoice.pk.hex,
        "c": invoice.customer_id,
        "t": _micros(now),
        "x": _micros(now + timedelta(days=days)),
    }
    return signing.dumps(payload, salt=INVOICE_LINK_SALT, compress=True)


def invoice_signed_path(*, invoice: Invoice, now: datetime, ttl_days: int | None = None) -> str:
    """The absolute path of the hosted invoice page (``/i/<token>/``)."""
    token = invoice_token(invoice=invoice, now=now, ttl_days=ttl_days)
    return reverse("billing_portal:invoice", kwargs={"token": token})


def invoice_hosted_url(*, invoice: Invoice, now: datetime) -> str | None:
    """The link a customer opens without logging in (the invoices API's ``hosted_url``):
    an absolute path (prefix the site's origin to mail it). None for a draft, which
    customers never see."""
    if invoice.status == InvoiceStatus.DRAFT:
        return None
    return invoice_signed_path(invoice=invoice, now=now)


def invoice_pdf_path(*, token: str) -> str:
    return reverse("billing_portal:invoice-pdf", kwargs={"token": token})


def invoice_for_token(*, token: str, now: datetime) -> Invoice:
    """The issued invoice a token opens at ``now``; raises ``LinkInvalid`` otherwise."""
    data = _loads(token, INVOICE_LINK_SALT)
    try:
        invoice_id = uuid.UUID(hex=str(data["i"]))
        customer_id, made_at, expires_at = int(data["c"]), int(data["t"]), int(data["x"])
    except (KeyError, TypeError, ValueError) as exc:
        raise LinkInvalid("bad payload") from exc
    if _micros(now) >= expires_at:
        raise LinkInvalid("expired")
    invoice = (
        Invoice.objects.select_related("customer")
        .filter(pk=invoice_id, customer_id=customer_id)
        .exclude(status=InvoiceStatus.DRAFT)
        .first()
    )
    if invoice is None:
        raise LinkInvalid("no such invoice for this customer")
    if _revoked(customer_id, made_at):
        raise LinkInvalid("revoked")
    return invoice


def credit_note_for_invoice(*, invoice: Invoice, credit_note_id: uuid.UUID) -> CreditNote:
    """A credit note of ``invoice`` (reached through that invoice's link); else ``LinkInvalid``."""
    note = CreditNote.objects.filter(pk=credit_note_id, invoice=invoice).first()
    if note is None:
        raise LinkInvalid("no such credit note on this invoice")
    return note


def customer_links_revoke(*, customer: Customer, now: datetime, reason: str = "") -> CustomerAccess:
    """Revoke every link made for ``customer`` up to ``now`` (hosted invoices, PDFs,
    pending sign-in links) and end its portal sessions. Links made later work. The
    cut-off never moves back, so a billing run replayed with an earlier ``--now``
    cannot revive revoked links. The change is recorded in the customer's audit history
    (who, from the request; ``reason`` as the change reason)."""
    with transaction.atomic():
        access, _ = CustomerAccess.objects.select_for_update().get_or_create(customer=customer)
        if access.links_valid_after is None or access.links_valid_after < now:
            access.links_valid_after = now
            access._change_reason = reason
            access.save(update_fields=["links_valid_after", "updated_at"])
    return access


# ---------------------------------------------------------------- portal sign-in


def portal_accounts_for_email(*, email: str) -> list[Customer]:
    """Billing accounts whose billing email is ``email`` (case-insensitive). Subsidiaries
    billed to their parent have no invoices of their own and get no portal."""
    email = (email or "").strip()
    if not email or "@" not in email:
        return []
    return list(
        Customer.objects.filter(email__iexact=email)
        .filter(Q(parent__isnull=True) | Q(bill_to_parent=False))
        .order_by("name", "pk")
    )


def portal_sign_in_token(*, customer: Customer, now: datetime) -> str:
    payload = {
        "c": customer.pk,
        "e": customer.email.strip().lower(),
        "t": _micros(now),
        "x": _micros(now + SIGN_IN_TTL),
    }
    return signing.dumps(payload, salt=SIGN_IN_SALT, compress=True)


def portal_sign_in_path(*, customer: Customer, now: datetime) -> str:
    token = portal_sign_in_token(customer=customer, now=now)
    return reverse("billing_portal:sign-in", kwargs={"token": token})


def portal_sign_in_links_send(*, email: str, now: datetime, absolute: Callable[[str], str]) -> int:
    """Mail a sign-in link to each billing account whose billing email is ``email``;
    ``absolute`` turns a path into the URL to mail. Returns how many were sent (the view
    never tells the visitor, so addresses cannot be probed)."""
    sent = 0
    from_email = getattr(settings, "BILLING_PORTAL_FROM_EMAIL", None) or settings.DEFAULT_FROM_EMAIL
    for customer in portal_accounts_for_email(email=email):
        context = {
            "customer": customer,
            "url": absolute(portal_sign_in_path(customer=customer, now=now)),
            "minutes": int(SIGN_IN_TTL.total_seconds() // 60),
            "seller": seller()["name"],
        }
        subject = render_to_string("portal/email/sign_in_subject.txt", context).strip()
        body = render_to_string("portal/email/sign_in_body.txt", context)
        send_mail(subject, body, from_email, [customer.email])
        sent += 1
    return sent


@dataclass(frozen=True)
class SignIn:
    customer: Customer
    made_at: int


def _sign_in_check(token: str, now: datetime) -> SignIn:
    data = _loads(token, SIGN_IN_SALT)
    try:
        customer_id, email = int(data["c"]), str(data["e"])
        made_at, expires_at = int(data["t"]), int(data["x"])
    except (KeyError, TypeError, ValueError) as exc:
        raise LinkInvalid("bad payload") from exc
    if _micros(now) >= expires_at:
        raise LinkInvalid("expired")
    customer = Customer.objects.filter(pk=customer_id).first()
    # A changed billing email ends the links sent to the old one.
    if customer is None or customer.email.strip().lower() != email:
        raise LinkInvalid("no such customer")
    if _revoked(customer_id, made_at):
        raise LinkInvalid("revoked")
    return SignIn(customer, made_at)


def portal_sign_in_check(*, token: str, now: datetime) -> Customer:
    """The customer a sign-in link is for, without using it up (the confirmation page)."""
    sign_in = _sign_in_check(token, now)
    used = (
        CustomerAccess.objects.filter(customer=sign_in.customer)
        .values_list("sign_in_links_used_until", flat=True)
        .first()
    )
    if used is not None and sign_in.made_at <= _micros(used):
        raise LinkInvalid("used")
    return sign_in.customer


def portal_sign_in_consume(*, token: str, now: datetime) -> Customer:
    """Use a sign-in link: valid once. Marks it, and every older link, as used (under a
    row lock, so two clicks at once sign in once). Raises ``LinkInvalid``."""
    sign_in = _sign_in_check(token, now)
    with transaction.atomic():
        access, _ = CustomerAccess.objects.select_for_update().get_or_create(
            customer=sign_in.customer
        )
        used = access.sign_in_links_used_until
        if used is not None and sign_in.made_at <= _micros(used):
            raise LinkInvalid("used")
        access.sign_in_links_used_until = _EPOCH + timedelta(microseconds=sign_in.made_at)
        access.save(update_fields=["sign_in_links_used_until", "updated_at"])
    return sign_in.customer


def portal_session_customer(
    *, customer_id: int | None, signed_in_at: int | None, now: datetime
) -> Customer | None:
    """The customer a portal session belongs to, or None when the session has ended:
    older than ``BILLING_PORTAL_SESSION_HOURS`` (default 12) or revoked since."""
    if not customer_id or not signed_in_at:
        return None
    hours = getattr(settings, "BILLING_PORTAL_SESSION_HOURS", DEFAULT_PORTAL_SESSION_HOURS)
    if _micros(now) - int(signed_in_at) > timedelta(hours=hours) // timedelta(microseconds=1):
        return None
    if _revoked(customer_id, int(signed_in_at)):
        return None
    return Customer.objects.filter(pk=customer_id).first()


def portal_session_started(*, now: datetime) -> int:
    """What a portal session records as its start (compared with revocations)."""
    return _micros(now)
