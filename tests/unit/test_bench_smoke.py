"""The benchmark at a small size: the engine and the hand-written baseline decide the same (no timing)."""

from __future__ import annotations

from bench.project import select_journeys
from bench.run import run_case


def test_bench_project_and_baseline_agree_on_every_count(tmp_path):
    result = run_case(2000, 5, tmp_path, echo=lambda message: None)

    assert result.mismatches == []
    full, incremental = result.runs["full"], result.runs["incremental"]
    assert sum(full["project"].journeys["enrolled"].values()) > 0  # the comparison is not vacuous
    assert sum(incremental["project"].journeys["actions_due"].values()) > 0
    assert set(full["project"].membership) <= set(full["baseline"].membership)


def test_bench_variants_share_segments_and_stay_unique():
    specs = select_journeys(100)

    assert len({s.id for s in specs}) == 100
    assert {s.base for s in specs} == {s.base for s in select_journeys(20)}
    assert select_journeys(10) == specs[:10]
