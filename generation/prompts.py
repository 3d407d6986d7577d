"""Prompts built from measured results.

A prompt is a pure function of its inputs (same data, same text), so a stored prompt can
be rebuilt and compared during a replay. It holds, in this order:

1. the task and the candidate contract (DESIGN.md section 3), the allowed imports and
   the format of the answer: one full module in a single ```python block, or
   SEARCH/REPLACE blocks against the parent;
2. the parent to improve, with its code and measured numbers;
3. recent failures with their real reasons (rejections, crashes, timeouts, duplicate
   outputs), so the model does not repeat them;
4. the best K candidates with their numbers (BD-rate against each anchor; kbps, PSNR,
   SSIM and encode/decode speed per rate point) and their code.

When the text exceeds ``budget_chars`` the lowest-priority parts go first: the code of
the worst-ranked top-K candidates, then failure snippets, then older failures, then the
numbers of the worst-ranked top-K candidates. The header and the parent always stay;
when they alone exceed the budget, :class:`PromptBudgetError` says by how much.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from generation.base import CandidateInfo, FailureInfo, TaskSpec

#: The top-level modules a candidate may import. This duplicates
#: ``sandbox.sanitize.ALLOWED_MODULES`` as text because generation does not import the
#: sandbox; callers that have the sanitizer pass its set as ``allowed_modules``, and a test
#: checks that the two lists agree.
ALLOWED_IMPORTS: tuple[str, ...] = (
    "__future__", "abc", "array", "binascii", "bisect", "bz2", "cmath", "collections", "copy",
    "dataclasses", "decimal", "enum", "fractions", "functools", "hashlib", "heapq", "io",
    "itertools", "lzma", "math", "numbers", "numpy", "operator", "random", "scipy",
    "statistics", "struct", "torch", "typing", "typing_extensions", "warnings", "zlib",
)

#: DESIGN.md section 3, verbatim.
CONTRACT = """\
A candidate is one Python module that defines

```python
def compress_video_frame(frame: np.ndarray, frame_index: int, config: dict) -> bytes
def decompress_video_frame(compressed_data: bytes, frame_index: int, config: dict) -> np.ndarray
```

- `frame` is H x W x 3 uint8 RGB; the decoder returns the same shape and dtype.
- Frames arrive in order; a module may keep state between calls (reference frames for
  inter coding). The encoder's and the decoder's module instances are separate processes
  in separate sandboxes: anything the decoder needs must travel in the bytes.
- `config` is plain JSON: the candidate's own defaults merged with what the system sets
  (`quality` in [0, 1] as the rate knob, `width`, `height`, `fps`, `device`). No paths.
- Every byte returned counts toward the bitrate. Weights of a neural codec that the decoder
  needs are in the bitstream, or the decoder re-derives them deterministically from code."""

FORMAT_REWRITE = """\
Answer with the complete improved module in exactly one ```python fenced block. Keep both
contract functions at module top level. A module-level dict `DEFAULT_CONFIG` may hold your
own settings; the system's `quality`, `width`, `height`, `fps` and `device` override it.
No `if __name__ == "__main__":` block, no file, network or process access, no printing."""

FORMAT_DIFF = """\
Answer with SEARCH/REPLACE blocks against the parent module shown below, each exactly:

<<<<<<< SEARCH
lines copied exactly from the parent (enough of them to be unique)
=======
the lines that replace them
>>>>>>> REPLACE

Blocks apply in order. Change only what improves the codec; the result must still
satisfy the contract. No `if __name__ == "__main__":` block, no file, network or process
access, no printing."""

METRIC_NAMES = {"psnr_y": "PSNR-Y", "psnr_rgb": "PSNR-RGB", "ssim_y": "SSIM-Y", "ms_ssim": "MS-SSIM"}


class PromptBudgetError(ValueError):
    """The parts a prompt cannot drop (task, contract, parent) exceed the size budget."""

    def __init__(self, needed: int, budget: int):
        self.needed = needed
        self.budget = budget
        super().__init__(
            f"the prompt needs at least {needed} characters (task, contract and parent code) "
            f"but the budget is {budget}; raise budget_chars or pick a smaller parent"
        )


@dataclass
class _Part:
    text: str
    drop_rank: int | None  # None: never dropped; higher drops first
    short: str | None = None  # what remains when the part is dropped (e.g. "code omitted")


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def describe_task(task: TaskSpec) -> str:
    size = f" ({task.width}x{task.height}" if task.width and task.height else ""
    if size:
        size += f", {task.n_frames} frames" if task.n_frames else ""
        size += f" at {task.fps:g} fps" if task.fps else ""
        size += ")"
    metric = METRIC_NAMES.get(task.metric, task.metric)
    anchors = ", ".join(task.anchors) if task.anchors else "the classic codecs"
    points = ", ".join(f"{q:g}" for q in task.rate_points)
    lines = [
        "# Task: write a better video codec",
        "",
        f"Candidates are measured on {task.clip}{size}, running on device `{task.device}`.",
        f"Each candidate encodes the clip at the qualities [{points}] (config['quality']),"
        if points
        else "Each candidate encodes the clip at several qualities (config['quality']),",
        "its bitstream is decoded in a separate sandbox, and its rate-distortion curve "
        f"({metric} against kbps) is compared with {anchors} by BD-rate: the percentage of "
        "bits saved (negative) or spent extra (positive) at equal quality. Lower BD-rate is "
        "better. Decoding is mandatory and every byte counts toward the rate.",
    ]
    return "\n".join(lines)


def describe_candidate(candidate: CandidateInfo, *, metric: str = "psnr_y") -> str:
    """Heading, BD-rates and the rate-point table of a candidate (no code)."""
    head = f"### {candidate.name}"
    extra = [x for x in (candidate.label if candidate.candidate_id is not None else None, candidate.family) if x]
    if candidate.generator:
        extra.append(f"by {candidate.generator}")
    if extra:
        head += f" ({', '.join(dict.fromkeys(extra))})"
    lines = [head]
    name = METRIC_NAMES.get(metric, metric)
    if candidate.bd_rate:
        rates = ", ".join(f"{a} {v:+.1f} %" for a, v in sorted(candidate.bd_rate.items()))
        lines.append(f"BD-rate ({name}): {rates}")
    else:
        lines.append("BD-rate: not measured")
    if candidate.points:
        lines.append("| quality | kbps | PSNR-Y dB | PSNR-RGB dB | SSIM-Y | encode fps | decode fps |")
        lines.append("|---|---|---|---|---|---|---|")
        for p in candidate.points:
            lines.append(
                f"| {p.quality:g} | {_fmt(p.kbps)} | {_fmt(p.psnr_y, 2)} | {_fmt(p.psnr_rgb, 2)} | "
                f"{_fmt(p.ssim_y, 4)} | {_fmt(p.encode_fps)} | {_fmt(p.decode_fps)} |"
            )
    return "\n".join(lines)


def _code_block(code: str) -> str:
    return f"```python\n{code.rstrip()}\n```"


def describe_failure(failure: FailureInfo) -> str:
    who = f"candidate {failure.candidate_id}" if failure.candidate_id is not None else "a candidate"
    where = f" at {failure.stage}" if failure.stage else ""
    reason = " ".join(failure.reason.split())
    if len(reason) > 400:
        reason = reason[:397] + "..."
    return f"- {who}: {failure.status}{where}: {reason}"


def _snippet(failure: FailureInfo, limit: int = 600) -> str | None:
    if not failure.snippet:
        return None
    text = failure.snippet.strip("\n")
    if len(text) > limit:
        text = text[:limit] + "\n..."
    return "  ```\n" + "\n".join("  " + ln for ln in text.splitlines()) + "\n  ```"


def build_prompt(
    task: TaskSpec,
    parent: CandidateInfo | None,
    top_k: Sequence[CandidateInfo],
    failures: Sequence[FailureInfo],
    mode: str,
    budget_chars: int,
    *,
    allowed_modules: Iterable[str] = ALLOWED_IMPORTS,
) -> str:
    """The prompt for one generation (deterministic; at most ``budget_chars`` characters).

    ``mode`` is ``"rewrite"`` (answer with a full module) or ``"diff"`` (answer with
    SEARCH/REPLACE blocks against ``parent``, which is then required). ``top_k`` is
    best first; the parent is not repeated among them.
    """
    if mode not in ("rewrite", "diff"):
        raise ValueError(f"mode must be 'rewrite' or 'diff' for an LLM prompt, got {mode!r}")
    if mode == "diff" and parent is None:
        raise ValueError("a diff prompt needs a parent to edit")
    if budget_chars < 1:
        raise ValueError(f"budget_chars must be positive, got {budget_chars}")
    modules = ", ".join(sorted(m for m in set(allowed_modules) if m != "__future__"))

    parts: list[_Part] = [
        _Part(describe_task(task), None),
        _Part("## The contract\n\n" + CONTRACT, None),
        _Part(f"## Allowed imports\n\nOnly these top-level modules (and their ordinary submodules): {modules}.", None),
        _Part("## Your answer\n\n" + (FORMAT_DIFF if mode == "diff" else FORMAT_REWRITE), None),
    ]
    if parent is not None:
        verb = "Edit" if mode == "diff" else "Improve"
        parts.append(
            _Part(
                f"## The parent to improve\n\n{verb} this candidate:\n\n"
                + describe_candidate(parent, metric=task.metric)
                + "\n\n"
                + _code_block(parent.code),
                None,
            )
        )

    # Drop ranks: bigger goes first. Code of the worst top-K, then snippets, then old
    # failures, then the numbers of the worst top-K. The best candidate's numbers and the
    # newest failures are the last optional things to go.
    shown_top = [c for c in top_k if parent is None or c.code != parent.code]
    n_top, n_fail = len(shown_top), len(failures)
    base_code, base_snip, base_fail, base_nums = 3000, 2000, 1000, 0
    if failures:
        parts.append(
            _Part(
                "## Recent failures (do not repeat them)\n\n"
                "These candidates produced no result; the reason is what the system reported.",
                None,
            )
        )
        for i, failure in enumerate(failures):
            parts.append(_Part(describe_failure(failure), base_fail + i if i >= 3 else base_nums + 500 + i))
            snip = _snippet(failure)
            if snip:
                parts.append(_Part(snip, base_snip + (n_fail - i)))
    if shown_top:
        parts.append(_Part(f"## The best candidates so far (best first, {n_top} shown)", None))
        for i, cand in enumerate(shown_top):
            parts.append(_Part(describe_candidate(cand, metric=task.metric), base_nums + (600 + i if i else 0)))
            parts.append(
                _Part(_code_block(cand.code), base_code + i, short=f"(code of {cand.name} omitted for space)")
            )

    def render() -> str:
        return "\n\n".join(p.text for p in parts if p.text) + "\n"

    text = render()
    if len(text) > budget_chars:
        fixed = "\n\n".join(p.text for p in parts if p.drop_rank is None) + "\n"
        note = "\n\n(some parts were left out to fit the size budget)"
        if len(fixed) + len(note) > budget_chars:
            raise PromptBudgetError(len(fixed) + len(note), budget_chars)
        for part in sorted((p for p in parts if p.drop_rank is not None), key=lambda p: -p.drop_rank):
            part.text = part.short or ""
            part.drop_rank = None if part.short else part.drop_rank
            text = render()
            if len(text) + len(note) <= budget_chars:
                break
        if len(text) + len(note) > budget_chars:
            # Short placeholders did not fit either: drop them too.
            for part in parts:
                if part.short is not None and part.text == part.short:
                    part.text = ""
            text = render()
        text = text.rstrip("\n") + note + "\n"
    return text
