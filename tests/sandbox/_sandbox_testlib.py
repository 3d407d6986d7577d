"""Helpers shared by the sandbox tests (a module, not conftest, so tests can import it)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from sandbox.runner import Limits

HOSTILE_DIR = Path(__file__).parent / "hostile"

#: Small and quick: every hang test costs its call limit.
TEST_LIMITS = Limits(
    call_seconds=2.0,
    import_seconds=15.0,
    total_seconds=30.0,
    cpu_seconds=30,
    address_space_bytes=2 << 30,
    tmpfs_bytes=8 << 20,
    shm_bytes=4 << 20,
    max_file_bytes=16 << 20,
    max_output_bytes=64 << 10,
    max_payload_bytes=4 << 20,
    threads=1,
)

BLANK_CODEC = '''
import numpy as np


def compress_video_frame(frame, frame_index, config):
    return b"\\0"


def decompress_video_frame(compressed_data, frame_index, config):
    return np.zeros((config["height"], config["width"], 3), dtype=np.uint8)
'''

LOSSLESS_CODEC = '''
import zlib

import numpy as np


def compress_video_frame(frame, frame_index, config):
    return zlib.compress(frame.tobytes(), 1)


def decompress_video_frame(compressed_data, frame_index, config):
    raw = zlib.decompress(compressed_data)
    return np.frombuffer(raw, np.uint8).reshape(config["height"], config["width"], 3)
'''


def load_hostile(name: str, **values: str) -> str:
    code = (HOSTILE_DIR / f"{name}.py").read_text()
    for key, value in values.items():
        code = code.replace("{{" + key + "}}", value)
    leftover = re.findall(r"\{\{(\w+)\}\}", code)
    assert not leftover, f"{name}.py needs values for {leftover}"
    return code


def sandbox_pids(tokens: list[str]) -> list[int]:
    """Processes anywhere on the machine whose command line carries one of ``tokens``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        if any(t.encode() in cmdline for t in tokens):
            found.append(int(entry))
    return found


def wait_until(predicate, timeout: float = 3.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))
