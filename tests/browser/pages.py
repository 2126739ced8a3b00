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


# ---------------------------------------------------------------------- layout

# Laptop widths operators use (the admin must fit both) and a phone's (the customer's pages).
LAPTOP_WIDTHS = (1366, 1440)
PHONE_WIDTH = 390


def viewport(browser, *, width: int, height: int = 900, mobile: bool = False) -> None:
    """Lay pages out at ``width`` × ``height`` CSS pixels, whatever the window around them,
    until changed (it holds across page loads). ``mobile`` emulates a phone: the page's
    viewport meta tag then decides its layout width, as on a real one (a page without one
    is laid out 980 px wide and shrunk)."""
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )


def viewport_reset(browser) -> None:
    """Back to the window's own size."""
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


# Measures the page and, when something is wider than the window, walks the DOM for the
# elements whose right edge passes it. Content inside a box that scrolls or clips sideways
# cannot widen the page, so its subtree is not walked; the box itself is reported when its
# content is wider than it is (a table cut off inside its own scroll box).
_WIDTH_JS = """
const width = arguments[0], body = document.body, root = document.documentElement;
const found = {viewport: window.innerWidth, html: root.scrollWidth, body: body.scrollWidth,
               sticking_out: [], cut_off: []};
function name(el) {
  let s = el.tagName.toLowerCase();
  if (el.id) return s + '#' + el.id;
  if (el.classList.length) s += '.' + Array.from(el.classList).slice(0, 2).join('.');
  return s;
}
function path(el) {
  const parts = [];
  for (let e = el; e && e !== body && parts.length < 4; e = e.parentElement) {
    parts.unshift(name(e));
    if (e.id) break;
  }
  return parts.join(' > ');
}
function describe(el, r) {
  const words = (el.innerText || el.textContent || '').trim().replace(/\\s+/g, ' ');
  return {path: path(el), left: Math.round(r.left + scrollX), right: Math.round(r.right + scrollX),
          width: Math.round(r.width), text: words.slice(0, 60)};
}
function walk(el, parentOut) {
  for (const child of el.children) {
    const style = getComputedStyle(child);
    if (style.display === 'none' || style.position === 'fixed') continue;
    const r = child.getBoundingClientRect();
    const out = r.width > 0 && r.right + scrollX > width + 0.5;
    if (out && !parentOut) found.sticking_out.push(describe(child, r));
    if (style.overflowX !== 'visible') {
      // 1 px boxes are text for screen readers only (Django's .visually-hidden).
      if (child.clientWidth > 1 && child.scrollWidth > child.clientWidth + 1 && child.tagName !== 'CODE'
          && child.tagName !== 'PRE' && child.tagName !== 'TEXTAREA') {
        const d = describe(child, r);
        d.content = child.scrollWidth; d.box = child.clientWidth; d.overflow = style.overflowX;
        found.cut_off.push(d);
      }
      continue;
    }
    walk(child, out);
  }
}
walk(body, false);
found.sticking_out.sort((a, b) => b.right - a.right);
return found;
"""


def width_problems(browser, *, width: int, scroll_boxes: bool = False) -> list[str]:
    """What keeps the open page from fitting a window ``width`` CSS pixels wide; empty
    when it fits. The page must not scroll sideways (html's and body's scrollWidth within
    window.innerWidth, which must be ``width``: a phone page without a viewport meta tag
    is laid out wider). Each element whose right edge passes the window is named where it
    starts to (not each of its descendants), widest first. A box whose content is wider
    than the box is a problem too: one that clips it (overflow hidden) always, one that
    scrolls (a table in its own scroll box) unless ``scroll_boxes``.
    """
    found = browser.execute_script(_WIDTH_JS, width)
    problems = []
    if found["viewport"] != width:
        # A phone widens the layout to what sticks out, or to 980 px without a viewport tag.
        problems.append(
            f"the layout is {found['viewport']} px wide in a {width} px window (something "
            "sticks out, or no <meta name=viewport content='width=device-width'>)"
        )
    if max(found["html"], found["body"]) > found["viewport"]:
        problems.append(
            f"it scrolls sideways: html is {found['html']} px wide, body {found['body']} px, "
            f"the window {found['viewport']} px"
        )
    if problems:
        problems += [
            f"  {e['path']} reaches {e['right']} px ({e['width']} px wide): {e['text']!r}"
            for e in found["sticking_out"][:6]
        ]
    problems += [
        f"{e['path']} cuts off its content ({e['content']} px in {e['box']} px, "
        f"overflow-x: {e['overflow']}): {e['text']!r}"
        for e in found["cut_off"]
        if not (scroll_boxes and e["overflow"] in ("auto", "scroll"))
    ][:6]
    return problems


def overlapping(browser, first: str, second: str) -> list[str]:
    """Pairs of visible elements, one matching each CSS selector, whose boxes overlap
    (buttons drawn over a warning), as 'a / b' descriptions; empty when none do."""
    return browser.execute_script(
        """
        const boxes = sel => Array.from(document.querySelectorAll(sel))
          .map(el => [el, el.getBoundingClientRect()]).filter(([, r]) => r.width && r.height);
        const pairs = [];
        for (const [a, ra] of boxes(arguments[0])) for (const [b, rb] of boxes(arguments[1])) {
          if (a.contains(b) || b.contains(a)) continue;
          if (ra.left < rb.right && rb.left < ra.right && ra.top < rb.bottom && rb.top < ra.bottom)
            pairs.push(a.textContent.trim().slice(0, 40) + ' / ' + b.textContent.trim().slice(0, 40));
        }
        return pairs;
        """,
        first,
        second,
    )
