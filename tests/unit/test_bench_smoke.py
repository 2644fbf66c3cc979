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


def test_bench_mature_rules_use_every_section_9_construct_and_validate(tmp_path):
    from bench.project import CONSTRUCTS, mature_constructs, write_project
    from journeys.rules.validate import load_and_validate

    used = {c for constructs in mature_constructs(select_journeys(20)).values() for c in constructs}
    assert used == set(CONSTRUCTS)
    for n in (20, 100):  # the variants above 20 move their knobs in the mature documents too
        rules = load_and_validate(write_project(tmp_path / f"mature-{n}", select_journeys(n), mature=True))
        assert len(rules.journeys) == n
    settings = rules.settings
    assert settings.frequency_caps and settings.send_window and settings.max_sends_per_run and settings.webhooks.allow


def test_bench_mature_pair_runs_and_passes_its_checks(tmp_path):
    from bench.pair import REQUIRED_EVIDENCE, run_pair, summarize_pair

    result = run_pair(2000, 20, tmp_path, echo=lambda message: None)

    assert result.plain.mismatches == []  # the plain rules still agree with the hand-written baseline
    assert result.problems == []  # membership and entries as plain, enrollments, actions, each construct at work
    assert all(result.evidence["incremental"][what] > 0 for what in REQUIRED_EVIDENCE)
    summary = summarize_pair(result)
    assert summary["checks"] == "OK"
    for label in ("full", "incremental"):
        assert summary["ratios"][label]["project (no execution)"] > 0  # figures exist; no timing asserted
