"""Headless Chromium for the browser tests and the screenshots: Debian's ``chromium``
and ``chromium-driver`` packages (installed with apt when missing, where that is
possible), driven by Selenium.

Every download (PDFs included: the built-in viewer is off) lands in a folder the caller
names, so a test can read the file the browser received.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

# Debian's packages put them here; CHROMIUM and CHROMEDRIVER name others.
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
WINDOW = (1280, 900)
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]
APT_PACKAGES = ["chromium", "chromium-driver"]


class ChromiumUnavailable(Exception):
    """Chromium or its driver is missing and cannot be installed, or will not start."""


def _installed() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


def chromium_ensure(*, timeout: int = 900) -> None:
    """Install Debian's chromium and chromium-driver with apt when they are missing.

    Raises ChromiumUnavailable saying why when they cannot be installed here (no apt,
    not root and no password-less sudo, or apt failed)."""
    if _installed():
        return
    apt = shutil.which("apt-get")
    if apt is None:
        raise ChromiumUnavailable(
            f"{CHROMIUM} is missing and this machine has no apt-get to install "
            f"{' and '.join(APT_PACKAGES)}."
        )
    if os.geteuid() == 0:
        prefix: list[str] = []
    elif (
        shutil.which("sudo")
        and subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode == 0
    ):
        prefix = ["sudo", "-n"]
    else:
        raise ChromiumUnavailable(
            f"{CHROMIUM} is missing and installing it needs root: "
            f"sudo apt-get install {' '.join(APT_PACKAGES)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=300"]  # another apt run (a parallel test run) may hold it
    for command in (
        [*prefix, apt, *lock, "update", "-qq"],
        [*prefix, apt, *lock, "install", "-y", "-qq", "--no-install-recommends", *APT_PACKAGES],
    ):
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise ChromiumUnavailable(
                f"'{' '.join(command)}' failed ({done.returncode}): {done.stderr.strip()[-500:]}"
            )
    if not _installed():
        raise ChromiumUnavailable(f"apt installed {APT_PACKAGES} but {CHROMIUM} is still missing.")


def chromium_start(*, downloads: Path | None = None, window: tuple[int, int] = WINDOW):
    """A headless Chromium driven by Selenium, with its own throw-away profile.

    Raises ChromiumUnavailable when it does not start (the driver's message says why)."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--window-size={window[0]},{window[1]}", f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs",
        {
            "download.prompt_for_download": False,
            "plugins.always_open_pdf_externally": True,  # a PDF is downloaded, not shown
            "credentials_enable_service": False,
            "profile.password_manager_enabled": False,
        },
    )
    try:
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    except WebDriverException as exc:
        shutil.rmtree(profile, ignore_errors=True)
        raise ChromiumUnavailable(f"Chromium did not start: {exc.msg or exc}") from exc
    driver.profile_dir = profile
    if downloads is not None:
        downloads_to(driver, downloads)
    return driver


def chromium_stop(driver) -> None:
    try:
        driver.quit()
    finally:
        shutil.rmtree(getattr(driver, "profile_dir", ""), ignore_errors=True)


def downloads_to(driver, folder: Path) -> None:
    """Save every download from now on in ``folder``, without asking."""
    folder.mkdir(parents=True, exist_ok=True)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior",
        {"behavior": "allow", "downloadPath": str(folder), "eventsEnabled": True},
    )


def downloaded(folder: Path, *, suffix: str = "", timeout: float = 20) -> Path:
    """The one finished download in ``folder`` (its name ending in ``suffix``), waiting
    for it. Raises AssertionError when none arrives in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [
            p
            for p in folder.iterdir()
            if p.is_file() and not p.name.endswith(".crdownload") and p.name.endswith(suffix)
        ]
        if done:
            return done[0]
        time.sleep(0.1)
    raise AssertionError(
        f"No download ending in {suffix!r} in {folder} after {timeout} s: "
        f"{sorted(p.name for p in folder.iterdir())}"
    )
