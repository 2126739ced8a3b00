"""An operator's journeys through the admin, in a real browser: sign in, find a customer,
review and issue its draft, open the PDF, retry a failed settlement, download the ACH
file."""

from __future__ import annotations

import re

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.chromium import downloaded
from tests.browser.pages import OPERATOR, follow, messages, sign_in, text

pytestmark = pytest.mark.django_db(transaction=True)


def wait(browser, timeout: float = 10) -> WebDriverWait:
    return WebDriverWait(browser, timeout)


def test_an_operator_signs_in_to_the_admin(browser, operator):
    sign_in(browser)

    wait(browser).until(seen.presence_of_element_located((By.ID, "logout-form")))
    assert browser.current_url.endswith("/admin/")
    assert OPERATOR.upper() in text(browser).upper()  # "Welcome, ops."
    assert "Customers" in text(browser) and "Invoices" in text(browser)


def test_a_wrong_password_keeps_the_operator_out(browser, operator):
    sign_in(browser, password="not-the-password")

    assert "/admin/login/" in browser.current_url
    assert "Please enter the correct username and password" in text(browser)


def test_an_operator_finds_a_customer_reviews_its_draft_issues_it_and_opens_the_pdf(
    browser, operator, books, downloads
):
    billed = books("pendant")
    draft = billed.invoices("pendant", status="draft").get()
    sign_in(browser)

    # Find the customer.
    browser.get(f"{browser.live_server_url}/admin/customers/customer/")
    browser.find_element(By.ID, "searchbar").send_keys("Pendant")
    follow(browser, browser.find_element(By.CSS_SELECTOR, "#changelist-search [type=submit]"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")) == 1
    follow(browser, browser.find_element(By.LINK_TEXT, "pendant"))
    assert "Pendant Publishing" in browser.find_element(By.ID, "id_name").get_attribute("value")

    # Its draft, from the customer's overview (or the invoice list where there is none).
    overview = browser.find_elements(By.ID, "customer-overview")
    if overview:
        follow(browser, overview[0])
    else:
        browser.get(f"{browser.live_server_url}/admin/billing/invoice/?q=pendant")
    follow(
        browser,
        browser.find_element(By.CSS_SELECTOR, f'a[href$="/billing/invoice/{draft.pk}/change/"]'),
    )
    page = text(browser)
    assert "Draft" in page and "Pendant Publishing" in page
    assert "Pro platform fee" in page  # the lines to review

    # Issue it, through the confirmation page.
    follow(browser, browser.find_element(By.ID, "invoice-issue"))
    assert "This cannot be undone" in text(browser)
    follow(browser, browser.find_element(By.CSS_SELECTOR, "form [type=submit][value='Issue now']"))
    issued_message = messages(browser)
    draft.refresh_from_db()
    assert draft.status == "issued" and draft.number
    assert f"Issued {draft.number}" in issued_message
    assert draft.number in text(browser)

    # Its PDF.
    browser.find_element(By.ID, "invoice-pdf").click()
    pdf = downloaded(downloads, suffix=".pdf")
    assert pdf.read_bytes().startswith(b"%PDF-")
    assert pdf.name == f"{draft.number}.pdf"


def test_an_operator_retries_a_failed_settlement(browser, operator, books):
    from demo.services import netsuite_refusal
    from rails.models import Settlement

    billed = books("globex")
    refused = Settlement.objects.select_related("invoice__customer").get(
        invoice__customer__key="globex-apac"
    )
    netsuite_refusal(settlement=refused, now=billed.now)
    sign_in(browser)

    browser.get(f"{browser.live_server_url}/admin/rails/settlement/")
    follow(browser, browser.find_element(By.PARTIAL_LINK_TEXT, "Failed"))  # the state filter
    rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert len(rows) == 1 and "INVALID_KEY_OR_REF" in rows[0].text
    browser.get(f"{browser.live_server_url}/admin/rails/settlement/{refused.pk}/change/")
    page = text(browser)
    assert "Failed" in page and "Invalid Field Value 1288" in page  # the timeline says why

    follow(browser, browser.find_element(By.XPATH, "//button[normalize-space()='Retry now']"))

    assert "Retry queued" in messages(browser)
    refused.refresh_from_db()
    assert refused.state == "submitted" and refused.attempts == 2  # sent again (sandbox)
    assert "Retry requested" in text(browser)


def test_an_operator_downloads_the_ach_file(browser, operator, books, downloads):
    from rails.ach.export import ach_export

    billed = books("initech", net_terms={"initech": 0})
    exported = ach_export(now=billed.now)
    assert exported is not None and exported.entry_count == 2
    sign_in(browser)

    browser.get(f"{browser.live_server_url}/admin/rails/achfile/")
    row = browser.find_element(By.CSS_SELECTOR, "#result_list tbody tr")
    assert exported.file_name in row.text and "$" in row.text
    row.find_element(By.LINK_TEXT, "Download").click()

    nacha = downloaded(downloads, suffix=".ach")
    assert nacha.name == exported.file_name
    lines = nacha.read_text(encoding="ascii").splitlines()
    assert all(len(line) == 94 for line in lines)  # NACHA's fixed-width records
    assert lines[0].startswith("101") and lines[-1].startswith("9")  # file header ... control
    entries = [line for line in lines if line.startswith("6")]
    assert len(entries) == 2 and all("INITECH" in line for line in entries)
    assert re.fullmatch(r"\d{10}", entries[0][29:39])  # the amount in cents
