"""Parent selection from measured candidates, over a quality-diversity archive or islands.

Always breeding from the single best candidate collapses a campaign onto one lineage
and one operating point. Two standard remedies, both over plain records (the caller
reads them from the database):

* **MAP-Elites** (Mouret & Clune 2015, "Illuminating search spaces by mapping elites"):
  candidates are binned by behaviour -- rate (octaves of kbps), quality (steps of PSNR-Y
  in dB) and encode speed (half decades of frames per second) -- and each cell keeps its
  best BD-rate (its elite). A parent is the winner of a tournament among elites drawn
  uniformly from the occupied cells, so a fast-but-coarse codec keeps breeding beside a
  slow-but-fine one.
* **Islands**: one population per seed family, visited in turn (request ``index`` modulo
  the number of islands); a tournament within the island, and with probability
  ``migration_rate`` the best of the other islands join the tournament.

A second parent (for crossover) is drawn with probability ``crossover_rate`` from the
same family as the first. All randomness comes from ``random.Random(f"{seed}:{index}")``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

Cell = tuple[int, int, int]


@dataclass(frozen=True)
class Record:
    """One measured candidate. ``bd_rate`` in percent against the campaign's anchor
    (lower is better; None when it could not be measured, which makes the record
    ineligible); ``kbps`` and ``psnr`` as (lowest, highest) over its rate points."""

    candidate_id: int
    bd_rate: float | None
    kbps: tuple[float, float] | None = None
    psnr: tuple[float, float] | None = None
    encode_fps: float | None = None
    family: str | None = None

    @property
    def eligible(self) -> bool:
        return self.bd_rate is not None and math.isfinite(self.bd_rate)


@dataclass(frozen=True)
class Selection:
    """The parents chosen for one request (empty when nothing is measured yet: start from
    a seed, of ``island`` when one is named)."""

    parents: tuple[Record, ...]
    strategy: str
    island: str | None = None
    cell: Cell | None = None
    migrated: bool = False


def _key(r: Record) -> tuple[float, int]:
    return (r.bd_rate, r.candidate_id)


def cell_of(
    record: Record, *, rate_octaves: float = 1.0, psnr_step_db: float = 2.0, speed_decades: float = 0.5
) -> Cell:
    """The archive cell of a record: (rate bin, quality bin, speed bin). Rate is the
    geometric mean of its kbps range in octaves, quality the middle of its PSNR range in
    steps of ``psnr_step_db``, speed log10 of encode fps in steps of ``speed_decades``;
    an unknown dimension falls in bin 0."""
    rate = 0
    if record.kbps and min(record.kbps) > 0:
        rate = math.floor(math.log2(math.sqrt(record.kbps[0] * record.kbps[1])) / rate_octaves)
    quality = math.floor((record.psnr[0] + record.psnr[1]) / 2 / psnr_step_db) if record.psnr else 0
    speed = 0
    if record.encode_fps and record.encode_fps > 0:
        speed = math.floor(math.log10(record.encode_fps) / speed_decades)
    return (rate, quality, speed)


def build_archive(records: Sequence[Record], **bins: float) -> dict[Cell, Record]:
    """MAP-Elites archive: per occupied cell, the eligible record with the lowest BD-rate
    (ties to the lower candidate id)."""
    archive: dict[Cell, Record] = {}
    for r in records:
        if not r.eligible:
            continue
        cell = cell_of(r, **bins)
        if cell not in archive or _key(r) < _key(archive[cell]):
            archive[cell] = r
    return archive


def _tournament(pool: Sequence[Record], size: int, rng: random.Random) -> Record:
    entrants = rng.sample(list(pool), min(size, len(pool)))
    return min(entrants, key=_key)


def _partner(first: Record, pool: Sequence[Record], size: int, rng: random.Random) -> Record | None:
    mates = [r for r in pool if r.eligible and r.candidate_id != first.candidate_id and r.family == first.family]
    return _tournament(mates, size, rng) if mates else None


def select_parents(
    records: Sequence[Record],
    *,
    index: int,
    seed: int = 0,
    strategy: str = "map_elites",
    tournament_size: int = 3,
    crossover_rate: float = 0.3,
    migration_rate: float = 0.1,
    islands: Sequence[str] | None = None,
    **bins: float,
) -> Selection:
    """Choose the parent(s) of request ``index`` (deterministic in ``seed`` and ``index``).

    ``strategy`` is ``"map_elites"`` or ``"islands"``; ``islands`` fixes the island names
    (e.g. the seed families, so an island whose candidates all failed still gets its
    turn, starting again from its seed); by default the families present. ``bins`` go to
    :func:`cell_of`.
    """
    if strategy not in ("map_elites", "islands"):
        raise ValueError(f"strategy must be 'map_elites' or 'islands', got {strategy!r}")
    if tournament_size < 1:
        raise ValueError(f"tournament_size must be >= 1, got {tournament_size}")
    rng = random.Random(f"{seed}:{index}")
    eligible = sorted((r for r in records if r.eligible), key=_key)

    if strategy == "map_elites":
        if not eligible:
            return Selection((), strategy)
        archive = build_archive(eligible, **bins)
        elites = sorted(archive.values(), key=_key)
        first = _tournament(elites, tournament_size, rng)
        parents = [first]
        if rng.random() < crossover_rate:
            mate = _partner(first, eligible, tournament_size, rng)
            if mate is not None:
                parents.append(mate)
        return Selection(tuple(parents), strategy, cell=cell_of(first, **bins))

    names = list(islands) if islands else sorted({r.family or "" for r in eligible})
    if not names:
        return Selection((), strategy)
    island = names[index % len(names)]
    members = [r for r in eligible if (r.family or "") == island]
    migrated = False
    pool = list(members)
    if rng.random() < migration_rate:
        others = {}
        for r in eligible:
            fam = r.family or ""
            if fam != island and (fam not in others or _key(r) < _key(others[fam])):
                others[fam] = r
        if others:
            pool += sorted(others.values(), key=_key)
            migrated = True
    if not pool:
        return Selection((), strategy, island=island or None)
    first = _tournament(pool, tournament_size, rng)
    parents = [first]
    if rng.random() < crossover_rate:
        mate = _partner(first, eligible, tournament_size, rng)
        if mate is not None:
            parents.append(mate)
    return Selection(tuple(parents), strategy, island=island or None, migrated=migrated and first.family != island)
