# Sourced by bin/demo and bin/test: a virtual environment from pyproject.toml, and the
# system libraries WeasyPrint needs, installed when missing. Safe to run again.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

find_python() {
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

apt_install() {
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "Please install: $*" >&2
    return 1
  fi
}

if ! python_bin="$(find_python)"; then
  echo "==> Python 3.11 not found; installing it with apt" >&2
  apt_install python3.11 python3.11-venv
  python_bin="$(find_python)"
fi

if [ ! -x "$PY" ]; then
  echo "==> Creating the virtual environment in .venv" >&2
  "$python_bin" -m venv "$VENV" || { apt_install python3.11-venv && "$python_bin" -m venv "$VENV"; }
fi

stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "==> Installing dependencies from pyproject.toml" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
  if ! "$PY" -m pip install --disable-pip-version-check -e ".[dev]" >"$VENV/pip-install.log" 2>&1; then
    tail -n 40 "$VENV/pip-install.log" >&2
    echo "Installing dependencies failed; the whole log is in $VENV/pip-install.log" >&2
    exit 1
  fi
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi

# WeasyPrint renders PDFs through Pango.
# (the library list is read whole first: grep -q closing the pipe early would fail it under pipefail)
libraries="$(ldconfig -p 2>/dev/null || true)"
if ! grep -q 'libpango-1.0.so.0' <<<"$libraries" || ! grep -q 'libpangoft2-1.0.so.0' <<<"$libraries"; then
  echo "==> Installing Pango for WeasyPrint with apt" >&2
  apt_install libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core
elif ! grep -q 'libharfbuzz-subset.so.0' <<<"$libraries"; then
  # Optional: with HarfBuzz-Subset WeasyPrint subsets the fonts embedded in each PDF itself;
  # without it, it falls back to fontTools (slower, and a warning on every render).
  echo "==> Installing HarfBuzz-Subset for WeasyPrint with apt" >&2
  apt_install libharfbuzz-subset0 || echo "    (not installed: PDFs render with fontTools instead)" >&2
fi

# The embedded servers config/embedded.py starts under a var/ directory (var/, or
# BILLING_VAR_DIR), for bin/demo stop and bin/test.
embedded_pid() {  # embedded_pid VAR postgres|redis: the server's pid if it runs, else nothing
  local file program pid
  case "$2" in
    postgres) file="$1/postgres/postmaster.pid" program=postgres ;;
    redis) file="$1/redis.pid" program=redis-server ;;
  esac
  [ -f "$file" ] || return 0
  pid="$(head -n 1 "$file")"
  # a pid file left by a crash may name a process that is something else by now
  if [ -n "$pid" ] && grep -qa "$program" "/proc/$pid/cmdline" 2>/dev/null; then
    echo "$pid"
  fi
  return 0
}

embedded_stop() {  # embedded_stop VAR postgres|redis...: stop them; return once they are gone
  local var="$1" server pid
  shift
  for server in "$@"; do
    pid="$(embedded_pid "$var" "$server")"
    [ -n "$pid" ] || continue
    # SIGINT is PostgreSQL's fast shutdown (clients disconnected, nothing lost)
    if [ "$server" = postgres ]; then kill -INT "$pid"; else kill -TERM "$pid"; fi 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
}
