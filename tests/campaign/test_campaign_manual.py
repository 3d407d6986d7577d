"""The manual generator in a campaign: a thread plays the model through a directory
(reads each request file, writes the answer file), one request is left unanswered and
times out as a failed generation, and a rerun under the same name finds answers
written ahead of time."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from codecfleet.campaigns import campaign
from evaluation.reference import reference_code


def _answer(scale: str) -> str:
    code = reference_code("intra_dct")
    start = code.index("\nMIN_SCALE = ") + 1
    end = code.index("\n", start)
    return "Finer quantiser floor.\n```python\n" + code[:start] + f"MIN_SCALE = {scale}" + code[end:] + "\n```\n"


SCALES = {0: "0.2", 2: "0.3", 3: "0.25"}


def _player(directory: Path, stop: threading.Event, seen: list, skip: set[int]) -> None:
    """Answers each request it finds (unless its index is in ``skip``), like a person would."""
    answered: set[str] = set()
    while not stop.is_set():
        for meta_path in sorted(directory.glob("request-*.json")):
            if meta_path.name in answered:
                continue
            meta = json.loads(meta_path.read_text())
            prompt = (directory / meta["prompt_file"]).read_text()
            seen.append((meta, prompt))
            answered.add(meta_path.name)
            if meta["index"] in skip:
                continue
            tmp = directory / (meta["answer_file"] + ".tmp")
            tmp.write_text(_answer(SCALES[meta["index"]]))
            tmp.rename(directory / meta["answer_file"])
        time.sleep(0.05)


def _rows(data_dir: str):
    engine = sa.create_engine(f"sqlite:///{data_dir}/codecfleet.db")
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT c.generator, c.model, c.prompt, c.raw_reply, c.mode, e.status, e.failure_stage, e.error "
            "FROM experiments e JOIN candidates c ON c.id = e.candidate_id ORDER BY e.id"
        )).all()
    engine.dispose()
    return [r for r in rows if not r.generator.startswith("seed:")]


def test_manual_generator_round_trips_through_a_directory_and_resumes(embedded, tmp_path, monkeypatch):
    directory = tmp_path / "manual"
    monkeypatch.setenv("CODECFLEET_MANUAL_TIMEOUT_SECONDS", "1.5")
    monkeypatch.setenv("CODECFLEET_MANUAL_POLL_SECONDS", "0.05")
    stop = threading.Event()
    seen: list = []
    player = threading.Thread(target=_player, args=(directory, stop, seen, {1}), daemon=True)
    player.start()
    try:
        report = campaign(["synthetic:mix@96x64"], f"manual:{directory}", population=2, generations=1,
                          name="by hand", seeds=("intra_dct",), frames=2)
    finally:
        stop.set()
        player.join(5)

    # Documented names: request-NAME-NNNN.md/.json, answer-NAME-NNNN.md (unsafe characters -> _).
    assert sorted(p.name for p in directory.iterdir()) == [
        "answer-by_hand-0000.md",
        "request-by_hand-0000.json", "request-by_hand-0000.md",
        "request-by_hand-0001.json", "request-by_hand-0001.md",
    ]
    assert [m["index"] for m, _ in seen] == [0, 1]
    for meta, prompt in seen:
        assert meta["campaign"] == "by hand" and meta["prompt_chars"] == len(prompt)
        assert meta["answer_file"] == f"answer-by_hand-{meta['index']:04d}.md"
        assert "compress_video_frame" in prompt and "x264" in prompt

    rows = _rows(embedded["CODECFLEET_DATA_DIR"])
    assert [(r.generator, r.status) for r in rows] == [
        ("manual", "succeeded"), ("manual", "timed_out")]
    assert rows[0].raw_reply == _answer("0.2") and rows[0].prompt == seen[0][1] and rows[0].model == "manual"
    # The unanswered request is a failed generation with a reason naming the file, not an exception.
    assert rows[1].failure_stage == "generate" and "answer-by_hand-0001.md" in rows[1].error
    assert "1.5 s" in rows[1].error
    assert report.generations[-1].candidates == 2

    # The prompt shows the parent's stored per-frame PSNR-Y (min / mean) beside its frame sizes.
    meta, prompt = seen[1]
    engine = sa.create_engine(f"sqlite:///{embedded['CODECFLEET_DATA_DIR']}/codecfleet.db")
    with engine.connect() as conn:
        stored = conn.execute(sa.text(
            "SELECT m.frame_psnr_y, m.frame_bytes FROM experiments e JOIN experiment_points p ON p.experiment_id = e.id "
            "JOIN measurements m ON m.id = p.measurement_id WHERE e.candidate_id = :c ORDER BY e.id, p.rate_index"
        ), {"c": meta["parent_ids"][0]}).all()
    engine.dispose()
    assert stored and "not stored" not in prompt
    for psnr_json, bytes_json in stored:
        psnr, sizes = json.loads(psnr_json), json.loads(bytes_json)
        assert f"| {sum(sizes)} | {sizes[0]} |" in prompt
        assert f"| {min(psnr):.2f} / {sum(psnr) / len(psnr):.2f} |" in prompt

    # Resume: answers written before the rerun (no player) are found and used.
    for index in (2, 3):
        (directory / f"answer-by_hand-{index:04d}.md").write_text(_answer(SCALES[index]))
    report = campaign(["synthetic:mix@96x64"], f"manual:{directory}", population=2, generations=2,
                      name="by hand", seeds=("intra_dct",), frames=2)
    rows = _rows(embedded["CODECFLEET_DATA_DIR"])
    assert [r.status for r in rows] == ["succeeded", "timed_out", "succeeded", "succeeded"]
    assert rows[2].raw_reply == _answer("0.3") and rows[3].raw_reply == _answer("0.25")
    # The new prompts show the timed-out request's reason to the model.
    assert "answer-by_hand-0001.md" in (directory / "request-by_hand-0002.md").read_text()
    assert len(report.generations) == 3
