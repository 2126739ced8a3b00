"""bin/test stops the embedded PostgreSQL it started (under BILLING_VAR_DIR here), leaves
one that was already running, and exits with pytest's status."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
A_PURE_TEST = "tests/core/test_money.py"


@pytest.fixture
def var():
    # Readable by the embedded server's own user (pytest's tmp_path is not).
    path = Path(tempfile.mkdtemp(prefix="billing-bin-test-"))
    path.chmod(0o755)
    yield path
    subprocess.run([str(ROOT / "bin" / "demo"), "stop"], env=env_for(path), cwd=ROOT, check=False)
    shutil.rmtree(path, ignore_errors=True)


def env_for(var: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return {**env, "BILLING_VAR_DIR": str(var)}


def bin_test(var: Path, *args: str) -> int:
    return subprocess.run(
        [str(ROOT / "bin" / "test"), "-q", "-p", "no:cacheprovider", *args],
        env=env_for(var),
        cwd=ROOT,
        capture_output=True,
        check=False,
    ).returncode


def postgres_running(var: Path) -> bool:
    pid_file = var / "postgres" / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = pid_file.read_text().split()[0]
    return Path(f"/proc/{pid}").exists()


def test_bin_test_stops_the_embedded_postgres_it_started_and_keeps_pytests_status(var):
    assert bin_test(var, A_PURE_TEST, "-k", "allocate") == 0
    assert (var / "postgres").is_dir() and not postgres_running(var)
    assert bin_test(var, A_PURE_TEST, "-k", "no_test_has_this_name") == 5  # none collected
    assert not postgres_running(var)


def test_bin_test_leaves_running_an_embedded_postgres_it_did_not_start(var):
    subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-c",
         "from config.embedded import embedded_postgres_url; embedded_postgres_url()"],
        env=env_for(var), cwd=ROOT, check=True,
    )  # fmt: skip
    assert postgres_running(var)
    assert bin_test(var, A_PURE_TEST, "-k", "allocate") == 0
    assert postgres_running(var)
