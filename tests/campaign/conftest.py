"""Campaign tests run on the embedded default: SQLite in tmp_path, sandbox on, no broker."""

from __future__ import annotations

import os

import pytest


def _use(env: dict[str, str]) -> None:
    for key in [k for k in os.environ if k.startswith("CODECFLEET_")]:
        del os.environ[key]
    os.environ.update(env)
    from config import get_settings
    from db import engine
    from tasks.app import reconfigure

    get_settings.cache_clear()
    engine.reset()
    reconfigure()


@pytest.fixture
def embedded(tmp_path):
    saved = {k: v for k, v in os.environ.items() if k.startswith("CODECFLEET_")}
    env = {
        "CODECFLEET_DATA_DIR": str(tmp_path / "data"),
        "CODECFLEET_CACHE_DIR": str(tmp_path / "cache"),
        "CODECFLEET_DEVICE": "cpu",
    }
    if saved.get("CODECFLEET_SANDBOX"):  # a weaker mode named by whoever runs the tests
        env["CODECFLEET_SANDBOX"] = saved["CODECFLEET_SANDBOX"]
    _use(env)
    yield env
    _use(saved)
