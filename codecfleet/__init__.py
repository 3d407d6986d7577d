"""codecfleet: measure LLM-written video codecs honestly.

``submit``, ``submit_many``, ``get`` and ``cancel`` (codecfleet.fleet) run an
experiment through the fleet, or in-process without a broker;
``evaluate_candidate`` (codecfleet.api) measures one candidate directly;
``campaign`` and ``Budget`` (codecfleet.campaigns) run a generate-measure-learn loop.
They are imported on first use, so ``import codecfleet`` stays cheap.
"""

__version__ = "0.1.0"

_LAZY = {
    "submit": "codecfleet.fleet",
    "submit_many": "codecfleet.fleet",
    "get": "codecfleet.fleet",
    "cancel": "codecfleet.fleet",
    "evaluate_candidate": "codecfleet.api",
    "campaign": "codecfleet.campaigns",
    "Budget": "codecfleet.campaigns",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'codecfleet' has no attribute {name!r}")
