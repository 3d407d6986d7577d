"""The HTML report: what it says, that it is built from the stored numbers, and that
a real browser (Debian's headless Chromium, offline flags) loads the page and all its images."""

from __future__ import annotations

import html as htmllib
import io
import json
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import numpy as np
import psycopg
import pytest
import sqlalchemy as sa
from matplotlib.image import imread

from codecfleet.report import PRIMARY_ANCHOR, ReportError, ReportOptions, build_report
from codecfleet.report.crops import CROP_ZOOM
from codecfleet.report.figures import data_uri_bytes
from codecfleet.report.model import NOT_MEASURED
from _report_testlib import BROKEN_REASON, CAMPAIGN, WORKER, build_report_fixture, in_ci
from db import migrate
from db import rankings
from db import report_queries as rq
from db.models import AnchorResult, ExperimentStatus
from db.session import make_engine, session_factory
from evaluation.metrics import METRICS_VERSION
from evaluation.pipeline import EVALUATOR_VERSION


def _html(fx) -> str:
    return fx.report.html_path.read_text(encoding="utf-8")


def _text(fx) -> str:
    """The page's visible text, tags removed and entities decoded."""
    return htmllib.unescape(re.sub(r"<[^>]+>", " ", _html(fx)))


def _section(fx, clip):
    (section,) = [s for s in fx.report.sections if s.clip.sha256 == clip.sha256]
    return section


# --- the folder -----------------------------------------------------------------


def _png(uri: str):
    return imread(io.BytesIO(data_uri_bytes(uri)), format="png")


def test_report_is_one_self_contained_file_with_every_image_embedded(report_fixture):
    page = _html(report_fixture)
    sources = re.findall(r'<img src="([^"]+)"', page)
    # The headline chart, then per clip two RD figures and three crops (or, without a sandbox, the figures only).
    per_clip = 5 if report_fixture.sandbox_ok else 2
    assert len(sources) == 1 + per_clip * len(report_fixture.report.sections) == 1 + per_clip * 2
    for src in sources:
        assert src.startswith("data:image/png;base64,"), src[:40]
        assert _png(src).shape[0] > 0
    assert [p.name for p in report_fixture.out_dir.iterdir()] == ["index.html"]
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_page_opens_with_the_headline_chart_and_sentence(report_fixture):
    page = _html(report_fixture)
    body = page[page.index("<body>"):]
    assert body.index('id="headline"') < body.index("<h2")
    assert body.index('<img src="data:image/png') < body.index("Scope:")
    h = report_fixture.report.headline
    best = report_fixture.report.sections[0].ranked[0]
    assert h.sentence.startswith(f"Best: candidate {best.experiment.candidate_id} ")
    overlap = best.scores["x264"].overlap
    shown = "" if overlap is None else f", overlap {overlap:.0%}"
    assert f"than x264 (BD-rate {best.primary_bd_rate:+.1f} %{shown})" in h.sentence
    assert "Spent: " in h.spent and " candidates (" in h.spent
    # Every candidate of the scope is a dot: the failed and rejected ones without a BD-rate.
    by_status = {d.candidate_id: d.status for d in h.dots}
    c = report_fixture.candidates
    assert by_status[c["broken"]] == "failed" and by_status[c["rejected"]] == "rejected"
    assert {d.candidate_id for d in h.dots if d.bd_rate is None} >= {c["broken"], c["rejected"]}


# --- a real browser ------------------------------------------------------------------

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)

IMAGE_PROBE = """<script>
window.addEventListener('load', function () {
  var out = document.createElement('pre');
  out.id = 'imgcheck';
  out.textContent = JSON.stringify(Array.from(document.images).map(function (i) {
    return {src: i.getAttribute('src'), complete: i.complete, w: i.naturalWidth, h: i.naturalHeight};
  }));
  document.body.appendChild(out);
});
</script></body>"""


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    message = "Debian's chromium is not installed (apt-get install chromium): the report is not browser-tested"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def _run_chromium(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )


def _images_seen_by_chromium(chromium: str, report_dir: Path, tmp_path: Path) -> list[dict]:
    """Copy the report, add a probe script to a copy of the page, and read what Chromium loaded."""
    copy = tmp_path / "report"
    shutil.copytree(report_dir, copy, dirs_exist_ok=True)
    page = (copy / "index.html").read_text(encoding="utf-8").replace("</body>", IMAGE_PROBE)
    (copy / "probe.html").write_text(page, encoding="utf-8")
    proc = _run_chromium(
        chromium, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", (copy / "probe.html").as_uri()
    )
    match = re.search(r'<pre id="imgcheck">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"probe output missing from the DOM dump; stderr tail: {proc.stderr[-800:]}"
    return json.loads(htmllib.unescape(match.group(1)))


def test_chromium_loads_the_page_and_every_image(report_fixture, chromium, tmp_path):
    images = _images_seen_by_chromium(chromium, report_fixture.out_dir, tmp_path)
    referenced = re.findall(r'<img src="([^"]+)"', _html(report_fixture))
    assert [i["src"] for i in images] == referenced
    broken = [i for i in images if not (i["complete"] and i["w"] > 0 and i["h"] > 0)]
    assert broken == []


def test_chromium_image_probe_notices_a_broken_image(report_fixture, chromium, tmp_path):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    page = _html(report_fixture)
    victim = re.findall(r'<img src="([^"]+)"', page)[1]
    broken = victim[:60] + "AAAA"
    (damaged / "index.html").write_text(page.replace(victim, broken), encoding="utf-8")
    images = _images_seen_by_chromium(chromium, damaged, tmp_path)
    assert [i["w"] for i in images if i["src"] == broken] == [0]


WIDTH_PROBE = """<script>
window.addEventListener('load', function () {
  var out = document.createElement('pre');
  out.id = 'widthcheck';
  var tables = Array.from(document.querySelectorAll('table')).map(function (t) {
    return {sw: t.scrollWidth, cw: t.clientWidth, right: t.getBoundingClientRect().right};
  });
  out.textContent = JSON.stringify({sw: document.documentElement.scrollWidth, cw: document.documentElement.clientWidth,
                                    tables: tables});
  document.body.appendChild(out);
});
</script></body>"""


def test_chromium_at_1280_px_has_no_horizontal_scroll_and_every_table_fits(report_fixture, chromium, tmp_path):
    page = _html(report_fixture).replace("</body>", WIDTH_PROBE)
    probe = tmp_path / "width.html"
    probe.write_text(page, encoding="utf-8")
    proc = _run_chromium(chromium, tmp_path / "profile", "--window-size=1280,1000", "--virtual-time-budget=10000",
                         "--dump-dom", probe.as_uri())
    match = re.search(r'<pre id="widthcheck">(.*?)</pre>', proc.stdout, re.S)
    assert match, proc.stderr[-800:]
    seen = json.loads(htmllib.unescape(match.group(1)))
    assert seen["cw"] > 1200, seen  # the window really was 1280 px wide
    assert seen["sw"] <= seen["cw"], seen
    assert len(seen["tables"]) >= 5
    for t in seen["tables"]:
        assert t["sw"] <= t["cw"] and t["right"] <= seen["cw"], (t, seen["cw"])


def test_chromium_screenshot_of_the_report_is_a_drawn_page(report_fixture, chromium, tmp_path):
    shot = tmp_path / "report.png"
    _run_chromium(
        chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2000",
        report_fixture.report.html_path.as_uri(),
    )
    pixels = imread(shot)
    assert pixels.shape[:2] == (2000, 1280)
    # A blank or error page is (nearly) one colour; the report has text, tables and plots.
    assert float(np.std(pixels[..., :3])) > 0.05


# --- the content -------------------------------------------------------------------


def test_leaderboard_order_and_bd_rates_are_the_stored_ones(report_fixture):
    section = _section(report_fixture, report_fixture.clip1)
    engine = make_engine(report_fixture.url)
    try:
        with session_factory(engine)() as session:
            stored = rankings.leaderboard(session, clip_sha256=report_fixture.clip1.sha256, anchor=PRIMARY_ANCHOR)
    finally:
        engine.dispose()
    assert [r.experiment.candidate_id for r in section.ranked] == [r.candidate_id for r in stored]
    assert [r.primary_bd_rate for r in section.ranked] == [r.bd_rate for r in stored]
    assert len(section.ranked) == 3  # root, mutated, inter: the broken and rejected ones are not ranked
    best = section.ranked[0]
    assert f"{best.primary_bd_rate:+.1f}" in _text(report_fixture)


def test_anchor_not_asked_for_is_shown_as_not_measured_with_the_reason(report_fixture):
    section = _section(report_fixture, report_fixture.clip2)
    (row,) = section.ranked
    assert set(row.scores) == {"x264"}
    text = " ".join(_text(report_fixture).split())
    assert f"{NOT_MEASURED} the experiment did not ask for x265" in text
    assert f"{NOT_MEASURED} the experiment did not ask for svtav1" in text


def test_anchor_curves_are_read_from_the_database_where_stored(report_fixture):
    section = _section(report_fixture, report_fixture.clip1)
    engine = make_engine(report_fixture.url)
    try:
        with session_factory(engine)() as session:
            for codec in ("x264", "x265", "svtav1"):
                rows = session.scalars(
                    sa.select(AnchorResult).where(
                        AnchorResult.clip_sha256 == report_fixture.clip1.sha256, AnchorResult.codec == codec
                    )
                ).all()
                curve = section.anchors[codec]
                assert curve.origin == "database"
                assert sorted((p.crf, p.kbps, p.psnr_y) for p in curve.points) == sorted(
                    (r.crf, r.kbps, r.psnr_y) for r in rows
                )
    finally:
        engine.dispose()


def test_anchor_curves_missing_from_the_database_are_measured_and_labelled_so(report_fixture):
    section = _section(report_fixture, report_fixture.clip2)
    for codec in ("x264", "x265", "svtav1"):
        curve = section.anchors[codec]
        assert curve.origin.startswith("computed by this report")
        assert len(curve.points) >= 4
        assert "not stored" in curve.note


def test_crops_show_source_candidate_and_x264_zoomed_and_labelled(report_fixture):
    section = _section(report_fixture, report_fixture.clip1)
    if not report_fixture.sandbox_ok:
        if in_ci():
            pytest.fail("strict sandbox unavailable under CI: the crops were not made")
        assert "sandbox is unavailable" in section.crops_note
        return
    crops = section.crops
    assert crops is not None, section.crops_note
    x, y, w, h = crops.box
    assert (w, h) == (128, 96)  # the clip is 160x96: a 128-wide window, the full height
    titles = [p.title for p in crops.panels]
    assert titles[:2] == ["source", f"candidate {section.ranked[0].experiment.candidate_id}"]
    assert re.fullmatch(r"x264 CRF \d+", titles[2])
    for panel in crops.panels:
        assert _png(panel.file).shape[:2] == (h * CROP_ZOOM, w * CROP_ZOOM)
    chosen = [p for p in section.ranked[0].points if f"{p.kbps:.1f} kbps" in crops.panels[1].caption]
    assert len(chosen) == 1 and f"{chosen[0].psnr_y:.2f} dB (stored)" in crops.panels[1].caption
    assert re.search(r"this frame \d+\.\d\d dB", crops.panels[2].caption)
    # Re-decoding the stored bitstream in the sandbox reproduced the stored measurement.
    assert crops.notes == ()
    source = _png(crops.panels[0].file)[..., :3]
    frame = report_fixture.clip1.frames[crops.frame_index, y : y + h, x : x + w]
    assert np.array_equal((source[::CROP_ZOOM, ::CROP_ZOOM] * 255).round().astype(np.uint8), frame)


def test_lineage_walks_from_the_best_candidate_to_its_root_with_diffs_and_numbers(report_fixture):
    section = _section(report_fixture, report_fixture.clip1)
    c = report_fixture.candidates
    steps = section.lineage
    assert [s.candidate.id for s in steps] == [c["inter"], c["mutated"], c["root"]]
    assert section.ranked[0].experiment.candidate_id == c["inter"]
    assert [s.parent_id for s in steps] == [c["mutated"], c["root"], None]
    mutated = steps[1]
    assert "-MIN_SCALE = 0.25\n+MIN_SCALE = 0.125\n" in mutated.diff
    assert steps[2].diff is None
    assert all(s.best is not None and len(s.best.points) == 4 for s in steps)
    text = _text(report_fixture)
    for s in steps:
        assert f"q=0.2: {s.best.points[0].kbps:.1f} kbps / {s.best.points[0].psnr_y:.2f} dB" in text


def test_failures_are_counted_by_status_and_stage_with_example_reasons(report_fixture):
    groups = {(g.status, g.failure_stage): g for g in report_fixture.report.failures}
    assert set(groups) == {(ExperimentStatus.FAILED, "decode"), (ExperimentStatus.REJECTED, "sanitize")}
    failed = groups[(ExperimentStatus.FAILED, "decode")]
    assert failed.count == 1
    ((eid, reason),) = failed.examples
    assert eid == report_fixture.experiments["broken"] and BROKEN_REASON in reason
    rejected = groups[(ExperimentStatus.REJECTED, "sanitize")]
    assert "os" in rejected.examples[0][1]
    assert BROKEN_REASON in _text(report_fixture)


def test_provenance_names_versions_clip_hash_worker_device_and_isolation(report_fixture):
    text = _text(report_fixture)
    section = report_fixture.report.sections[0]
    for needle in (EVALUATOR_VERSION, METRICS_VERSION, WORKER, "none (in-process, trusted code only)"):
        assert needle in text
    assert report_fixture.clip1.sha256 in _html(report_fixture)
    shown = {e.id for e, _ in report_fixture.report.provenance}
    assert {r.experiment.id for r in section.ranked} <= shown
    assert report_fixture.experiments["broken"] in shown


# --- scopes ----------------------------------------------------------------------


def test_campaign_scope_leaves_out_other_campaigns(report_fixture, tmp_path):
    report = build_report(
        report_fixture.url, tmp_path / "r", campaign=CAMPAIGN, options=ReportOptions(crops=False, compute_anchors=False)
    )
    assert report.scope.startswith(f"campaign {CAMPAIGN}")
    assert [s.clip.sha256 for s in report.sections] == [report_fixture.clip1.sha256]
    assert report.status_counts == {ExperimentStatus.SUCCEEDED: 3, ExperimentStatus.FAILED: 1, ExperimentStatus.REJECTED: 1}


def test_experiment_scope_of_a_failed_experiment_shows_its_failure_only(report_fixture, tmp_path):
    eid = report_fixture.experiments["broken"]
    report = build_report(report_fixture.url, tmp_path / "r", experiment_id=eid, options=ReportOptions(crops=False))
    assert report.sections == []
    assert [(g.status, g.failure_stage, g.count) for g in report.failures] == [(ExperimentStatus.FAILED, "decode", 1)]
    assert "No succeeded experiment in scope" in report.html_path.read_text(encoding="utf-8")


def test_unknown_campaign_or_experiment_is_a_report_error(report_fixture, tmp_path):
    with pytest.raises(ReportError, match="no campaign named"):
        build_report(report_fixture.url, tmp_path / "a", campaign="no-such-campaign")
    with pytest.raises(ReportError, match="experiment 999999 does not exist"):
        build_report(report_fixture.url, tmp_path / "b", experiment_id=999999)


def test_missing_database_file_is_a_report_error_and_is_not_created(tmp_path):
    path = tmp_path / "nothing-here.db"
    with pytest.raises(ReportError, match="no database at"):
        build_report(f"sqlite:///{path}", tmp_path / "r")
    assert not path.exists()


def test_report_queries_find_campaign_by_name_or_id(report_fixture):
    engine = make_engine(report_fixture.url)
    try:
        with session_factory(engine)() as session:
            by_name = rq.find_campaign(session, CAMPAIGN)
            assert by_name is not None and rq.find_campaign(session, str(by_name.id)) == by_name
            assert rq.find_campaign(session, "absent") is None
    finally:
        engine.dispose()


def test_empty_database_gives_a_report_that_says_there_is_nothing_yet(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    migrate.upgrade(url)
    report = build_report(url, tmp_path / "r")
    assert report.sections == [] and report.failures == [] and report.status_counts == {}
    page = report.html_path.read_text(encoding="utf-8")
    assert "Experiments: none." in page and "No succeeded experiment in scope yet" in page


@pytest.mark.postgres
def test_report_reads_the_same_results_from_postgres(report_fixture, tmp_path):
    """The whole flow once more on the real Postgres: same ranking, lineage and failures."""
    name = f"cf_report_{secrets.token_hex(6)}"
    try:
        _pg_admin(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        if in_ci():
            pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is unreachable under CI: {exc}")
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is unreachable: {exc}")
    try:
        pg = build_report_fixture(tmp_path, f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def shape(fx):
        sections = [
            (
                s.clip.sha256,
                [(r.rank, r.experiment.candidate_id - fx.candidates["root"]) for r in s.ranked],
                [st.candidate.id - fx.candidates["root"] for st in s.lineage],
                {c: (a.origin or "").split(" (")[0] for c, a in s.anchors.items()},
                s.crops is not None,
            )
            for s in fx.report.sections
        ]
        failures = [(g.status, g.failure_stage, g.count) for g in fx.report.failures]
        return sections, failures, fx.report.status_counts

    assert shape(pg) == shape(report_fixture)


def _pg_admin(sql: str) -> None:
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5", autocommit=True) as conn:
        conn.execute(sql)
