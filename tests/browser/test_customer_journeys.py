"""A customer's journeys, in a real browser and never signed in to the admin: open the
signed link from the invoice email and download the PDF; sign in to the portal with the
emailed link and find the invoices there."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from selenium.webdriver.common.by import By

from tests.browser.chromium import downloaded
from tests.browser.pages import follow, text

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_customer_opens_the_signed_invoice_link_and_downloads_the_pdf(browser, books, downloads):
    from billing.documents.links import invoice_hosted_url

    billed = books("pendant")
    invoice = billed.invoices("pendant", status="issued").get()
    link = invoice_hosted_url(invoice=invoice, now=billed.now)

    browser.get(browser.live_server_url + link)

    page = text(browser)
    assert invoice.number in page and "Pendant Publishing" in page
    assert "Pro platform fee" in page
    assert f"{invoice.amount_due:,.2f}" in page
    browser.find_element(By.LINK_TEXT, "Download PDF").click()
    pdf = downloaded(downloads, suffix=".pdf")
    assert pdf.read_bytes().startswith(b"%PDF-")
    assert pdf.name == f"{invoice.number}.pdf"


def test_a_tampered_invoice_link_shows_a_page_that_says_so(browser, books):
    from billing.documents.links import invoice_hosted_url

    billed = books("pendant")
    invoice = billed.invoices("pendant", status="issued").get()
    link = invoice_hosted_url(invoice=invoice, now=billed.now)
    tampered = link[:-6] + ("A" if link[-6] != "A" else "B") + link[-5:]

    browser.get(browser.live_server_url + tampered)

    assert "This link is not valid" in text(browser)
    assert invoice.number not in text(browser)


def test_a_customer_signs_in_to_the_portal_with_the_emailed_link(browser, books):
    billed = books("pendant")
    invoice = billed.invoices("pendant", status="issued").get()

    browser.get(f"{browser.live_server_url}/portal/")
    browser.find_element(By.NAME, "email").send_keys("accounts@pendant.example")
    follow(browser, browser.find_element(By.CSS_SELECTOR, "form [type=submit]"))
    assert "Forbidden" not in browser.title, text(browser)[:300]
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["accounts@pendant.example"]
    link = re.search(r"https?://\S+/portal/sign-in/\S+", mail.outbox[0].body)[0]

    browser.get(link)
    assert "Pendant Publishing" in text(browser)
    follow(browser, browser.find_element(By.CSS_SELECTOR, "form [type=submit]"))
    assert "Forbidden" not in browser.title, text(browser)[:300]

    page = text(browser)
    assert "Usage this period" in page and "Invoices" in page
    follow(browser, browser.find_element(By.LINK_TEXT, invoice.number))
    assert invoice.number in text(browser) and "Pro platform fee" in text(browser)
