"""Settings from environment variables prefixed ``CODECFLEET_``: the bottom layer.

Every package may import this one; it imports nothing from the project.

One typed, frozen object; read once per process with :func:`get_settings`.
Domain packages (evaluation, sandbox, db) never read the environment
themselves: the face passes them explicit arguments.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PREFIX = "CODECFLEET_"


class UserError(Exception):
    """The base of every error that means "what was asked cannot be done as asked"
    (a bad clip, file, setting, name or option), as opposed to a bug. The CLI prints
    these as one line and exits 2; anything else shows its traceback."""


class SettingsError(UserError, ValueError):
    """A ``CODECFLEET_`` variable holds a value that cannot be used."""


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(PREFIX + name)
    return value if value not in (None, "") else default


def _float(name: str, default: float) -> float:
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{PREFIX}{name}={raw!r} is not a number") from None
    if not value > 0:
        raise SettingsError(f"{PREFIX}{name} must be positive, got {raw!r}")
    return value


def _xdg(var: str, fallback: str) -> Path:
    base = os.environ.get(var)
    return Path(base) if base else Path.home() / fallback


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    artifact_dir: Path
    cache_dir: Path
    database_url: str
    broker_url: str | None
    device: str
    sandbox_mode: str
    #: How long a worker holds a running experiment without renewing its lease.
    lease_seconds: float = 300.0
    #: How often a busy worker renews its lease (must be well below lease_seconds).
    heartbeat_seconds: float = 30.0
    #: Runs of one experiment, the first included, before the reaper times it out.
    max_attempts: int = 3
    #: How often beat schedules the reaper.
    reap_interval_seconds: float = 30.0
    #: Worker-local scratch (never shared between hosts).
    scratch_dir: Path = Path("/tmp/codecfleet-scratch")
    #: Redis redelivers an unacked message after this; above the longest task.
    visibility_timeout_seconds: int = 7200
    #: torch intra-op threads in worker processes (None: torch's default, one per core).
    torch_threads: int | None = None
    #: The probe before a full measurement (2 frames, one quality): on unless "off".
    probe: bool = True
    #: dB of PSNR-Y (at equal rate, on the probe frames) a candidate may fall below its
    #: parent before the probe stops it.
    probe_margin_db: float = 3.0

    @classmethod
    def from_env(cls) -> "Settings":
        data_dir = Path(_env("DATA_DIR") or _xdg("XDG_DATA_HOME", ".local/share") / "codecfleet")
        cache_dir = Path(_env("CACHE_DIR") or _xdg("XDG_CACHE_HOME", ".cache") / "codecfleet")
        artifact_dir = Path(_env("ARTIFACT_DIR") or data_dir / "artifacts")
        database_url = _env("DATABASE_URL") or f"sqlite:///{data_dir / 'codecfleet.db'}"
        return cls(
            data_dir=data_dir,
            artifact_dir=artifact_dir,
            cache_dir=cache_dir,
            database_url=database_url,
            broker_url=_env("BROKER_URL"),
            device=_env("DEVICE", "auto") or "auto",
            sandbox_mode=_env("SANDBOX", "strict") or "strict",
            lease_seconds=_float("LEASE_SECONDS", 300.0),
            heartbeat_seconds=_float("HEARTBEAT_SECONDS", 30.0),
            max_attempts=int(_float("MAX_ATTEMPTS", 3)),
            reap_interval_seconds=_float("REAP_INTERVAL_SECONDS", 30.0),
            scratch_dir=Path(_env("SCRATCH_DIR") or cache_dir / "scratch"),
            visibility_timeout_seconds=int(_float("VISIBILITY_TIMEOUT_SECONDS", 7200)),
            torch_threads=int(_float("TORCH_THREADS", 0)) or None if _env("TORCH_THREADS") else None,
            probe=(_env("PROBE", "on") or "on").lower() not in ("off", "0", "false", "no"),
            probe_margin_db=_float("PROBE_MARGIN_DB", 3.0),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` where torch sees a GPU, else ``cpu``."""
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return "cpu"
