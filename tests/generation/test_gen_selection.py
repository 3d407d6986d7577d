"""Parent selection over a MAP-Elites archive or islands: diverse, seeded, from plain records."""

from __future__ import annotations

from generation.selection import Record, build_archive, cell_of, select_parents


def rec(cid, bd, kbps=(100.0, 400.0), psnr=(30.0, 38.0), fps=30.0, family="intra_dct"):
    return Record(cid, bd, kbps, psnr, fps, family)


# Two behaviours: low-rate fast intra coders and high-rate slow inter coders.
RECORDS = [
    rec(1, 120.0), rec(2, 110.0), rec(3, 130.0),
    rec(4, 150.0, kbps=(1600.0, 6400.0), psnr=(40.0, 46.0), fps=2.0, family="inter_mc"),
    rec(5, 140.0, kbps=(1600.0, 6400.0), psnr=(40.0, 46.0), fps=2.0, family="inter_mc"),
    rec(6, None),  # failed: never a parent
]


def test_the_archive_keeps_the_best_bd_rate_per_behaviour_cell():
    archive = build_archive(RECORDS)
    assert sorted(r.candidate_id for r in archive.values()) == [2, 5]
    assert cell_of(RECORDS[0]) != cell_of(RECORDS[3])


def test_map_elites_breeds_from_every_cell_not_only_the_best():
    chosen = {select_parents(RECORDS, index=i, seed=0, tournament_size=1).parents[0].candidate_id for i in range(40)}
    assert chosen == {2, 5}


def test_failed_candidates_are_never_parents_and_no_records_means_start_from_seeds():
    assert all(
        6 not in [p.candidate_id for p in select_parents(RECORDS, index=i, crossover_rate=1.0).parents]
        for i in range(30)
    )
    assert select_parents([rec(9, None)], index=0).parents == ()


def test_selection_is_deterministic_in_seed_and_index():
    a = [select_parents(RECORDS, index=i, seed=4).parents for i in range(20)]
    b = [select_parents(RECORDS, index=i, seed=4).parents for i in range(20)]
    c = [select_parents(RECORDS, index=i, seed=5).parents for i in range(20)]
    assert a == b and a != c


def test_a_crossover_partner_is_of_the_same_family():
    for i in range(30):
        parents = select_parents(RECORDS, index=i, crossover_rate=1.0).parents
        assert len(parents) == 2 and parents[0].family == parents[1].family
        assert parents[0].candidate_id != parents[1].candidate_id


def test_islands_take_turns_and_an_empty_island_starts_from_its_seed():
    islands = ("inter_mc", "intra_dct", "torch_dct")
    picks = [select_parents(RECORDS, index=i, strategy="islands", islands=islands, migration_rate=0.0) for i in range(3)]
    assert [s.island for s in picks] == list(islands)
    assert picks[0].parents[0].family == "inter_mc" and picks[1].parents[0].family == "intra_dct"
    assert picks[2].parents == ()


def test_migration_lets_another_island_s_best_into_the_tournament():
    islands = ("inter_mc", "intra_dct")
    picks = [
        select_parents(RECORDS, index=2 * i, strategy="islands", islands=islands, migration_rate=1.0,
                       tournament_size=10, crossover_rate=0.0)
        for i in range(5)
    ]
    # inter_mc's best is 140 %; with intra_dct's best (110 %) in the tournament, it wins.
    assert all(s.parents[0].candidate_id == 2 and s.migrated for s in picks)
