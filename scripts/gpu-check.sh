#!/usr/bin/env bash
# One command that proves the GPU path (issue 19): run on a machine with an NVIDIA GPU,
# after a change to the sandbox's device handling, the CUDA metrics, or a torch seed, and
# before deploying GPU workers. Finishes within 8 minutes and prints a table of checks.
#
#   scripts/gpu-check.sh               all checks; CUDA sides skipped when no GPU is seen
#   scripts/gpu-check.sh --self-check  CPU sides only (what CI and GPU-less machines run)
#   scripts/gpu-check.sh --quick       fewer training steps and benchmark frames
#
# Needs: the NVIDIA driver (nvidia-smi, /dev/nvidia*), a CUDA build of torch in .venv,
# bubblewrap, libseccomp, the sandbox user and a writable cgroup (scripts/setup.sh does
# all but the driver; it is run here when .venv is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    echo "gpu-check: no .venv; running scripts/setup.sh first" >&2
    bash scripts/setup.sh
fi
if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu-check: nvidia-smi not found: CUDA checks will be skipped (CPU sides run)" >&2
elif ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu-check: torch in .venv sees no CUDA device (a CPU-only torch wheel?): CUDA checks will be skipped" >&2
    echo "           install a CUDA build, e.g. .venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cu124" >&2
fi
exec timeout --signal=TERM --kill-after=10 480 .venv/bin/python scripts/gpu_check.py "$@"
