"""Customers reach their own documents, and only theirs: signed links and the portal."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core import mail, signing
from django.urls import include, path
from django.utils import timezone

from billing.documents.links import (
    INVOICE_LINK_SALT,
    LinkInvalid,
    customer_links_revoke,
    invoice_for_token,
    invoice_hosted_url,
    invoice_signed_path,
    invoice_token,
    portal_sign_in_check,
    portal_sign_in_token,
)
from billing.documents.pdf import invoice_pdf_store
from billing.invoicing.services import credit_note_create, invoice_mark
from billing.models import Invoice, InvoiceStatus
from tests.factories import (
    CustomerFactory,
    IssuedInvoiceFactory,
    PlanVersionFactory,
    SubscriptionFactory,
    flat_fee,
)

urlpatterns = [path("", include("billing.documents.portal_urls"))]
pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]

OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
ISSUED = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _isolated(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.BILLING_INVOICE_ISSUED_HOOKS = []  # settlement is not what these tests are about
    settings.BILLING_CREDIT_NOTE_HOOKS = []
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.DEFAULT_FROM_EMAIL = "billing@skyline.example"
    from django.core.cache import cache

    cache.clear()


def issued_invoice(
    customer, *, description="Onboarding workshop", amount="1500", period=(OCT, NOV)
) -> Invoice:
    return IssuedInvoiceFactory(
        customer=customer,
        period_start=period[0],
        period_end=period[1],
        lines=((description, amount),),
        now=ISSUED,
    )


@pytest.fixture
def acme():
    return CustomerFactory(key="acme", name="Acme Rockets", email="ap@acme.example")


@pytest.fixture
def globex():
    return CustomerFactory(key="globex", name="Globex Corporation", email="ap@globex.example")


def now():
    return timezone.now()


# ---------------------------------------------------------------- signed links


def test_a_signed_link_opens_the_hosted_invoice_and_its_pdf(client, acme):
    invoice = issued_invoice(acme)
    url = invoice_hosted_url(invoice=invoice, now=now())
    assert url.startswith("/i/") and url.endswith("/")

    page = client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert invoice.number in html and "Acme Rockets" in html and "Onboarding workshop" in html
    assert "Download PDF" in html
    assert page["Cache-Control"] == "private, no-store" and page["Referrer-Policy"] == "same-origin"

    pdf_url = re.search(r'href="([^"]+/pdf)"', html).group(1)
    pdf = client.get(pdf_url)
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert b"".join(pdf.streaming_content if pdf.streaming else [pdf.content]).startswith(b"%PDF")


def test_the_pdf_link_serves_the_stored_pdf_when_there_is_one(client, acme):
    invoice = invoice_pdf_store(invoice=issued_invoice(acme), now=ISSUED)
    stored = invoice.pdf.open("rb").read()
    response = client.get(invoice_signed_path(invoice=invoice, now=now()) + "pdf")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == stored
    assert f'filename="{invoice.number}.pdf"' in response["Content-Disposition"]


def test_the_hosted_page_shows_payment_state_and_credit_notes(client, acme):
    invoice = issued_invoice(acme)
    note = credit_note_create(
        invoice=invoice, reason="Workshop cut short", amount=Decimal("300"), now=ISSUED
    )
    url = invoice_signed_path(invoice=invoice, now=now())
    html = client.get(url).content.decode()
    assert note.number in html and "Balance due" in html and "$1,200.00" in html
    credit_pdf = re.search(r'href="([^"]+/credit-notes/[^"]+/pdf)"', html).group(1)
    assert client.get(credit_pdf).status_code == 200


def test_the_hosted_page_follows_the_payment_state(client, acme):
    invoice = issued_invoice(acme)
    invoice_mark(
        invoice=invoice, status=InvoiceStatus.PAID, now=ISSUED + timedelta(days=3), actor="test"
    )
    html = client.get(invoice_signed_path(invoice=invoice, now=now())).content.decode()
    assert 'class="badge paid"' in html and "Paid on Nov" in html
    assert re.search(r'Balance due \(USD\)</td><td class="num">\$0\.00<', html)


def test_customer_text_is_escaped_on_the_hosted_page(client):
    mallory = CustomerFactory(key="mallory", name="<script>alert(1)</script>")
    html = client.get(
        invoice_signed_path(invoice=issued_invoice(mallory), now=now())
    ).content.decode()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


def test_a_tampered_link_is_not_found(client, acme):
    url = invoice_signed_path(invoice=issued_invoice(acme), now=now())
    token = url.split("/")[2]
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    for bad in (f"/i/{flipped}/", f"/i/{flipped}/pdf", "/i/not-a-token/", f"/i/{token[:20]}/"):
        response = client.get(bad)
        assert response.status_code == 404, bad
        assert "This link is not valid" in response.content.decode()


def test_an_expired_link_is_not_found(client, acme):
    invoice = issued_invoice(acme)
    token = invoice_token(invoice=invoice, now=ISSUED, ttl_days=30)
    assert invoice_for_token(token=token, now=ISSUED + timedelta(days=29)) == invoice
    with pytest.raises(LinkInvalid):
        invoice_for_token(token=token, now=ISSUED + timedelta(days=30))
    old = invoice_signed_path(invoice=invoice, now=now() - timedelta(days=91))
    assert client.get(old).status_code == 404
    assert client.get(old + "pdf").status_code == 404


def test_revoked_links_stop_working_and_new_ones_work(client, acme, globex):
    invoice = issued_invoice(acme)
    other = issued_invoice(globex)
    before = invoice_signed_path(invoice=invoice, now=now() - timedelta(minutes=5))
    other_link = invoice_signed_path(invoice=other, now=now() - timedelta(minutes=5))
    customer_links_revoke(customer=acme, now=now() - timedelta(minutes=1))
    assert client.get(before).status_code == 404
    assert client.get(before + "pdf").status_code == 404
    assert client.get(other_link).status_code == 200  # another customer's links are untouched
    assert client.get(invoice_signed_path(invoice=invoice, now=now())).status_code == 200


def test_a_link_signed_for_one_customer_never_opens_another_customers_invoice(client, acme, globex):
    theirs = issued_invoice(globex)
    issued_invoice(acme)
    # As if a link for Acme carried Globex's invoice id: correctly signed, wrong pairing.
    forged = invoice_token(
        invoice=Invoice(pk=theirs.pk, customer_id=acme.pk, status=InvoiceStatus.ISSUED), now=now()
    )
    assert client.get(f"/i/{forged}/").status_code == 404
    assert client.get(f"/i/{forged}/pdf").status_code == 404
    # and a payload signed under another purpose's salt opens nothing
    sign_in = portal_sign_in_token(customer=globex, now=now())
    assert client.get(f"/i/{sign_in}/").status_code == 404


def test_drafts_have_no_customer_link(client, acme):
    draft = Invoice.objects.create(customer=acme, currency="USD", period_start=OCT, period_end=NOV)
    with pytest.raises(ValueError):
        invoice_signed_path(invoice=draft, now=now())
    assert invoice_hosted_url(invoice=draft, now=now()) is None
    payload = {"i": draft.pk.hex, "c": acme.pk, "t": 0, "x": 10**18}
    assert client.get(f"/i/{signing.dumps(payload, salt=INVOICE_LINK_SALT)}/").status_code == 404


# ---------------------------------------------------------------- portal


def sign_in(client, email: str):
    """Request a link, open it, confirm: the customer's way in."""
    mail.outbox.clear()
    sent = client.post("/portal/", {"email": email})
    assert sent.status_code == 200 and "Check your email" in sent.content.decode()
    assert len(mail.outbox) == 1
    link = re.search(r"http://testserver(/portal/sign-in/\S+/)", mail.outbox[0].body).group(1)
    confirm = client.get(link)
    assert confirm.status_code == 200 and "Sign in" in confirm.content.decode()
    assert client.post(link).status_code == 302
    return link


def test_portal_sign_in_by_emailed_link_lists_only_the_customers_invoices(client, acme, globex):
    mine = issued_invoice(acme)
    theirs = issued_invoice(globex, description="Globex consulting")
    assert "Email me a sign-in link" in client.get("/portal/").content.decode()

    sign_in(client, "AP@acme.example")
    assert mail.outbox[0].to == ["ap@acme.example"]
    assert "15 minutes" in mail.outbox[0].body

    page = client.get("/portal/").content.decode()
    assert "Acme Rockets" in page and mine.number in page
    assert theirs.number not in page and "Globex" not in page

    hosted = client.get(f"/portal/invoices/{mine.pk}/")
    assert hosted.status_code == 302 and hosted["Location"].startswith("/i/")
    assert client.get(hosted["Location"]).status_code == 200


def test_a_signed_in_customer_cannot_open_another_customers_documents(client, acme, globex):
    issued_invoice(acme)
    theirs = issued_invoice(globex)
    their_note = credit_note_create(
        invoice=theirs, reason="Goodwill", amount=Decimal("10"), now=ISSUED
    )
    sign_in(client, "ap@acme.example")
    assert client.get(f"/portal/invoices/{theirs.pk}/").status_code == 404
    assert client.get(f"/portal/credit-notes/{their_note.pk}/pdf").status_code == 404


def test_signed_out_visitors_reach_no_documents(client, acme):
    invoice = issued_invoice(acme)
    note = credit_note_create(invoice=invoice, reason="Goodwill", amount=Decimal("10"), now=ISSUED)
    assert client.get(f"/portal/invoices/{invoice.pk}/").status_code == 404
    assert client.get(f"/portal/credit-notes/{note.pk}/pdf").status_code == 404


def test_portal_lists_credit_notes_with_their_pdfs(client, acme):
    note = credit_note_create(
        invoice=issued_invoice(acme), reason="Workshop cut short", amount=Decimal("300"), now=ISSUED
    )
    sign_in(client, "ap@acme.example")
    page = client.get("/portal/").content.decode()
    assert note.number in page and "Workshop cut short" in page
    assert "$1,200.00" in page  # the balance after the credit
    pdf = client.get(f"/portal/credit-notes/{note.pk}/pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")


def test_a_sign_in_link_works_once_and_for_15_minutes(client, acme):
    link = sign_in(client, "ap@acme.example")
    client.post("/portal/sign-out/")
    assert "Email me a sign-in link" in client.get("/portal/").content.decode()
    assert client.get(link).status_code == 404
    assert client.post(link).status_code == 404

    later = now() + timedelta(hours=1)
    token = portal_sign_in_token(customer=acme, now=later)
    assert portal_sign_in_check(token=token, now=later + timedelta(minutes=14)) == acme
    with pytest.raises(LinkInvalid):
        portal_sign_in_check(token=token, now=later + timedelta(minutes=15))


def test_using_a_sign_in_link_uses_up_the_older_ones(client, acme):
    older = portal_sign_in_token(customer=acme, now=now() - timedelta(minutes=2))
    sign_in(client, "ap@acme.example")
    assert client.post(f"/portal/sign-in/{older}/").status_code == 404


def test_unknown_addresses_get_the_same_answer_and_no_email(client, acme):
    subsidiary = CustomerFactory(
        key="acme-eu", parent=acme, email="eu@acme.example"
    )  # billed to its parent
    for email in ("nobody@example.com", subsidiary.email):
        response = client.post("/portal/", {"email": email})
        assert response.status_code == 200 and "Check your email" in response.content.decode()
    assert mail.outbox == []


def test_sign_in_emails_are_rate_limited_per_address(client, acme):
    for _ in range(7):
        client.post("/portal/", {"email": "ap@acme.example"})
    assert len(mail.outbox) == 5


def test_revoking_links_ends_portal_sessions(client, acme):
    issued_invoice(acme)
    sign_in(client, "ap@acme.example")
    customer_links_revoke(customer=acme, now=now())
    assert "Email me a sign-in link" in client.get("/portal/").content.decode()


def test_portal_shows_usage_so_far_this_period(client, acme):
    version = PlanVersionFactory(fee=flat_fee("49.00", timing="in_advance"))
    start = now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    SubscriptionFactory(customer=acme, plan_version=version, start=start)
    sign_in(client, "ap@acme.example")
    page = client.get("/portal/").content.decode()
    assert "Usage this period" in page and "Platform fee" in page and "$49.00" in page
