"""The README's "Write a candidate" example evaluates as printed: the code block and the
command are read from README.md, so the example cannot rot."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- readme-candidate:"


def _example() -> tuple[str, list[str]]:
    text = README.read_text(encoding="utf-8")
    after = text[text.index(MARKER):]
    code = re.search(r"```python\n(.*?)```", after, re.S).group(1)
    command = re.search(r"```bash\n(.*?)\n```", after, re.S).group(1).strip()
    return code, shlex.split(command)


def test_readme_candidate_is_about_thirty_lines_and_the_command_names_it():
    code, argv = _example()
    assert 20 <= len(code.splitlines()) <= 40
    assert "def compress_video_frame(" in code and "def decompress_video_frame(" in code
    assert argv[:3] == [".venv/bin/codecfleet", "evaluate", "my_codec.py"]


def test_readme_candidate_evaluates_as_printed_in_the_real_sandbox(tmp_path):
    code, argv = _example()
    (tmp_path / "my_codec.py").write_text(code, encoding="utf-8")
    env = dict(os.environ, CODECFLEET_DATA_DIR=str(tmp_path / "data"), CODECFLEET_CACHE_DIR=str(tmp_path / "cache"),
               CODECFLEET_DEVICE="cpu")
    env.pop("CODECFLEET_DATABASE_URL", None)
    env.pop("CODECFLEET_BROKER_URL", None)
    # The printed command, run by this interpreter's codecfleet (the README's .venv/bin/codecfleet).
    proc = subprocess.run([sys.executable, "-m", "codecfleet.cli", *argv[1:]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert "status: succeeded" in out
    assert out.count("│ 0.") == 4  # four rate points: 0.100, 0.367, 0.633, 0.900
    # The README says what the BD table shows against x264: usually no figure, with the
    # reason; a figure only beside its overlap (the secret clip seed decides which).
    x264_rows = [line for line in out.splitlines() if "x264" in line]
    assert "do not overlap in log-rate" in out or any(
        re.search(r"[+-]\d+\.\d+", line) and re.search(r"\d+\.\d %", line) for line in x264_rows
    ), out
