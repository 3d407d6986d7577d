"""A built wheel works without the source tree: migrations, reference codecs and kernels travel in it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy of the files git would commit: setuptools' build/ in
    # the checkout may hold files from an earlier build that the wheel would
    # otherwise pick up.
    source = tmp_path_factory.mktemp("source")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout.split("\0")  # fmt: skip
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=240,
    )
    (built,) = out.glob("codecfleet-*.whl")
    return built


def test_the_wheel_carries_the_migrations_the_reference_codecs_and_the_kernels(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "db/migrations/env.py",
        "db/migrations/script.py.mako",
        "db/migrations/versions/0001_initial_schema.py",
        "db/migrations/versions/0002_candidate_cost_and_mode.py",
        "evaluation/fused_cpu.py",
        "evaluation/reference/intra_dct.py",
        "evaluation/reference/inter_mc.py",
        "evaluation/reference/torch_dct.py",
        "sandbox/_harness.py",
    ):
        assert required in names, f"{required} missing from {wheel.name}"
    assert not any(name.startswith("migrations/") for name in names), "a top-level 'migrations' package would collide"


def test_an_unpacked_wheel_migrates_a_database_without_the_source_tree(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    data = tmp_path / "data"
    env = {
        **os.environ,
        "PYTHONPATH": str(site),  # ahead of the editable install's finder
        "CODECFLEET_DATA_DIR": str(data),
        "CODECFLEET_DATABASE_URL": f"sqlite:///{data / 'wheel.db'}",
    }
    code = (
        "import db.migrate, sys\n"
        "print(db.migrate.MIGRATIONS_DIR)\n"
        "from codecfleet.cli import main\n"
        "sys.exit(main(['db', 'upgrade']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    migrations_dir, report = result.stdout.splitlines()[0], result.stdout
    assert Path(migrations_dir) == site / "db" / "migrations"
    from db import migrate

    assert f"at revision {migrate.head_revision()}" in report  # the newest migration travelled in the wheel
    assert (data / "wheel.db").stat().st_size > 0
