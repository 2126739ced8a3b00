"""What customers open: hosted invoices by signed link, and a small portal.

No Django user is involved. A hosted-invoice link is its own authority (see
``billing.documents.links``); the portal signs a customer in by a single-use emailed link and
keeps only the customer's id and the sign-in instant in the session. Every failure to
find, verify or authorize answers the same 404 page, so nothing leaks about what exists.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from decimal import Decimal

from django import forms
from django.conf import settings
from django.core.cache import cache
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from billing.catalog.rating import account_period, current_period_rate
from billing.display import customer_zone, format_date, format_period
from billing.documents.links import (
    LinkInvalid,
    credit_note_for_invoice,
    invoice_for_token,
    invoice_pdf_path,
    invoice_signed_path,
    portal_session_customer,
    portal_session_started,
    portal_sign_in_check,
    portal_sign_in_consume,
    portal_sign_in_links_send,
)
from billing.documents.pdf import credit_note_pdf_bytes, invoice_html, invoice_pdf_bytes, seller
from billing.invoicing.receivables import (
    balance_left,
    invoice_days_past_due,
    invoices_with_credited,
)
from billing.models import CreditNote, Invoice, InvoiceStatus, LineKind
from core.money import format_money, format_quantity
from customers.models import Customer

logger = logging.getLogger(__name__)

SESSION_CUSTOMER = "billing_portal_customer"
SESSION_SINCE = "billing_portal_since"
PORTAL_LINK_TTL_DAYS = 1  # links the portal hands out: the portal can always make new ones
SIGN_IN_EMAILS_PER_WINDOW = 5
SIGN_IN_WINDOW_SECONDS = 15 * 60


def _private(response: HttpResponse) -> HttpResponse:
    """A customer's document: never cached by proxies, never indexed, and the token in
    the URL never leaks to another site through the Referer header."""
    response["Cache-Control"] = "private, no-store"
    response["Referrer-Policy"] = "same-origin"
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


def _not_found(request: HttpRequest) -> HttpResponse:
    context = {"seller": seller(), "portal_url": reverse("billing_portal:home")}
    return _private(render(request, "billing/link_invalid.html", context, status=404))


def _pdf(file_field, render_bytes, filename: str) -> HttpResponse:
    """The stored PDF, or one rendered now when none is stored (or its file is gone)."""
    if file_field:
        try:
            handle = file_field.storage.open(file_field.name, "rb")
        except OSError:
            logger.warning("Stored PDF %s is missing; rendering it on the fly", file_field.name)
        else:
            return _private(FileResponse(handle, content_type="application/pdf", filename=filename))
    response = HttpResponse(render_bytes(), content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="{filename}"'
    return _private(response)


# ---------------------------------------------------------------- hosted invoice (signed link)


@require_GET
def invoice_page(request: HttpRequest, token: str) -> HttpResponse:
    try:
        invoice = invoice_for_token(token=token, now=timezone.now())
    except LinkInvalid:
        return _not_found(request)
    html = invoice_html(
        invoice=invoice,
        for_pdf=False,
        pdf_url=invoice_pdf_path(token=token),
        live=_live(invoice, token, now=timezone.now()),
    )
    return _private(HttpResponse(html))


def _balance(invoice: Invoice, credited: Decimal) -> Decimal:
    """What is still owed: the amount due less payments and credit notes."""
    if invoice.status in (InvoiceStatus.VOID, InvoiceStatus.PAID):
        return Decimal(0)
    return balance_left(invoice=invoice, credited=credited)


def _live(invoice: Invoice, token: str, *, now) -> dict:
    """What the hosted page adds to the invoice as issued: credit notes since, and the
    balance left after payments and credits (nothing on a paid or void invoice)."""
    zone, currency = customer_zone(invoice.customer), invoice.currency
    notes = list(invoice.credit_notes.order_by("issued_at"))
    credited = sum((note.amount for note in notes), Decimal(0))
    return {
        "amount_due_shown": format_money(_balance(invoice, credited), currency),
        "days_past_due": invoice_days_past_due(invoice=invoice, now=now),
        "credit_notes": [
            {
                "number": note.number,
                "date": format_date(note.issued_at, zone),
                "reason": note.reason,
                "amount": format_money(note.amount, currency),
                "url": reverse(
                    "billing_portal:invoice-credit-note-pdf",
                    kwargs={"token": token, "credit_note_id": note.pk},
                ),
            }
            for note in notes
        ],
    }


@require_GET
def invoice_pdf(request: HttpRequest, token: str) -> HttpResponse:
    try:
        invoice = invoice_for_token(token=token, now=timezone.now())
    except LinkInvalid:
        return _not_found(request)
    return _pdf(invoice.pdf, lambda: invoice_pdf_bytes(invoice=invoice), f"{invoice.number}.pdf")


@require_GET
def invoice_credit_note_pdf(
    request: HttpRequest, token: str, credit_note_id: uuid.UUID
) -> HttpResponse:
    try:
        invoice = invoice_for_token(token=token, now=timezone.now())
        note = credit_note_for_invoice(invoice=invoice, credit_note_id=credit_note_id)
    except LinkInvalid:
        return _not_found(request)
    return _pdf(note.pdf, lambda: credit_note_pdf_bytes(credit_note=note), f"{note.number}.pdf")


# ---------------------------------------------------------------- portal


class SignInForm(forms.Form):
    email = forms.EmailField(label="Billing email", max_length=254)


def _signed_in(request: HttpRequest) -> Customer | None:
    customer = portal_session_customer(
        customer_id=request.session.get(SESSION_CUSTOMER),
        signed_in_at=request.session.get(SESSION_SINCE),
        now=timezone.now(),
    )
    if customer is None and SESSION_CUSTOMER in request.session:
        _sign_out(request)  # expired or revoked: forget it
    return customer


def _sign_out(request: HttpRequest) -> None:
    # Only the portal's keys: an operator signed in to the admin in the same browser stays so.
    for key in (SESSION_CUSTOMER, SESSION_SINCE):
        request.session.pop(key, None)
    request.session.cycle_key()


def _may_send(email: str) -> bool:
    """At most a few sign-in emails per address per window, so the form cannot be used
    to flood someone's inbox."""
    key = "billing_portal:sign-in:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()
    cache.add(key, 0, SIGN_IN_WINDOW_SECONDS)
    try:
        return cache.incr(key) <= SIGN_IN_EMAILS_PER_WINDOW
    except ValueError:  # expired between add and incr
        return True


def _absolute(request: HttpRequest):
    # A configured public origin beats the request's Host header for links we mail.
    base = getattr(settings, "BILLING_PUBLIC_BASE_URL", "").rstrip("/")
    return (lambda path: base + path) if base else request.build_absolute_uri


@require_http_methods(["GET", "POST"])
def portal_home(request: HttpRequest) -> HttpResponse:
    customer = _signed_in(request)
    if customer is not None:
        return _private(render(request, "portal/dashboard.html", _dashboard(customer)))
    form = SignInForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        email = form.cleaned_data["email"]
        if _may_send(email):
            portal_sign_in_links_send(email=email, now=timezone.now(), absolute=_absolute(request))
        # The same answer whether or not the address is known.
        return _private(
            render(request, "portal/sign_in_sent.html", {"email": email, "seller": seller()})
        )
    return _private(render(request, "portal/sign_in.html", {"form": form, "seller": seller()}))


@require_http_methods(["GET", "POST"])
def portal_sign_in(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows a button; POST signs in. Mail scanners that open links (GET) therefore
    never use up the single-use link before the customer clicks it."""
    now = timezone.now()
    try:
        if request.method == "GET":
            customer = portal_sign_in_check(token=token, now=now)
            return _private(
                render(
                    request,
                    "portal/sign_in_confirm.html",
                    {"customer": customer, "seller": seller()},
                )
            )
        customer = portal_sign_in_consume(token=token, now=now)
    except LinkInvalid:
        return _not_found(request)
    request.session.cycle_key()  # a new session id at sign-in: no session fixation
    request.session[SESSION_CUSTOMER] = customer.pk
    request.session[SESSION_SINCE] = portal_session_started(now=now)
    request.session.set_expiry(getattr(settings, "BILLING_PORTAL_SESSION_HOURS", 12) * 3600)
    return HttpResponseRedirect(reverse("billing_portal:home"))


@require_POST
def portal_sign_out(request: HttpRequest) -> HttpResponse:
    _sign_out(request)
    return HttpResponseRedirect(reverse("billing_portal:home"))


@require_GET
def portal_invoice(request: HttpRequest, invoice_id: uuid.UUID) -> HttpResponse:
    """One of the signed-in customer's invoices: off to a fresh hosted link."""
    customer = _signed_in(request)
    invoice = (
        Invoice.objects.filter(pk=invoice_id, customer=customer)
        .exclude(status=InvoiceStatus.DRAFT)
        .first()
        if customer
        else None
    )
    if invoice is None:
        return _not_found(request)
    path = invoice_signed_path(invoice=invoice, now=timezone.now(), ttl_days=PORTAL_LINK_TTL_DAYS)
    return _private(HttpResponseRedirect(path))


@require_GET
def portal_credit_note_pdf(request: HttpRequest, credit_note_id: uuid.UUID) -> HttpResponse:
    customer = _signed_in(request)
    note = (
        CreditNote.objects.filter(pk=credit_note_id, invoice__customer=customer).first()
        if customer
        else None
    )
    if note is None:
        return _not_found(request)
    return _pdf(note.pdf, lambda: credit_note_pdf_bytes(credit_note=note), f"{note.number}.pdf")


def _dashboard(customer: Customer) -> dict:
    now = timezone.now()
    zone = customer_zone(customer)
    invoices = invoices_with_credited(
        Invoice.objects.filter(customer=customer).exclude(status=InvoiceStatus.DRAFT)
    ).order_by("-issued_at", "-number")[:200]
    notes = (
        CreditNote.objects.filter(invoice__customer=customer)
        .select_related("invoice")
        .order_by("-issued_at")[:200]
    )
    return {
        "customer": customer,
        "seller": seller(),
        "invoices": [
            {
                "number": invoice.number,
                "url": reverse("billing_portal:portal-invoice", kwargs={"invoice_id": invoice.pk}),
                "period": format_period(invoice.period_start, invoice.period_end, zone),
                "issued": format_date(invoice.issued_at, zone),
                "due": format_date(invoice.due_at, zone),
                "total": format_money(invoice.total, invoice.currency),
                "balance": format_money(
                    _balance(invoice, invoice.credited_total), invoice.currency
                ),
                **_status(invoice, now),
            }
            for invoice in invoices
        ],
        "credit_notes": [
            {
                "number": note.number,
                "invoice": note.invoice.number,
                "date": format_date(note.issued_at, zone),
                "reason": note.reason,
                "amount": format_money(note.amount, note.currency),
                "url": reverse(
                    "billing_portal:portal-credit-note-pdf", kwargs={"credit_note_id": note.pk}
                ),
            }
            for note in notes
        ],
        "usage": _usage_so_far(customer, now, zone),
    }


def _status(invoice: Invoice, now) -> dict:
    """The badge a customer reads: overdue (past due with a balance left), open, or the
    invoice's payment state."""
    days = invoice_days_past_due(invoice=invoice, now=now)
    if days:
        return {
            "status": "overdue",
            "status_label": f"Overdue {days} day{'s' if days != 1 else ''}",
        }
    label = "Open" if invoice.status == InvoiceStatus.ISSUED else invoice.get_status_display()
    return {"status": invoice.status, "status_label": label}


def _usage_so_far(customer: Customer, now, zone) -> dict | None:
    """The current period priced on usage up to now: what the next invoice looks like so far."""
    try:
        current = current_period_rate(account=customer, now=now)
    except Exception:  # a customer's page must not break on a pricing problem
        logger.exception("Rating the current period of %s for the portal failed", customer.key)
        period = account_period(account=customer, at=now)
        return {"period": format_period(period.start, period.end, zone), "error": True}
    if current is None:
        return None
    period, rated = current.period, current.rated
    names = dict(
        Customer.objects.filter(pk__in={line.customer_id for line in rated.lines}).values_list(
            "pk", "name"
        )
    )
    consolidated = len(names) > 1
    return {
        "period": format_period(period.start, period.end, zone),
        "as_of": format_date(now, zone),
        "consolidated": consolidated,
        "lines": [
            {
                "description": line.description,
                "company": names.get(line.customer_id, ""),
                "quantity": format_quantity(line.quantity) if line.kind == LineKind.USAGE else "",
                "amount": format_money(line.amount, rated.currency),
            }
            for line in rated.lines
        ],
        "subtotal": format_money(rated.subtotal, rated.currency),
        "total": format_money(rated.total, rated.currency),
        "has_tax": bool(rated.taxes),
    }
