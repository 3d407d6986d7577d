"""Offline evolution over the reference candidates' program text: distinct, valid,
working programs, reproducible from a seed."""

from __future__ import annotations

import ast
import random

import numpy as np
import pytest
from _gen_testlib import validate

from evaluation.runner import InProcessRunner
from evaluation.synthetic import synthetic_clip
from generation import CandidateInfo, GenerationRequest, OfflineGenerator, TaskSpec
from generation.offline import RULES, find_tunables, mutate_tunable, normalise


def run_chain(gen: OfflineGenerator, n: int, seeds: dict[str, str]) -> list:
    """n requests, each breeding from the previous output of the same family (or a seed)."""
    outs, last = [], {}
    families = sorted(seeds)
    for i in range(n):
        family = families[i % len(families)]
        parents = (last[family],) if family in last and i % 2 else ()
        out = gen.generate(GenerationRequest(parents=parents, index=i))
        outs.append(out)
        if out.ok:
            last[family] = CandidateInfo(code=out.code, candidate_id=i, family=family)
    return outs


def test_programs_are_distinct_and_pass_the_sanitizer(seeds):
    outs = run_chain(OfflineGenerator(1, seeds, validate=validate), 24, seeds)
    assert all(o.ok for o in outs), [o.error for o in outs if not o.ok]
    texts = {normalise(o.code) for o in outs}
    assert len(texts) == 24
    assert not texts & {normalise(c) for c in seeds.values()}
    assert all(validate(o.code)[0] for o in outs)
    assert all(o.notes and o.mode == "mutation" and o.generator == "offline" for o in outs)
    assert all(o.raw_reply == o.code and o.notes[0] in o.prompt for o in outs)


def test_the_same_seed_gives_the_same_sequence_and_another_seed_another(seeds):
    a = [o.code for o in run_chain(OfflineGenerator(7, seeds, validate=validate), 8, seeds)]
    b = [o.code for o in run_chain(OfflineGenerator(7, seeds, validate=validate), 8, seeds)]
    c = [o.code for o in run_chain(OfflineGenerator(8, seeds, validate=validate), 8, seeds)]
    assert a == b
    assert a != c


def test_a_resumed_generator_regenerates_the_same_candidate_for_an_index(seeds):
    first = OfflineGenerator(3, seeds, validate=validate)
    outs = [first.generate(GenerationRequest(index=i)) for i in range(6)]
    resumed = OfflineGenerator(3, seeds, validate=validate, seen=[o.code for o in outs[:5]])
    assert resumed.generate(GenerationRequest(index=5)).code == outs[5].code


def test_crossover_takes_tunables_from_both_parents_of_a_family(seeds):
    a = seeds["torch_dct"]
    b = a.replace("LUMA_STEP = 16.0", "LUMA_STEP = 11.0").replace("CHROMA_STEP = 20.0", "CHROMA_STEP = 31.0")
    b = b.replace("ROUNDING = 0.4", "ROUNDING = 0.3").replace("MAX_SCALE = 16.0", "MAX_SCALE = 24.0")
    gen = OfflineGenerator(0, seeds, validate=validate)
    pa = CandidateInfo(code=a, candidate_id=1, family="torch_dct")
    pb = CandidateInfo(code=b, candidate_id=2, family="torch_dct")
    outs = [gen.generate(GenerationRequest(parents=(pa, pb), index=i)) for i in range(6)]
    assert all(o.ok and o.mode == "crossover" and o.parent_ids == (1, 2) for o in outs)
    taken = [n for o in outs for n in o.notes if n.endswith("from the second parent")]
    assert taken
    values = {t.key: t.value for o in outs for t in find_tunables(o.code) if t.key == "LUMA_STEP"}
    assert values  # still a torch_dct program with its tunables


def test_parents_of_different_families_are_mutated_not_crossed(seeds):
    gen = OfflineGenerator(0, seeds, validate=validate)
    pa = CandidateInfo(code=seeds["intra_dct"], candidate_id=1, family="intra_dct")
    pb = CandidateInfo(code=seeds["inter_mc"], candidate_id=2, family="inter_mc")
    out = gen.generate(GenerationRequest(parents=(pa, pb)))
    assert out.ok and out.mode == "mutation" and out.parent_ids == (1,)


def test_mutations_stay_within_their_ranges(seeds):
    rng = random.Random(0)
    code = seeds["inter_mc"]
    for _ in range(60):
        out = mutate_tunable(code, rng)
        if out:
            code = out[0]
    for t in find_tunables(code):
        rule = RULES.get(t.rule_key)
        if rule is None or t.kind == "matrix":
            continue
        if rule.kind == "choice":
            assert t.value in rule.choices, t
        else:
            assert rule.lo <= t.value <= rule.hi, t
    for t in find_tunables(code):
        if t.kind == "matrix":
            assert all(1 <= x <= 255 for row in t.value for x in row), t.key


def _roundtrip(code: str, frames: np.ndarray) -> np.ndarray:
    runner = InProcessRunner()
    config = {"quality": 0.5, "width": frames.shape[2], "height": frames.shape[1], "fps": 30.0, "device": "cpu"}
    encoded = runner.encode(code, frames, config)
    return runner.decode(code, encoded.payloads, config, len(frames)).frames


@pytest.mark.parametrize("coder_rate", [0.0, 1.0])
def test_mutated_programs_encode_and_decode(seeds, coder_rate):
    frames = synthetic_clip("mix", width=48, height=32, frames=3).frames
    gen = OfflineGenerator(11, seeds, validate=validate, coder_rate=coder_rate)
    outs = run_chain(gen, 6, seeds)
    for out in outs:
        decoded = _roundtrip(out.code, frames)
        mse = np.mean((decoded.astype(np.float64) - frames) ** 2)
        assert decoded.shape == frames.shape and 10 * np.log10(255**2 / max(mse, 1e-9)) > 20, out.notes
    if coder_rate == 1.0:
        assert all(any(n.startswith("entropy coder") for n in o.notes) for o in outs)
        assert any("zlib.compress" in o.code or "bz2.compress" in o.code for o in outs)


def test_a_validator_that_refuses_everything_is_reported_not_raised(seeds):
    gen = OfflineGenerator(0, {"torch_dct": seeds["torch_dct"]}, max_tries=5)
    gen.validate = lambda code: (False, "line 1: nope")
    out = gen.generate(GenerationRequest())
    assert not out.ok and out.error.status == "invalid_program" and "nope" in out.error.reason


def test_comments_and_layout_of_the_parent_survive_a_mutation(seeds):
    out = OfflineGenerator(0, seeds, validate=validate).generate(GenerationRequest(index=0))
    family = sorted(seeds)[0]
    kept = [ln for ln in seeds[family].splitlines() if ln.lstrip().startswith("#")]
    assert kept and all(ln in out.code for ln in kept)
    ast.parse(out.code)


def test_keyint_is_only_changed_to_a_value_that_acts_differently_on_the_clip(seeds):
    # On a 4-frame clip every keyframe interval from 4 up means "frame 0 only":
    # moving 30 -> 8 would reproduce the parent's bitstream (duplicate_output).
    rng = random.Random(1)
    proposed = set()
    for _ in range(400):
        out = mutate_tunable(seeds["inter_mc"], rng, n_frames=4)
        if out and out[1].startswith("DEFAULT_CONFIG.keyint"):
            proposed.add(int(out[1].rsplit("-> ", 1)[1]))
    assert proposed == {1, 2}
    # Without the frame count every other choice stays possible.
    rng = random.Random(1)
    unaware = set()
    for _ in range(400):
        out = mutate_tunable(seeds["inter_mc"], rng)
        if out and out[1].startswith("DEFAULT_CONFIG.keyint"):
            unaware.add(int(out[1].rsplit("-> ", 1)[1]))
    assert unaware == {1, 2, 4, 8, 15, 60, 120}


def test_the_generator_passes_the_clip_length_to_its_mutations(seeds):
    gen = OfflineGenerator(0, seeds, validate=validate)
    parent = CandidateInfo(code=seeds["inter_mc"], candidate_id=7, family="inter_mc")
    keyints = []
    for index in range(60):
        out = gen.generate(GenerationRequest(task=TaskSpec(n_frames=4), parents=(parent,), index=index))
        keyints += [int(n.rsplit("-> ", 1)[1]) for n in out.notes if n.startswith("DEFAULT_CONFIG.keyint")]
    assert keyints and set(keyints) <= {1, 2}
