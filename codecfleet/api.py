"""The public Python API: what researchers call."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from config import Settings, get_settings, resolve_device
from evaluation.pipeline import DEFAULT_RATE_POINTS, measure_candidate, unmeasured_result
from evaluation.results import EvaluationResult
from evaluation.runner import InProcessRunner
from evaluation.clip import Clip
from evaluation.video import load_clip, with_secret_seed

RUNNERS = ("sandbox", "in-process")


def evaluate_candidate(
    code: str,
    clip: Clip | str,
    rate_points: int | Sequence[float] = DEFAULT_RATE_POINTS,
    limits=None,
    *,
    anchors: Sequence[str] = (),
    runner: str = "sandbox",
    device: str | None = None,
    settings: Settings | None = None,
    artifact_dir: Path | None = None,
    on_step=None,
    **measure_options,
) -> EvaluationResult:
    """Measure candidate source ``code`` on ``clip`` (a :class:`Clip` or a spec such as
    ``"synthetic:mix@176x144"``) at ``rate_points`` qualities.

    ``runner="sandbox"`` (the default) sanitizes the code and runs encoder and
    decoder in two fresh sandboxes with ``limits`` (a ``sandbox.runner.Limits``);
    ``runner="in-process"`` runs it unisolated and is for trusted code only.
    Measured here and now, with no database: ``codecfleet evaluate`` goes through
    the fleet's orchestration instead (``codecfleet.fleet.submit``), except with
    ``--runner in-process``. Returns the result (``to_json()`` is what
    ``codecfleet evaluate --json`` prints). For a synthetic
    clip, ``result["clip"]["source"]`` is its seedless name and
    ``result["clip"]["seed"]`` the seed that reproduces it (``SPEC,seed=S``):
    a secret, for the operator only. ``measure_options`` (``metric``,
    ``min_overlap``, ``determinism``) go to :func:`evaluation.pipeline.measure_candidate`.
    """
    settings = settings or get_settings()
    device = resolve_device(device or settings.device)
    if isinstance(clip, str):
        # A synthetic clip gets a fresh secret seed unless the spec names one: the
        # public generator must not let a candidate regenerate what it is measured on.
        clip = load_clip(with_secret_seed(clip)[0])
    if runner not in RUNNERS:
        raise ValueError(f"unknown runner {runner!r}; expected one of {RUNNERS}")
    if runner == "in-process":
        runner_obj = InProcessRunner()
        sanitized = None
    else:
        from sandbox.runner import Limits, SandboxRunner
        from sandbox.sanitize import sanitize

        runner_obj = SandboxRunner(limits=limits or Limits(), device=device, mode=settings.sandbox_mode)
        sanitized = sanitize(code)
        if not sanitized.ok:
            result = unmeasured_result(clip, isolation=runner_obj.isolation, device=device, status="failed",
                                       stage="sanitize", reason=sanitized.reason)
            return _with_seed(result, clip)
        code = sanitized.code
    result = measure_candidate(
        code,
        clip,
        rate_points,
        runner=runner_obj,
        artifact_dir=Path(artifact_dir or settings.artifact_dir),
        anchors=anchors,
        anchor_cache_dir=settings.cache_dir / "anchors",
        device=device,
        on_step=on_step,
        **measure_options,
    )
    if sanitized is not None:
        result = result.replace(ast_hash=sanitized.ast_hash)
    return _with_seed(result, clip)


def _with_seed(result: EvaluationResult, clip: Clip) -> EvaluationResult:
    if clip.seed is not None:
        result = result.replace(clip={**result.clip, "seed": clip.seed})
    return result
