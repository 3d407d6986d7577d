"""Untrusted candidate code: the sanitizer (a quality gate) and the sandboxed runner (the boundary)."""

from sandbox.runner import (
    MODES,
    AbortedError,
    CallLog,
    IsolationError,
    IsolationReport,
    Limits,
    SandboxRunner,
    describe_mode,
    probe_isolation,
)
from sandbox.sanitize import SanitizeResult, ast_hash, extract_code, sanitize

__all__ = [
    "MODES",
    "AbortedError",
    "CallLog",
    "IsolationError",
    "IsolationReport",
    "Limits",
    "SandboxRunner",
    "SanitizeResult",
    "ast_hash",
    "describe_mode",
    "extract_code",
    "probe_isolation",
    "sanitize",
]
