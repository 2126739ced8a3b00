"""Small helpers the browser tests share: signing in and reading a page. Selenium is
imported inside them, so that a machine without it fails these tests alone (with a clear
error) and not the whole run."""

from __future__ import annotations

OPERATOR = "ops"
OPERATOR_PASSWORD = "correct-horse-battery-staple-42"


def sign_in(
    browser,
    *,
    username: str = OPERATOR,
    password: str = OPERATOR_PASSWORD,
    base: str | None = None,
) -> bool:
    """Sign in to the admin through its login form; True when it let us in."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{base or browser.live_server_url}/admin/login/?next=/admin/")
    browser.find_element(By.ID, "id_username").send_keys(username)
    browser.find_element(By.ID, "id_password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    WebDriverWait(browser, 10).until(
        lambda b: (
            "/admin/login/" not in b.current_url or b.find_elements(By.CSS_SELECTOR, ".errornote")
        )
    )
    return "/admin/login/" not in browser.current_url


def text(browser) -> str:
    """What the page shows."""
    from selenium.webdriver.common.by import By

    return browser.find_element(By.TAG_NAME, "body").text


def messages(browser) -> str:
    """The admin's messages (after an action), waiting for them to appear."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 10).until(
        seen.presence_of_element_located((By.CSS_SELECTOR, "ul.messagelist"))
    )
    return " ".join(m.text for m in browser.find_elements(By.CSS_SELECTOR, "ul.messagelist li"))


def follow(browser, element) -> None:
    """Click something that loads another page, and wait until that page has replaced
    this one (a click returns before a form's answer has arrived)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    page = browser.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(browser, 15).until(seen.staleness_of(page))
