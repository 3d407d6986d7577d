#!/usr/bin/env bash
# One idempotent set-up for a fresh machine: system packages, a virtualenv in
# .venv, the local CPU torch wheel first (so no resolver pulls a CUDA build),
# then the package itself with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
command -v bwrap >/dev/null 2>&1 || need_apt+=(bubblewrap)
[ -e /usr/include/seccomp.h ] || ldconfig -p 2>/dev/null | grep -q 'libseccomp.so.2' || need_apt+=(libseccomp2)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# Debian's chromium renders the HTML report in the report tests (headless, offline).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]} with apt-get" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check 'torch==2.13.0' 2>&1 | grep -v 'is ignored' || true
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v 'is ignored' || true
.venv/bin/python -c 'import torch, av, numpy, codecfleet' || { echo "setup: install failed" >&2; exit 1; }

# Candidate code runs as this unprivileged host user when a worker runs as root
# (sandbox/runner.py; a worker that is not root runs candidates as its own uid).
SANDBOX_USER=${CODECFLEET_SANDBOX_USER:-codecfleet-sandbox}
if [ "$(id -u)" = 0 ]; then
    id "$SANDBOX_USER" >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin "$SANDBOX_USER"
    # bwrap runs as that user and must be able to look up the interpreter, the
    # packages and the harness: grant search (not read) on directories on the way
    # that lack it, e.g. /root when the interpreter comes from pyenv.
    su_uid=$(id -u "$SANDBOX_USER"); su_gid=$(id -g "$SANDBOX_USER")
    for target in "$(.venv/bin/python -c 'import os, sys; print(os.path.realpath(sys.base_prefix))')" \
                  "$(.venv/bin/python -c 'import numpy, os; print(os.path.dirname(os.path.dirname(os.path.realpath(numpy.__file__))))')" \
                  "$(pwd)/sandbox"; do
        d=$target
        while [ "$d" != / ]; do
            if ! setpriv --reuid="$su_uid" --regid="$su_gid" --clear-groups test -x "$d" 2>/dev/null; then
                echo "setup: granting search permission on $d to others (for $SANDBOX_USER)" >&2
                chmod o+x "$d"
            fi
            d=$(dirname "$d")
        done
    done
fi
