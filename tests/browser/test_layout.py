"""Every page an operator or a customer opens fits its window: nothing scrolls sideways,
no column is cut off, no button is drawn over a warning. The admin at the laptop widths
operators use (1366 and 1440 px, the app list beside the page open as it is by default),
the hosted invoice and the portal at a phone's (390 px).

One test, because the data set behind it (three customers' usage, billed, an ACH file,
a refused NetSuite settlement, a long manual line) takes longer to make than every page
takes to check. It reports every page that does not fit, not only the first, and leaves a
screenshot of each in its tmp dir (named in the failure) to look at.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from selenium.webdriver.common.by import By

from tests.browser.pages import (
    LAPTOP_WIDTHS,
    PHONE_WIDTH,
    follow,
    overlapping,
    sign_in,
    viewport,
    viewport_reset,
    width_problems,
)
from tests.browser.screenshots import page_save

pytestmark = pytest.mark.django_db(transaction=True)

# A manual line as operators write them: long, with no natural break for a while.
LONG_DESCRIPTION = (
    "Professional services: migration of fourteen legacy gateway configurations "
    "(globex-hq-gw, globex-eu-gw, shared-gw) to the new routing tier, including "
    "weekend cut-over support and the post-migration reconciliation report "
    "REF-2026-GLOBEX-MIGRATION-PHASE-2"
)
HEIGHT = {False: 900, True: 844}  # a laptop's window, a phone's screen
BUTTONS = ".object-tools a, .object-tools button"
WARNINGS = ".errornote, .messagelist li, .settlement-note, #ach-intro p"


def admin_pages(base: str, billed) -> dict[str, str]:
    """The pages an operator opens, by name, with the data that makes them widest."""
    from billing.models import Invoice
    from rails.models import Settlement
    from rails.models_ach import AchFile

    globex = billed.customer("globex")
    widest = max(
        Invoice.objects.filter(customer=globex).exclude(status="draft"),
        key=lambda i: i.lines.count(),
    )
    failed = Settlement.objects.get(state="failed")
    return {
        "dashboard": f"{base}/admin/",
        "customers": f"{base}/admin/customers/customer/",
        "customer-overview": f"{base}/admin/customers/customer/{globex.pk}/overview/",
        "invoices": f"{base}/admin/billing/invoice/",
        "invoice": f"{base}/admin/billing/invoice/{widest.pk}/change/",
        "invoice-draft": (
            f"{base}/admin/billing/invoice/{Invoice.objects.get(lines__manual=True).pk}/change/"
        ),
        "settlements": f"{base}/admin/rails/settlement/",
        "settlement": f"{base}/admin/rails/settlement/{failed.pk}/change/",
        "ach-files": f"{base}/admin/rails/achfile/",
        "ach-file": f"{base}/admin/rails/achfile/{AchFile.objects.get().pk}/change/",
    }


def test_every_page_fits_its_window_without_scrolling_sideways(browser, operator, books, tmp_path):
    from billing.documents.links import invoice_hosted_url, portal_sign_in_path
    from billing.invoicing.corrections import invoice_line_add
    from demo.services import netsuite_refusal
    from rails.ach.export import ach_export
    from rails.models import Settlement

    billed = books("globex", "initech", "pendant", net_terms={"initech": 0})
    assert ach_export(now=billed.now) is not None
    netsuite_refusal(
        settlement=Settlement.objects.get(invoice__customer__key="globex-apac"), now=billed.now
    )
    draft = billed.invoices("pendant", status="draft").get()
    invoice_line_add(
        invoice=draft, description=LONG_DESCRIPTION, amount=Decimal("4850.00"), now=billed.now
    )
    globex = billed.customer("globex")
    issued = billed.invoices("globex").exclude(status="draft").last()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    problems: list[str] = []

    def check(name: str, width: int, *, scroll_boxes: bool = False) -> None:
        """Screenshot the open page (down to 4,000 px of it) and note what does not fit."""
        shot = shots / f"{name}-{width}.png"
        phone = width == PHONE_WIDTH
        page_save(browser, shot, window=(width, HEIGHT[phone]), tall=4000, mobile=phone)
        found = width_problems(browser, width=width, scroll_boxes=scroll_boxes)
        found += [
            f"a button over a warning: {pair}" for pair in overlapping(browser, BUTTONS, WARNINGS)
        ]
        if found:
            problems.append(f"{name} at {width} px ({shot}):\n  " + "\n  ".join(found))

    try:
        sign_in(browser)
        for width in LAPTOP_WIDTHS:
            viewport(browser, width=width, height=HEIGHT[False])
            for name, url in admin_pages(browser.live_server_url, billed).items():
                browser.get(url)
                check(name, width)

        viewport(browser, width=PHONE_WIDTH, height=HEIGHT[True], mobile=True)
        browser.get(browser.live_server_url + invoice_hosted_url(invoice=issued, now=billed.now))
        check("hosted-invoice", PHONE_WIDTH, scroll_boxes=True)
        browser.get(browser.live_server_url + portal_sign_in_path(customer=globex, now=billed.now))
        check("portal-sign-in", PHONE_WIDTH)
        follow(browser, browser.find_element(By.CSS_SELECTOR, "form [type=submit]"))
        assert "Usage this period" in browser.find_element(By.TAG_NAME, "body").text
        check("portal", PHONE_WIDTH, scroll_boxes=True)
    finally:
        viewport_reset(browser)

    assert not problems, "\n".join(problems)
