"""A real nginx for the gateway tests and the forward-auth benchmark: Debian's ``nginx``
package (installed with apt when missing, where that is possible), run in the
foreground with a generated configuration under a directory the caller owns.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Debian's package puts it here; NGINX names another.
NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")
APT_PACKAGES = ["nginx-light"]  # the smallest build that has auth_request
APT_FALLBACK = ["nginx"]  # (Debian 13 dropped nginx-light)


class NginxUnavailable(Exception):
    """nginx is missing and cannot be installed, or will not start."""


def _installed() -> bool:
    return Path(NGINX).exists()


def nginx_ensure(*, timeout: int = 600) -> None:
    """Install Debian's nginx with apt when it is missing.

    Raises NginxUnavailable saying why when it cannot be installed here (no apt, not root
    and no password-less sudo, or apt failed)."""
    if _installed():
        return
    apt = shutil.which("apt-get")
    if apt is None:
        raise NginxUnavailable(f"{NGINX} is missing and this machine has no apt-get.")
    if os.geteuid() == 0:
        prefix: list[str] = []
    elif (
        shutil.which("sudo")
        and subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode == 0
    ):
        prefix = ["sudo", "-n"]
    else:
        raise NginxUnavailable(
            f"{NGINX} is missing and installing it needs root: "
            f"sudo apt-get install {' '.join(APT_PACKAGES)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=300"]  # another apt run (a parallel test run) may hold it
    install = [*prefix, apt, *lock, "install", "-y", "-qq", "--no-install-recommends"]
    failure = ""
    for packages in (APT_PACKAGES, APT_FALLBACK):
        for command in ([*prefix, apt, *lock, "update", "-qq"], [*install, *packages]):
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=timeout, check=False
            )
            if done.returncode != 0:
                failure = f"'{' '.join(command)}' failed ({done.returncode}): {done.stderr[-500:]}"
                break
        if _installed():
            return
    raise NginxUnavailable(failure or f"apt installed nginx but {NGINX} is still missing.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_conf(*, prefix: Path, port: int, servers: str) -> str:
    """A whole nginx.conf: one worker in the foreground, every file under ``prefix``, and
    the ``servers`` (``server { ... }`` blocks) given; ``port`` is only for the caller."""
    user = "user root;\n" if os.geteuid() == 0 else ""
    temps = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {prefix}/access.log;
{temps}
{servers}
}}
"""


@contextmanager
def nginx_running(*, prefix: Path, conf: str, port: int, timeout: float = 10) -> Iterator[None]:
    """nginx started with ``conf`` (written to ``prefix/nginx.conf``), listening on
    ``port``; stopped (and waited for) on the way out. Raises NginxUnavailable when it
    does not come up within ``timeout`` seconds."""
    nginx_ensure()
    prefix.mkdir(parents=True, exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(conf)
    process = subprocess.Popen(
        [NGINX, "-p", str(prefix), "-c", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=open(prefix / "stderr.log", "w"),  # noqa: SIM115 - closed with the process
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise NginxUnavailable(
                    f"nginx exited ({process.returncode}): "
                    f"{(prefix / 'stderr.log').read_text()[-1000:]}"
                )
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise NginxUnavailable(
                        f"nginx did not listen on {port} in {timeout} s"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        process.terminate()  # SIGTERM: nginx's fast shutdown
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
