"""No candidate wasted (issue 14), through the real task code (embedded: in process,
SQLite, every candidate in the sandbox):

* a measurement belongs to (bitstream, decoder): a rate point whose bytes this
  decoder already decoded reuses that measurement and says so, a different decoder
  measures the same bytes anew, and only an experiment whose every point is such a
  reuse is ``duplicate_output``;
* identical bytes at two rate points of one experiment are one curve point, and
  fail it only when fewer distinct points remain than BD-rate needs;
* a cheap probe (2 frames, one quality) stops a crash, a wrong output and a
  candidate much worse than its parent at stage ``probe``, with its numbers.
"""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from fleet_harness import use_settings

CLIP = "synthetic:mix@64x48"
FOUR = [0.2, 0.4, 0.6, 0.8]


@pytest.fixture
def embedded(tmp_path):
    saved = {k: v for k, v in os.environ.items() if k.startswith("CODECFLEET_")}
    env = {"CODECFLEET_DATA_DIR": str(tmp_path / "data"), "CODECFLEET_CACHE_DIR": str(tmp_path / "cache"),
           "CODECFLEET_DEVICE": "cpu"}
    use_settings(env)
    yield env
    from db import engine

    engine.reset()
    use_settings(saved)


def intra(extra: str = "", *, clamp: float | None = None, decode_tail: str = "") -> str:
    """The reference intra codec, optionally with an AST-changing extra line, a quality
    the encoder clamps (a codec that saturates), or a change to the decoded frame."""
    from evaluation.reference import reference_code

    code = reference_code("intra_dct")
    if clamp is not None:
        old = 'scale = quality_to_scale(config.get("quality", DEFAULT_CONFIG["quality"]))'
        assert code.count(old) == 1
        code = code.replace(old, f'scale = quality_to_scale(min({clamp}, config.get("quality", 0.5)))')
    if decode_tail:
        code += "\n\n_decode = decompress_video_frame\n\n\n" \
                "def decompress_video_frame(compressed_data, frame_index, config):\n" \
                "    frame = _decode(compressed_data, frame_index, config)\n" + decode_tail
    return code + ("\n" + extra + "\n" if extra else "")


def submit(code, rate_points=FOUR, *, parents=()):
    from codecfleet import fleet

    job = {"candidate": code, "clip": CLIP, "frames": 3, "rate_points": rate_points}
    if parents:
        job["generated"] = {"generator": "test", "mode": "mutation", "parent_ids": list(parents)}
    return fleet.submit_many([job])[0]


def rows(sql: str, **params):
    from db import engine

    with engine.transaction() as session:
        return session.execute(sa.text(sql), params).all()


def points(experiment_id: int):
    return rows("SELECT rate_index, measurement_id, reused_from_id, same_as_rate_index FROM experiment_points "
                "WHERE experiment_id = :e ORDER BY rate_index", e=experiment_id)


def count(table: str) -> int:
    return rows(f"SELECT count(*) FROM {table}")[0][0]


def candidate_of(experiment_id: int) -> int:
    return rows("SELECT candidate_id FROM experiments WHERE id = :e", e=experiment_id)[0][0]


def probe_of(experiment_id: int):
    return rows("SELECT outcome, reason, quality, n_frames, payload_bytes, psnr_y, parent_experiment_id, "
                "parent_psnr_y, seconds, saved_seconds FROM probes WHERE experiment_id = :e", e=experiment_id)[0]


# --- content-addressed measurement ---------------------------------------------------


def test_a_rate_point_decoded_before_by_the_same_decoder_is_reused_and_a_new_one_is_measured(embedded):
    first = submit(intra())
    assert first.result()["status"] == "succeeded"
    measured = count("measurements")

    # The same code, one more rate point: a new config, so the whole result is not
    # reused at sanitize; four points' bytes were decoded by this very decoder.
    partial = submit(intra(), [0.2, 0.4, 0.5, 0.6, 0.8])
    result = partial.result()

    assert result["status"] == "succeeded", result
    got = points(partial.id)
    assert [p.reused_from_id for p in got] == [first.id, first.id, None, first.id, first.id]
    firsts = {p.rate_index: p.measurement_id for p in points(first.id)}
    assert [p.measurement_id for p in got if p.reused_from_id] == [firsts[0], firsts[1], firsts[2], firsts[3]]
    assert count("measurements") == measured + 1  # only quality 0.5 was decoded
    assert [rp["quality"] for rp in result["rate_points"]] == [0.2, 0.4, 0.5, 0.6, 0.8]


def test_every_rate_point_reused_is_a_duplicate_pointing_at_the_original(embedded):
    first = submit(intra())
    assert first.result()["status"] == "succeeded"

    again = submit(intra(), list(reversed(FOUR)))  # another config, the same four encodes
    result = again.result()

    assert (result["status"], result["duplicate_of"]) == ("duplicate_output", first.id), result
    assert "not measured twice" in result["reason"]
    assert all(p.reused_from_id == first.id for p in points(again.id))
    assert count("measurements") == 4


def test_the_same_bytes_from_a_different_decoder_are_measured_anew(embedded):
    parent = submit(intra())
    assert parent.result()["status"] == "succeeded"

    # Another normalised AST (an unused constant), byte-identical output.
    child = submit(intra("UNUSED_TUNING = 3"))
    result = child.result()

    assert result["status"] == "succeeded", result
    assert [rp["bitstream_sha256"] for rp in result["rate_points"]] == \
        [rp["bitstream_sha256"] for rp in parent.result()["rate_points"]]
    assert all(p.reused_from_id is None and p.same_as_rate_index is None for p in points(child.id))
    assert count("artifacts") == 4  # each file stored once...
    assert count("measurements") == 8  # ...and measured once per decoder


def test_identical_rate_points_within_one_experiment_are_one_curve_point(embedded):
    saturating = intra(clamp=0.6)

    result = submit(saturating, [0.1, 0.3, 0.5, 0.6, 0.8]).result()

    assert result["status"] == "succeeded", result
    got = points(result["id"])
    assert [p.same_as_rate_index for p in got] == [None, None, None, None, 3]
    assert got[4].measurement_id == got[3].measurement_id
    assert count("measurements") == 4


def test_identical_rate_points_leaving_fewer_than_four_distinct_fail_at_verify(embedded):
    result = submit(intra(clamp=0.5), FOUR).result()

    assert (result["status"], result["stage"]) == ("failed", "verify"), result
    assert "ignores the quality setting" in result["reason"] and "fewer than the 4" in result["reason"]


# --- the probe -------------------------------------------------------------------------


def test_a_crash_stops_at_the_probe(embedded):
    crash = "def compress_video_frame(f, i, c):\n    raise ValueError('boom')\n\n" \
            "def decompress_video_frame(b, i, c):\n    return None\n"

    result = submit(crash).result()

    assert (result["status"], result["stage"]) == ("failed", "probe"), result
    assert "encode" in result["reason"] and "boom" in result["reason"]
    probe = probe_of(result["id"])
    assert (probe.outcome, probe.n_frames, probe.saved_seconds) == ("crashed", 2, 0.0)
    assert count("measurements") == 0


def test_wrong_output_stops_at_the_probe_with_its_numbers(embedded):
    grey = intra(decode_tail="    return frame * 0 + 128\n")

    result = submit(grey).result()

    assert (result["status"], result["stage"]) == ("failed", "probe"), result
    probe = probe_of(result["id"])
    assert probe.outcome == "wrong_output" and probe.psnr_y < 15 and probe.payload_bytes > 0
    assert f"PSNR-Y {probe.psnr_y:.2f} dB" in result["reason"]
    assert probe.quality == 0.4 and probe.saved_seconds > 0
    assert count("measurements") == 0


def test_a_wrongly_shaped_output_stops_at_the_probe(embedded):
    result = submit(intra(decode_tail="    return frame[:8]\n")).result()

    assert (result["status"], result["stage"]) == ("failed", "probe"), result
    assert probe_of(result["id"]).outcome == "wrong_output" and "verify" in result["reason"]


def test_a_child_much_worse_than_its_parent_stops_at_the_probe_and_the_next_prompt_says_so(embedded):
    from generation import FailureInfo
    from generation.prompts import describe_failure

    parent = submit(intra())
    assert parent.result()["status"] == "succeeded"
    # The same bytes, decoded into frames with 3 bits per sample thrown away.
    coarse = intra(decode_tail="    return (frame // 32) * 32\n")

    child = submit(coarse, parents=[candidate_of(parent.id)])
    result = child.result()

    assert (result["status"], result["stage"]) == ("failed", "probe"), result
    probe = probe_of(child.id)
    assert probe.outcome == "worse_than_parent" and probe.parent_experiment_id == parent.id
    assert probe.parent_psnr_y - probe.psnr_y > 3.0 and probe.saved_seconds > 0
    assert f"experiment {parent.id}" in result["reason"] and "below its parent" in result["reason"]
    assert count("measurements") == 4  # the parent's only
    text = describe_failure(FailureInfo("failed", result["reason"], "probe", candidate_of(child.id)))
    assert "failed at probe" in text and "below its parent" in text


def test_a_child_close_to_its_parent_passes_the_probe_and_is_measured(embedded):
    parent = submit(intra())
    assert parent.result()["status"] == "succeeded"

    child = submit(intra("UNUSED_TUNING = 3"), parents=[candidate_of(parent.id)])
    result = child.result()

    assert result["status"] == "succeeded", result
    probe = probe_of(child.id)
    assert probe.outcome == "passed" and probe.parent_experiment_id == parent.id
    assert abs(probe.parent_psnr_y - probe.psnr_y) < 1e-6  # the same bytes, the same frames
    assert probe.saved_seconds == 0.0 and probe.reason is None


def test_the_probe_can_be_switched_off(embedded):
    use_settings({**embedded, "CODECFLEET_PROBE": "off"})
    crash = "def compress_video_frame(f, i, c):\n    raise ValueError('boom')\n\n" \
            "def decompress_video_frame(b, i, c):\n    return None\n"

    result = submit(crash).result()

    assert (result["status"], result["stage"]) == ("failed", "encode")
    assert count("probes") == 0
