"""Prove the GPU path on a machine with an NVIDIA GPU, in one command (scripts/gpu-check.sh).

Each check prints one row: name, pass / FAIL / skipped, and its figures. Without a CUDA
device (or with ``--self-check``) every check still runs its CPU side, so the script
itself is tested where no GPU is; the CUDA side is then marked "skipped: no CUDA device".

Checks (issue 19):
  metrics      CUDA and CPU metrics agree: PSNR-RGB and PSNR-Y exactly, SSIM-Y to 1e-6
  sandbox      a torch candidate (torch_dct, device=cuda) in the strict sandbox: devices
               bound, seccomp on, session cgroup; bytes and frames as the trusted runner's
  learned      the learned seed overfit_nn trained on CUDA vs CPU (same steps): speed, and
               its integer decoder gives the same frames for the same bytes on both
  released     GPU memory used (nvidia-smi) is back to its baseline after a session that
               held 1 GiB
  bomb         a candidate allocating device memory until it fails, and a CUDA-context hog
               that holds the device past the call limit: each fails the candidate, and
               the next session runs normally (CPU side: a host-memory bomb, cgroup-capped)
  isolation    a session fills device memory with a marker; the next session's fresh
               allocations never show it (CPU side: the same with host memory)
  benchmark    benchmarks/metrics.py --device cuda (CPU side: --device cpu), its table

A CPU side that fails makes its row FAIL even where the CUDA side is skipped.

Exit status: 0 when nothing failed (skips are not failures), 1 otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from evaluation import metrics  # noqa: E402
from evaluation.reference import reference_code  # noqa: E402
from evaluation.runner import CandidateError, InProcessRunner  # noqa: E402
from evaluation.synthetic import synthetic_clip  # noqa: E402

NO_CUDA = "skipped: no CUDA device"


@dataclass
class Row:
    name: str
    status: str  # "pass", "FAIL" or "skipped: ..."
    figures: str


def _frames(width: int = 176, height: int = 144, n: int = 2) -> np.ndarray:
    return np.ascontiguousarray(synthetic_clip("mix", width=width, height=height, frames=n, seed=7).frames)


def _config(frames: np.ndarray, device: str, **extra) -> dict:
    return {"quality": 0.5, "width": frames.shape[2], "height": frames.shape[1], "fps": 30.0, "device": device, **extra}


def _runner(device: str, **limits):
    from sandbox.runner import Limits, SandboxRunner

    return SandboxRunner(Limits(**limits), device=device, mode="strict")


def _gpu_used_mib() -> int | None:
    """Device memory in use, from nvidia-smi (this process never holds CUDA memory while measuring)."""
    if shutil.which("nvidia-smi") is None:
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                         capture_output=True, text=True, timeout=30)
    return int(out.stdout.split()[0]) if out.returncode == 0 and out.stdout.strip() else None


# ---------------------------------------------------------------------------- checks


def check_metrics(cuda: bool) -> Row:
    ref = _frames(352, 288, 4)
    rng = np.random.default_rng(1)
    dist = np.clip(ref.astype(np.int16) + rng.integers(-6, 7, ref.shape), 0, 255).astype(np.uint8)
    cpu = {f: getattr(metrics, f)(ref, dist, device="cpu") for f in ("psnr_rgb", "psnr_y", "ssim_y")}
    figures = f"CPU PSNR-Y {cpu['psnr_y'].mean():.4f} dB, SSIM-Y {cpu['ssim_y'].mean():.6f}"
    if not cuda:
        return Row("metrics", NO_CUDA, figures + " (CPU side ran)")
    gpu = {f: getattr(metrics, f)(ref, dist, device="cuda") for f in cpu}
    exact = all(np.array_equal(cpu[f], gpu[f]) for f in ("psnr_rgb", "psnr_y"))
    ssim_diff = float(np.max(np.abs(cpu["ssim_y"] - gpu["ssim_y"])))
    ok = exact and ssim_diff <= 1e-6
    return Row("metrics", "pass" if ok else "FAIL", f"{figures}; PSNR identical: {exact}; max |dSSIM| {ssim_diff:.2e}")


def check_sandbox(cuda: bool) -> Row:
    device = "cuda" if cuda else "cpu"
    frames = _frames(176, 144, 3)
    code = reference_code("torch_dct")
    runner = _runner(device)
    config = _config(frames, device)
    t0 = time.perf_counter()
    enc = runner.encode(code, frames, dict(config))
    dec = runner.decode(code, enc.payloads, dict(config), len(frames))
    seconds = time.perf_counter() - t0
    trusted = InProcessRunner()
    want = trusted.encode(code, frames, dict(config))
    want_dec = trusted.decode(code, want.payloads, dict(config), len(frames))
    same = list(enc.payloads) == list(want.payloads) and np.array_equal(dec.frames, want_dec.frames)
    figures = f"{runner.isolation}; device {device}; {seconds:.1f} s; same bytes and frames as trusted: {same}"
    status = "FAIL" if not same else ("pass" if cuda else NO_CUDA)
    return Row("sandbox", status, figures + ("" if cuda else " (CPU side ran)"))


def check_learned(cuda: bool, steps: int) -> Row:
    frames = _frames(352, 288, 1)
    code = reference_code("overfit_nn")
    runner = InProcessRunner()
    timings, outputs = {}, {}
    for device in ("cpu", "cuda") if cuda else ("cpu",):
        config = _config(frames, device, train_steps=steps)
        t0 = time.perf_counter()
        enc = runner.encode(code, frames, dict(config))
        timings[device] = time.perf_counter() - t0
        dec = runner.decode(code, enc.payloads, dict(config), 1)
        again = runner.decode(code, enc.payloads, dict(config), 1)
        outputs[device] = (enc.payloads, dec.frames, np.array_equal(dec.frames, again.frames))
    cpu_fps = steps / timings["cpu"]
    figures = f"CIF, {steps} steps: CPU {timings['cpu']:.1f} s ({cpu_fps:.1f} steps/s)"
    deterministic = all(o[2] for o in outputs.values())
    if not cuda:
        return Row("learned", NO_CUDA if deterministic else "FAIL", f"{figures}; decode repeatable: {deterministic} (CPU side ran)")
    # The decoder is integer arithmetic: CUDA-trained bytes decode identically with device=cpu.
    cross = runner.decode(code, outputs["cuda"][0], _config(frames, "cpu"), 1)
    same = np.array_equal(cross.frames, outputs["cuda"][1])
    speedup = timings["cpu"] / timings["cuda"]
    figures += f", CUDA {timings['cuda']:.1f} s ({steps / timings['cuda']:.1f} steps/s, x{speedup:.1f})"
    ok = deterministic and same
    return Row("learned", "pass" if ok else "FAIL", f"{figures}; CUDA bytes decode identically on CPU: {same}")


HOLD_1GIB = '''
import numpy as np
import torch
def compress_video_frame(frame, frame_index, config):
    x = torch.ones(256 << 20, device=config["device"])  # 1 GiB of float32
    return bytes([int(x[-1].item())])
def decompress_video_frame(compressed_data, frame_index, config):
    return np.zeros((config["height"], config["width"], 3), np.uint8)
'''

BOMB = '''
import numpy as np
import torch
def compress_video_frame(frame, frame_index, config):
    held = []
    while True:  # until the device (CUDA) or the session cgroup (CPU) says no
        held.append(torch.ones(256 << 20, device=config["device"]))
    return b""
def decompress_video_frame(compressed_data, frame_index, config):
    return np.zeros((config["height"], config["width"], 3), np.uint8)
'''

HOG = '''
import numpy as np
import torch
def compress_video_frame(frame, frame_index, config):
    x = torch.ones(1 << 20, device=config["device"])
    while True:  # hold the CUDA context and the device busy, past the call limit
        x = x * 1.0000001
    return b""
def decompress_video_frame(compressed_data, frame_index, config):
    return np.zeros((config["height"], config["width"], 3), np.uint8)
'''

MARK = '''
import numpy as np
import torch
MARKER = 0x5EC0DE
def compress_video_frame(frame, frame_index, config):
    n = 64 << 20  # 256 MiB of int32
    if config["role"] == "write":
        x = torch.full((n,), MARKER, dtype=torch.int32, device=config["device"])
        return bytes([int(x[0].item() == MARKER)])
    x = torch.empty((n,), dtype=torch.int32, device=config["device"])  # uninitialised
    return int((x == MARKER).sum().item()).to_bytes(8, "big")
def decompress_video_frame(compressed_data, frame_index, config):
    return np.zeros((config["height"], config["width"], 3), np.uint8)
'''


def check_released(cuda: bool) -> Row:
    if not cuda:
        return Row("released", NO_CUDA, "needs nvidia-smi and a device (nothing to run on CPU)")
    frames = _frames(64, 48, 1)
    before = _gpu_used_mib()
    out = _runner("cuda").encode(HOLD_1GIB, frames, _config(frames, "cuda"))
    time.sleep(1.0)
    after = _gpu_used_mib()
    ok = out.payloads[0] == b"\x01" and before is not None and after is not None and after <= before + 16
    return Row("released", "pass" if ok else "FAIL", f"nvidia-smi used: {before} MiB before, {after} MiB after a 1 GiB session")


def _fails(code: str, device: str, frames, **limits) -> tuple[bool, str, float]:
    t0 = time.perf_counter()
    try:
        _runner(device, **limits).encode(code, frames, _config(frames, device))
    except CandidateError as err:
        return True, f"{err.stage}: {str(err)[:80]}", time.perf_counter() - t0
    return False, "did not fail", time.perf_counter() - t0


def check_bomb(cuda: bool) -> Row:
    frames = _frames(64, 48, 1)
    device = "cuda" if cuda else "cpu"
    bomb, bomb_why, bomb_s = _fails(BOMB, device, frames, memory_bytes=2 << 30)
    parts = [f"{device} memory bomb failed the candidate in {bomb_s:.1f} s ({bomb_why})" if bomb else "bomb NOT contained"]
    ok = bomb
    if cuda:
        hog, hog_why, hog_s = _fails(HOG, "cuda", frames, call_seconds=15.0)
        parts.append(f"context hog stopped in {hog_s:.1f} s ({hog_why})" if hog else "hog NOT stopped")
        ok = ok and hog
    after = _runner(device).encode(HOLD_1GIB if cuda else reference_code("intra_dct"), frames, _config(frames, device))
    parts.append(f"next session ran: {bool(after.payloads)}")
    ok = ok and bool(after.payloads)
    if not cuda:
        return Row("bomb", NO_CUDA if ok else "FAIL", "; ".join(parts) + " (CPU side)")
    return Row("bomb", "pass" if ok else "FAIL", "; ".join(parts))


def check_isolation(cuda: bool) -> Row:
    frames = _frames(64, 48, 1)
    device = "cuda" if cuda else "cpu"
    wrote = _runner(device).encode(MARK, frames, _config(frames, device, role="write")).payloads[0]
    seen = int.from_bytes(_runner(device).encode(MARK, frames, _config(frames, device, role="read")).payloads[0], "big")
    ok = wrote == b"\x01" and seen == 0
    figures = f"{device}: session 1 wrote 256 MiB of markers; session 2 saw {seen} of them in fresh memory"
    if not cuda:
        return Row("isolation", NO_CUDA if ok else "FAIL", figures + " (CPU side)")
    return Row("isolation", "pass" if ok else "FAIL", figures)


def check_benchmark(cuda: bool, frames: int, repeats: int) -> Row:
    device = "cuda" if cuda else "cpu"
    cmd = [sys.executable, str(REPO / "benchmarks" / "metrics.py"), "--device", device,
           "--frames", str(frames), "--repeats", str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    print(f"\n$ {' '.join(cmd[1:])}\n{proc.stdout}{proc.stderr[-2000:]}", flush=True)
    last = [line for line in proc.stdout.splitlines() if line.strip()][-1:] or ["(no output)"]
    ok = proc.returncode == 0
    if not cuda:
        return Row("benchmark", NO_CUDA if ok else "FAIL", f"--device cpu exit {proc.returncode} (CPU side)")
    return Row("benchmark", "pass" if ok else "FAIL", f"--device cuda exit {proc.returncode}; {last[0].strip()[:90]}")


# ---------------------------------------------------------------------------- main


def run(self_check: bool, quick: bool) -> list[Row]:
    cuda = torch.cuda.is_available() and not self_check
    steps = 20 if quick else 300
    bench = (1, 1) if quick else (8, 3)
    # Sandbox checks first: after "metrics" and "learned" this process holds a CUDA context.
    checks = [
        ("sandbox", lambda: check_sandbox(cuda)),
        ("released", lambda: check_released(cuda)),
        ("bomb", lambda: check_bomb(cuda)),
        ("isolation", lambda: check_isolation(cuda)),
        ("metrics", lambda: check_metrics(cuda)),
        ("learned", lambda: check_learned(cuda, steps)),
        ("benchmark", lambda: check_benchmark(cuda, *bench)),
    ]
    rows = []
    for name, fn in checks:
        t0 = time.perf_counter()
        try:
            row = fn()
        except Exception as exc:  # a check that crashes is a failed check, with its reason
            traceback.print_exc()
            row = Row(name, "FAIL", f"{type(exc).__name__}: {str(exc)[:150]}")
        row.figures += f" [{time.perf_counter() - t0:.0f} s]"
        rows.append(row)
        print(f"{row.name:<10} {row.status:<26} {row.figures}", flush=True)
    return rows


def table(rows: list[Row]) -> str:
    lines = [f"{'check':<10} {'result':<26} figures", "-" * 100]
    lines += [f"{r.name:<10} {r.status:<26} {r.figures}" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self-check", action="store_true", help="run only the CPU sides, as on a machine without CUDA")
    parser.add_argument("--quick", action="store_true", help="fewer training steps and benchmark frames")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.self_check
    name = torch.cuda.get_device_name(0) if cuda else "none (CPU sides only)"
    print(f"codecfleet GPU check: torch {torch.__version__}, CUDA device: {name}", flush=True)
    rows = run(args.self_check, args.quick)
    print("\n" + table(rows))
    return 1 if any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
