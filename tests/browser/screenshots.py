"""Screenshots of the key pages, from a running demo, for the README and docs/.

    bin/demo                      # in one terminal: the demo on http://127.0.0.1:8000
    bin/screenshots               # in another: PNGs into docs/screenshots/

Uses the same database as the demo (``DATABASE_URL``, else the embedded server under
``var/``) to find the pages worth showing, signs in with the demo's admin credentials,
and saves each page at 1280×900 as a small palette PNG.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

from tests.browser.pages import sign_in, viewport

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WINDOW = (1280, 900)


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def page_save(
    driver,
    path: Path,
    *,
    window: tuple[int, int] = WINDOW,
    tall: int | None = None,
    mobile: bool = False,
) -> int:
    """The page as a palette PNG (admin pages are flat colours: 256 are plenty): the
    ``window``-sized viewport, or down to ``tall`` pixels of the page for the long ones.
    Returns its size in bytes."""
    from PIL import Image

    width, height = window
    if tall:
        page = driver.execute_script("return document.documentElement.scrollHeight")
        viewport(driver, width=width, height=min(page, tall), mobile=mobile)
    png = driver.get_screenshot_as_png()
    if tall:
        viewport(driver, width=width, height=height, mobile=mobile)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    small = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)
    return path.stat().st_size


def _admin_password() -> tuple[str, str]:
    from config.embedded import VAR_DIR

    password = os.environ.get("DEMO_ADMIN_PASSWORD") or ""
    stored = VAR_DIR / "demo-admin-password"  # var/, or BILLING_VAR_DIR, as the demo keeps it
    if not password and stored.exists():
        password = stored.read_text().strip()
    if not password:
        sys.exit("No demo admin password: run bin/demo first (or set DEMO_ADMIN_PASSWORD).")
    return os.environ.get("DEMO_ADMIN_USER", "admin"), password


def pages(base: str) -> list[tuple[str, str, int | None]]:
    """(file name, URL, how tall to capture: None for the viewport) of each page."""
    from django.urls import NoReverseMatch, reverse
    from django.utils import timezone

    from billing.models import Invoice, InvoiceStatus
    from customers.models import Customer
    from demo.services import demo_hosted_invoice
    from rails.models import Settlement, SettlementState

    now = timezone.now()
    globex = Customer.objects.get(key="globex")
    try:
        customer_url = reverse("admin:customers_customer_overview", args=[globex.pk])
    except NoReverseMatch:
        customer_url = reverse("admin:customers_customer_change", args=[globex.pk])
    invoice = (
        Invoice.objects.filter(customer__key="hooli-dev")
        .exclude(status=InvoiceStatus.DRAFT)
        .order_by("-issued_at")
        .first()
    )
    draft = Invoice.objects.filter(status=InvoiceStatus.DRAFT).order_by("grace_until").first()
    returned = Settlement.objects.filter(state=SettlementState.RETURNED).first()
    failed = Settlement.objects.filter(state=SettlementState.FAILED).first()
    _, hosted = demo_hosted_invoice(now=now)
    shots = [
        ("admin-dashboard.png", f"{base}/admin/", None),
        ("customer.png", base + customer_url, 1800),
        ("invoice.png", f"{base}/admin/billing/invoice/{invoice.pk}/change/", 2400),
        ("invoice-draft.png", f"{base}/admin/billing/invoice/{draft.pk}/change/", 2400),
        ("settlement-returned.png", f"{base}/admin/rails/settlement/{returned.pk}/change/", 1800),
        ("settlement-failed.png", f"{base}/admin/rails/settlement/{failed.pk}/change/", 1800),
        ("ach-files.png", f"{base}/admin/rails/achfile/", None),
        ("receivables-aging.png", f"{base}/admin/billing/receivables/aging/", 1200),
        ("hosted-invoice.png", base + hosted, 1500),
    ]
    return shots


def portal_sign_in(driver, base: str) -> None:
    """Open the portal as the hosted invoice's customer, through a one-time sign-in link."""
    from django.utils import timezone
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    from billing.documents.links import portal_sign_in_path
    from demo.services import demo_hosted_invoice

    invoice, _ = demo_hosted_invoice(now=timezone.now())
    for _attempt in range(2):
        driver.get(base + portal_sign_in_path(customer=invoice.customer, now=timezone.now()))
        button = driver.find_element(By.CSS_SELECTOR, "form [type=submit]")
        button.click()
        WebDriverWait(driver, 10).until(seen.staleness_of(button))
        if "Forbidden" not in driver.title:
            break
        # The portal's pages say Referrer-Policy: no-referrer, so Chromium posts its forms
        # with "Origin: null", which Django's CSRF check refuses. Until the portal says
        # same-origin, send the real origin to take the picture.
        print("warning: the portal refused its own sign-in form (CSRF: Origin null)")
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Origin": base}})
    else:
        sys.exit("The portal refused the sign-in (403): see the web log for why.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="http://127.0.0.1:8000", help="the demo's origin")
    parser.add_argument("--out", type=Path, default=SHOTS, help="where the PNGs go")
    args = parser.parse_args(argv)
    base = args.base.rstrip("/")
    args.out.mkdir(parents=True, exist_ok=True)

    _setup_django()
    from tests.browser.chromium import chromium_ensure, chromium_start, chromium_stop

    username, password = _admin_password()
    chromium_ensure()
    driver = chromium_start()
    # The page's own size, whatever the window around it takes.
    viewport(driver, width=WINDOW[0], height=WINDOW[1])
    try:
        if not sign_in(driver, username=username, password=password, base=base):
            sys.exit("Signing in to the admin failed: are these the demo's credentials?")
        # The page, not the app list beside it (the admin remembers this per browser).
        driver.execute_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
        for name, url, tall in pages(base):
            driver.get(url)
            size = page_save(driver, args.out / name, tall=tall)
            print(f"{name:26} {size // 1024:>4} KiB  {url[:90]}")
        portal_sign_in(driver, base)
        size = page_save(driver, args.out / "portal.png", tall=1400)
        print(f"{'portal.png':26} {size // 1024:>4} KiB")
    finally:
        chromium_stop(driver)
    return 0


if __name__ == "__main__":
    sys.exit(main())
