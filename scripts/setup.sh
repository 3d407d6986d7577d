#!/usr/bin/env bash
# One idempotent set-up for a fresh machine: system packages, a virtualenv in
# .venv, the local CPU torch wheel first (so no resolver pulls a CUDA build),
# then the package itself with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Progress while a long step runs: a line when it starts, a dot-free "still running, Ns"
# line every 20 s on stderr, and its time when it ends. The step's own exit status is kept.
SETUP_T0=$(date +%s)
step() {
    local what=$1; shift
    local t0 rc ticker
    t0=$(date +%s)
    echo "setup: $what ..." >&2
    ( while sleep 20; do echo "setup:   $what: still running, $(( $(date +%s) - t0 )) s" >&2; done ) &
    ticker=$!
    rc=0
    "$@" || rc=$?
    kill "$ticker" 2>/dev/null || true
    wait "$ticker" 2>/dev/null || true
    echo "setup: $what: done in $(( $(date +%s) - t0 )) s" >&2
    return "$rc"
}

need_apt=()
command -v bwrap >/dev/null 2>&1 || need_apt+=(bubblewrap)
[ -e /usr/include/seccomp.h ] || ldconfig -p 2>/dev/null | grep -q 'libseccomp.so.2' || need_apt+=(libseccomp2)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# Debian's chromium renders the HTML report in the report tests (headless, offline).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
    step "apt-get update" as_root apt-get update -qq
    step "apt-get install ${need_apt[*]} (chromium alone is a few minutes on a fresh machine)" \
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
else
    echo "setup: system packages present (bwrap, libseccomp, systemd-analyze, redis-server, chromium)" >&2
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || step "creating .venv with $PY" "$PY" -m venv .venv
pip_quiet() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v 'is ignored' || true; }
step "pip: the CPU torch wheel" pip_quiet 'torch==2.13.0'
step "pip: codecfleet and its test extras" pip_quiet -e '.[test]'
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
echo "setup: ready in $(( $(date +%s) - SETUP_T0 )) s; next: .venv/bin/codecfleet run" >&2
