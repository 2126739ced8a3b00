"""bin/demo end to end, on the test database with a small data set: it serves, Ctrl-C
says the product stopped (not that something failed) and leaves nothing on the port, and
a restart skips collectstatic when no static file changed. (Slow: it starts the real
servers, twice.)"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(settings.BASE_DIR)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def database_url() -> str:
    db = connection.settings_dict
    host = db["HOST"] or ""
    if host.startswith("/"):
        return f"postgres://{db['USER']}@/{db['NAME']}?host={host}"
    return f"postgres://{db['USER']}@{host}:{db['PORT'] or 5432}/{db['NAME']}"


class Demo:
    """bin/demo in a process of its own, its output read line by line."""

    def __init__(self, port: int, var: Path) -> None:
        from config.embedded import embedded_redis_url

        env = {
            **os.environ,
            "PORT": str(port),
            "BILLING_VAR_DIR": str(var),
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL or embedded_redis_url(),
            "DEMO_EVENTS": "2000",
        }
        env.pop("DJANGO_SETTINGS_MODULE", None)
        self.out = var / "bin-demo.out"
        var.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [str(ROOT / "bin" / "demo")],
            cwd=ROOT,
            env=env,
            stdout=self.out.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # as a terminal's foreground job: its own process group
        )

    def text(self) -> str:
        return self.out.read_text()

    def wait_for(self, line: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.text():
            assert self.process.poll() is None, f"bin/demo exited:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"no '{line}' in:\n{self.text()[-3000:]}"
            time.sleep(0.5)

    def ctrl_c(self, timeout: float = 60) -> int:
        """What a terminal does on Ctrl-C: SIGINT to the foreground process group."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout)


def run_until_ctrl_c(port: int, var: Path) -> str:
    """Start bin/demo, wait until it serves, press Ctrl-C; its output."""
    demo = Demo(port, var)
    try:
        demo.wait_for("Usage billing is running")
        assert serving(port)
        assert demo.ctrl_c() == 0
        return demo.text()
    finally:
        if demo.process.poll() is None:
            os.killpg(demo.process.pid, signal.SIGKILL)


def test_ctrl_c_stops_the_product_and_a_restart_collects_no_unchanged_static_files(tmp_path):
    port, var = free_port(), tmp_path / "var"
    first = run_until_ctrl_c(port, var)
    assert "Usage billing stopped." in first and "stopped by itself" not in first
    assert not serving(port)
    assert "==> Collecting static files" in first
    assert (var / "demo-admin-password").exists()  # this instance's, not the shared var/'s
    collected = var / "static" / "admin" / "css" / "base.css"
    before = collected.stat().st_mtime_ns

    again = run_until_ctrl_c(port, var)
    assert "==> Collecting static files" not in again
    assert collected.stat().st_mtime_ns == before
    assert "Usage billing stopped." in again and not serving(port)
