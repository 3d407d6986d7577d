"""Learning, shown at the domain level: offline evolution with MAP-Elites selection over
real measurements (in-process runner, real x264 anchor) lowers the best BD-rate."""

from __future__ import annotations

import math

import pytest
from _gen_testlib import validate

from evaluation.pipeline import measure_candidate
from evaluation.runner import InProcessRunner
from evaluation.synthetic import synthetic_clip
from generation import CandidateInfo, GenerationRequest, OfflineGenerator, Record, select_parents

GENERATIONS, POPULATION = 5, 6


def measure(code, clip, tmp_path):
    result = measure_candidate(code, clip, 4, runner=InProcessRunner(), artifact_dir=tmp_path / "runs",
                                anchors=["x264"], anchor_cache_dir=tmp_path / "anchors")
    if result["status"] != "succeeded" or result["bd_rate"].get("x264") is None:
        return None, result
    return result["bd_rate"]["x264"], result


def record(cid, bd, result, family):
    points = result["rate_points"]
    if bd is None:
        return Record(cid, None, family=family)
    kbps = (min(p["kbps"] for p in points), max(p["kbps"] for p in points))
    psnr = (min(p["psnr_y"] for p in points), max(p["psnr_y"] for p in points))
    fps = min(p.get("encode_fps") or math.inf for p in points)
    return Record(cid, bd, kbps, psnr, None if math.isinf(fps) else fps, family)


@pytest.mark.timeout(240)
def test_offline_evolution_lowers_the_best_bd_rate_against_x264(seeds, tmp_path):
    clip = synthetic_clip("mix", width=176, height=144, frames=3, seed=0)
    families = ("intra_dct", "torch_dct")
    gen = OfflineGenerator(0, {f: seeds[f] for f in families}, validate=validate)
    codes: dict[int, tuple[str, str]] = {}
    records: list[Record] = []
    for i, family in enumerate(families):
        bd, result = measure(seeds[family], clip, tmp_path)
        codes[i] = (seeds[family], family)
        records.append(record(i, bd, result, family))
    best = [min(r.bd_rate for r in records if r.eligible)]
    index = 0
    for generation in range(GENERATIONS):
        new = []
        for _ in range(POPULATION):
            chosen = select_parents(records, index=index, seed=0)
            parents = tuple(CandidateInfo(code=codes[p.candidate_id][0], candidate_id=p.candidate_id,
                                          family=p.family) for p in chosen.parents)
            out = gen.generate(GenerationRequest(parents=parents, index=index))
            assert out.ok, out.error
            cid = len(codes)
            family = chosen.parents[0].family
            codes[cid] = (out.code, family)
            bd, result = measure(out.code, clip, tmp_path)
            new.append(record(cid, bd, result, family))
            index += 1
        records += new
        best.append(min(r.bd_rate for r in records if r.eligible))
    print("best BD-rate vs x264 by generation:", ", ".join(f"{b:+.1f} %" for b in best))
    assert best[-1] < best[0] - 1.0, best
