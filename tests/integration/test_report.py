"""`journeys report`: pages written from a real demo database, numbers checked against independent SQL."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from rich.console import Console

from journeys.errors import JourneysError
from journeys.progress import progress
from journeys.trust.report import build_report, newcombe_interval, wilson_interval
from tests.conftest import copy_project


def demo_database(root: Path) -> Path:
    """A project copy and a database filled by `journeys demo` (six runs over three simulated days)."""
    project = copy_project(root / "p")
    db = project / "warehouse" / "report.duckdb"
    done = subprocess.run([sys.executable, "-m", "journeys.cli", "--project-dir", str(project), "--db", str(db),
                           "demo", "--users", "300", "--days", "3"], check=False, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return db


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    return demo_database(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def report(db, tmp_path_factory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("out")
    return out, build_report(db, out)


def query(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def figure(html: str, label: str) -> str:
    """The value of one key figure on a journey page."""
    found = re.search(rf"<dt>{re.escape(label)}</dt><dd>([^<]*)</dd>", html)
    assert found, f"no key figure {label!r}"
    return found.group(1)


def table_row(html: str, first_cell: str) -> list[str]:
    """The cells of the table row whose row header is first_cell (the first such row)."""
    found = re.search(rf"<tr><th scope=\"row\" class=\"text\">{re.escape(first_cell)}</th>(.*?)</tr>", html)
    assert found, f"no table row {first_cell!r}"
    return re.findall(r"<td[^>]*>([^<]*)</td>", found.group(1))


def test_report_writes_the_index_first_and_a_page_per_journey(db, report):
    out, pages = report
    assert pages[0] == out / "index.html"
    index = pages[0].read_text()
    enrolled = [j for (j,) in query(db, "select distinct journey_id from journey_enrollments order by 1")]
    assert enrolled, "the demo enrolled nobody"
    for journey in enrolled:
        assert out / f"{journey}.html" in pages
        assert (out / f"{journey}.html").stat().st_size > 0
        assert f'href="{journey}.html"' in index
    known = [j for (j,) in query(db, "select journey_id from journey_state.journeys")]
    assert {p.stem for p in pages[1:]} == set(known) | set(enrolled)


def test_each_page_shows_the_journeys_numbers_from_the_database(db, report):
    out, _ = report
    rows = query(db, """
        select journey_id, count(*), count(*) filter (where status = 'active'), count(goal_achieved_at),
            count(*) filter (where variant = 'treated'), count(goal_achieved_at) filter (where variant = 'treated'),
            count(*) filter (where variant = 'holdout'), count(goal_achieved_at) filter (where variant = 'holdout')
        from journey_enrollments group by 1""")  # fmt: skip
    index = (out / "index.html").read_text()
    for journey, enrolled, active, goal, treated, treated_goal, holdout, holdout_goal in rows:
        html = (out / f"{journey}.html").read_text()
        assert figure(html, "Enrolled") == f"{enrolled:,}"
        assert figure(html, "Active") == f"{active:,}"
        assert figure(html, "Goal achieved") == f"{goal:,}"
        assert figure(html, "Goal rate (treated)") == f"{treated_goal / treated:.1%}"
        if holdout:
            assert figure(html, "Goal rate (holdout)") == f"{holdout_goal / holdout:.1%}"
        assert table_row(index, journey)[2] == f"{enrolled:,}"
        for step_id, reached, done in query(db, "select step_id, reached, done from journey_step_funnel "
                                                "where journey_id = ? and kind = 'action'", [journey]):  # fmt: skip
            cells = table_row(html, step_id)
            assert cells[2:4] == [f"{reached:,}", f"{done:,}"], (journey, step_id)


def test_lift_and_its_interval_are_printed_for_a_journey_with_a_holdout(db, report):
    out, _ = report
    rows = query(db, "select journey_id, count(*) filter (where variant = 'treated'), count(goal_achieved_at) filter (where variant = 'treated'), "
                     "count(*) filter (where variant = 'holdout'), count(goal_achieved_at) filter (where variant = 'holdout') "
                     "from journey_enrollments group by 1 having count(*) filter (where variant = 'holdout') > 0 "
                     "and count(*) filter (where variant = 'treated') > 0")  # fmt: skip
    assert rows, "the demo's dashboards_intro has a 10% holdout"
    for journey, nt, gt, nh, gh in rows:
        html = (out / f"{journey}.html").read_text()
        low, high = newcombe_interval(gt, nt, gh, nh)
        assert table_row(html, "all treated")[-2:] == [f"{(gt / nt - gh / nh) * 100:+.1f} pp", f"{low * 100:+.1f} to {high * 100:+.1f} pp"]
        for path, lift in query(db, "select split_path, lift from journey_outcomes where journey_id = ? and variant = 'treated' "
                                    "and split_path is not null", [journey]):  # fmt: skip
            assert table_row(html, f"path {path}")[-2] == f"{lift * 100:+.1f} pp"
        assert 'id="chart-lift"' in html and 'id="chart-split"' in html


def test_a_journey_without_holdout_or_split_gets_a_sentence_not_an_empty_chart(db, report):
    out, _ = report
    plain = query(db, "select journey_id from journey_enrollments group by 1 "
                      "having count(*) filter (where variant = 'holdout') = 0 and count(split_path) = 0")  # fmt: skip
    assert plain
    for (journey,) in plain:
        html = (out / f"{journey}.html").read_text()
        assert "This journey has no holdout group" in html and 'id="chart-lift"' not in html
        assert "This journey has no split step" in html and 'id="chart-split"' not in html


def test_a_journey_without_enrollments_gets_a_page_that_says_so(db, tmp_path):
    copy = tmp_path / "copy.duckdb"
    shutil.copy(db, copy)
    (journey,) = query(copy, "select journey_id from journey_enrollments group by 1 order by count(*) desc limit 1")[0]
    con = duckdb.connect(str(copy))
    for table in ("actions", "transitions", "tasks", "email_outbox", "enrollments"):
        con.execute(f"delete from journey_state.{table} where journey_id = ?", [journey])
    con.close()
    pages = build_report(copy, tmp_path / "out")
    html = (tmp_path / "out" / f"{journey}.html").read_text()
    assert tmp_path / "out" / f"{journey}.html" in pages
    assert "No entity has enrolled in this journey yet" in html
    assert figure(html, "Enrolled") == "0"
    assert 'class="chart"' not in html


def test_pages_load_no_script_from_the_network(report):
    out, pages = report
    for page in pages:
        html = page.read_text()
        sources = re.findall(r"<script[^>]*\bsrc=\"([^\"]*)\"", html)
        assert sources == ["assets/plotly-" + sources[0].split("assets/plotly-")[1]], page  # exactly one, relative
        assert (out / sources[0]).stat().st_size > 1_000_000  # plotly.js itself, written once
        assert not re.search(r"(src|href)=\"(https?:)?//", html), page
    assert len(list((out / "assets").iterdir())) == 1


def test_report_reads_the_database_without_changing_it(db, tmp_path):
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    build_report(db, tmp_path / "again")
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert not db.with_name(db.name + ".wal").exists()


def test_report_on_a_missing_database_says_what_to_do(tmp_path):
    with pytest.raises(JourneysError, match="does not exist; run `journeys run`"):
        build_report(tmp_path / "nothing.duckdb", tmp_path / "out")


# Published values: Newcombe (1998), Statistics in Medicine 17:857-872 (Wilson) and 17:873-890 (method 10).
@pytest.mark.parametrize("successes, n, expected", [(81, 263, (0.2553, 0.3662)), (15, 148, (0.0624, 0.1605)),
                                                    (0, 20, (0.0, 0.1611)), (1, 29, (0.0061, 0.1718))])  # fmt: skip
def test_wilson_interval_matches_newcombes_examples(successes, n, expected):
    assert tuple(round(x, 4) for x in wilson_interval(successes, n)) == expected


@pytest.mark.parametrize("g1, n1, g2, n2, expected", [(56, 70, 48, 80, (0.0524, 0.3339)), (9, 10, 3, 10, (0.1705, 0.8090)),
                                                      (6, 7, 2, 7, (0.0582, 0.8062)), (5, 56, 0, 29, (-0.0381, 0.1926)),
                                                      (0, 10, 0, 20, (-0.1611, 0.2775)), (10, 10, 0, 20, (0.6791, 1.0))])  # fmt: skip
def test_difference_interval_matches_newcombes_method_10(g1, n1, g2, n2, expected):
    assert tuple(round(x, 4) for x in newcombe_interval(g1, n1, g2, n2)) == expected


def test_progress_is_silent_when_not_a_terminal():
    stream = io.StringIO()
    with progress(3, "runs", console=Console(file=stream)) as advance:
        for _ in range(3):
            advance()
        advance(description="done")
    assert stream.getvalue() == ""


def test_progress_draws_a_bar_on_a_terminal():
    stream = io.StringIO()
    with progress(2, "runs", console=Console(file=stream, force_terminal=True, width=80)) as advance:
        advance(description="run 1/2")
        advance()
    assert "run 1/2" in stream.getvalue() or "2/2" in stream.getvalue()
