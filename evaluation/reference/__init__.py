"""Reference candidates: real codecs written to the candidate contract (DESIGN.md section 3).

Each is one self-contained module that imports only what a generated candidate may
import, so the same sanitizer, sandbox and pipeline run them; they are also the seeds
that generation starts from.

========== =====================================================================
intra_dct  numpy; every frame intra: BT.709 YCbCr 4:2:0, 8x8 DCT, JPEG tables
inter_mc   numpy; keyframes plus half-sample motion-compensated, DCT-coded residuals
torch_dct  torch on ``config["device"]``; intra 8x8 DCT with a uniform (MSE-optimal) quantiser
overfit_nn torch; learned (Cool-chic/C3 style): per frame, a latent pyramid and a tiny
           synthesis network trained at encode time, arithmetic-coded; integer decoder
========== =====================================================================

The modules are data for the runners (source text to sanitize and load), not code this
package imports.
"""

from pathlib import Path

from config import UserError

_HERE = Path(__file__).resolve().parent

REFERENCE_CANDIDATES: dict[str, Path] = {
    name: _HERE / f"{name}.py" for name in ("intra_dct", "inter_mc", "torch_dct", "overfit_nn")
}


#: The families the offline generator mutates when no seeds are named: its operators edit
#: the constants, tables and entropy coders of classic codecs. ``overfit_nn`` is a seed
#: for LLM campaigns (``--seeds overfit_nn``), where a model edits it.
OFFLINE_SEEDS: tuple[str, ...] = ("intra_dct", "inter_mc", "torch_dct")


class UnknownReferenceError(UserError, KeyError):
    """No reference candidate has this name; ``known`` lists the names there are."""

    def __init__(self, name: str):
        self.name = name
        self.known = tuple(REFERENCE_CANDIDATES)
        super().__init__(name)

    def __str__(self) -> str:
        # KeyError.__str__ would show only repr(name); say what the choices are.
        return f"no reference candidate named {self.name!r}; known: {', '.join(self.known)}"


def reference_path(name: str) -> Path:
    """Path of the reference candidate ``name`` (one of :data:`REFERENCE_CANDIDATES`)."""
    try:
        return REFERENCE_CANDIDATES[name]
    except KeyError:
        raise UnknownReferenceError(name) from None


def reference_code(name: str) -> str:
    """Source text of the reference candidate ``name``, as a runner takes it."""
    return reference_path(name).read_text(encoding="utf-8")
