"""Peak RSS of the trusted side while one rate point is measured in the sandbox.

    .venv/bin/python benchmarks/decode_rss.py [--width 1920] [--height 1080] [--frames 60]

Each way runs in a fresh process: build the reference clip (synthetic, in memory:
the trusted side's reference is always held), then encode, write, re-read, decode
and score one rate point through the strict SandboxRunner with a trivial zlib
candidate, and report that process's peak RSS during the measurement (VmHWM, reset
after the clip was built) and its growth over the RSS with the reference clip alone:

* ``streamed``: today's path, the decoder's frames scored and hashed as they
  arrive (evaluation.pipeline.DecodedStream): a batch of frames at a time;
* ``whole-clip``: the same runner behind a wrapper without ``on_frame``, which is
  how every rate point was measured before (the decoded clip held, then scored).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CANDIDATE = '''
import zlib
import numpy as np

def compress_video_frame(frame, frame_index, config):
    q = max(1, int(round(64 * (1.0 - config["quality"]))))
    return zlib.compress((frame // q * q).tobytes(), 1)

def decompress_video_frame(compressed_data, frame_index, config):
    data = zlib.decompress(compressed_data)
    return np.frombuffer(data, dtype=np.uint8).reshape(config["height"], config["width"], 3).copy()
'''


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _child(way: str, width: int, height: int, frames: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from evaluation.pipeline import measure_rate_point
    from evaluation.synthetic import synthetic_clip
    from sandbox.runner import SandboxRunner

    clip = synthetic_clip("pan", width=width, height=height, frames=frames, seed=1)
    runner = SandboxRunner()
    import gc

    gc.collect()
    # Generating the clip peaks above what holding it costs: start the peak (VmHWM) afresh.
    Path("/proc/self/clear_refs").write_text("5")
    after_clip = _status_bytes("VmRSS")

    class WholeClip:
        isolation = runner.isolation

        def encode(self, code, frames, config):
            return runner.encode(code, frames, config)

        def decode(self, code, payloads, config, n_frames):
            return runner.decode(code, payloads, config, n_frames)

    with tempfile.TemporaryDirectory() as d:
        point, _ = measure_rate_point(CANDIDATE, clip, 0, 0.5, runner=runner if way == "streamed" else WholeClip(),
                                      run_dir=Path(d), device="cpu")
    peak = _status_bytes("VmHWM")
    return {"way": way, "clip_bytes": clip.frames.nbytes, "rss_after_clip": after_clip, "peak_rss": peak,
            "psnr_y": point.psnr_y, "decode_seconds": point.decode_seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.width, args.height, args.frames)))
        return
    mib = 1 << 20
    print(f"one rate point, {args.width}x{args.height}, {args.frames} frames, strict sandbox, trusted side's RSS")
    print(f"{'way':<12} {'clip MiB':>9} {'RSS with clip MiB':>19} {'peak RSS MiB':>13} {'growth MiB':>11} {'PSNR-Y':>7}")
    for way in ("streamed", "whole-clip"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", way, "--width", str(args.width), "--height", str(args.height),
             "--frames", str(args.frames)], check=True, capture_output=True, text=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{way:<12} {r['clip_bytes'] / mib:>9.0f} {r['rss_after_clip'] / mib:>19.0f} {r['peak_rss'] / mib:>13.0f} "
              f"{(r['peak_rss'] - r['rss_after_clip']) / mib:>11.0f} {r['psnr_y']:>7.2f}")


if __name__ == "__main__":
    main()
