"""Several models in one campaign: one generator per model, one chosen per request by weight.

The choice is a pure function of ``(request.seed, request.index)`` and the weights, so a
resumed or repeated campaign sends each request to the same model. Every candidate
records the model that wrote it (``Generated.model``), and the report groups by model.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from generation.base import GenerationRequest, Generated, Generator


class WeightedGenerator:
    """Picks one of ``choices`` (``(generator, weight)`` pairs, weights > 0) per request,
    with probability proportional to its weight, drawn from ``(seed, index)``."""

    name = "weighted"
    model = None  # each candidate's model is the chosen generator's

    def __init__(self, choices: Sequence[tuple[Generator, float]], *, seed: int = 0):
        if not choices:
            raise ValueError("WeightedGenerator needs at least one (generator, weight)")
        for gen, weight in choices:
            if not weight > 0:
                raise ValueError(f"weight of {getattr(gen, 'model', gen)!r} must be > 0, got {weight!r}")
        self.generators = [g for g, _ in choices]
        self.weights = [float(w) for _, w in choices]
        self.seed = seed

    def __repr__(self) -> str:
        parts = ", ".join(f"{getattr(g, 'model', None) or g!r}:{w:g}" for g, w in zip(self.generators, self.weights))
        return f"WeightedGenerator({parts})"

    @property
    def models(self) -> list[str | None]:
        return [getattr(g, "model", None) for g in self.generators]

    def choose(self, request: GenerationRequest) -> Generator:
        """The generator for ``request``: the same for the same (seed, index)."""
        seed = request.seed if request.seed is not None else self.seed
        rng = random.Random(f"codecfleet-models:{seed}:{request.index}")
        return rng.choices(self.generators, weights=self.weights, k=1)[0]

    def generate(self, request: GenerationRequest) -> Generated:
        return self.choose(request).generate(request)


__all__ = ["WeightedGenerator"]
