"""Shared harness of tests/unit/test_validation*.py: a valid base project (the sample rules and the staging
contracts) built once, a fresh copy of it per test, bad fixture files added to the copy, and the exact
problems load_and_validate reports for it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from journeys.errors import RuleError
from journeys.rules.validate import load_and_validate

REPO = Path(__file__).resolve().parents[1]


def make_base_project(root: Path, *, with_settings: bool = False) -> Path:
    """The sample rules (and, `with_settings`, the sample journeys.yml) and the staging contracts at `root`."""
    shutil.copytree(REPO / "sql_rules", root / "sql_rules")
    if with_settings:
        shutil.copy(REPO / "journeys.yml", root / "journeys.yml")
    staging = root / "dbt_project" / "models" / "staging"
    staging.mkdir(parents=True)
    for contract in (REPO / "dbt_project" / "models" / "staging").glob("stg_*.yml"):
        shutil.copy(contract, staging)
    return root


@pytest.fixture
def project(base_project: Path, tmp_path: Path) -> Path:
    """A fresh copy of the module's `base_project` fixture."""
    root = tmp_path / "project"
    shutil.copytree(base_project, root)
    return root


def add_new_rule(source: Path, target: Path, relative: str) -> None:
    """Copy a bad fixture file to `target`, which must not be a sample rule (`relative` names it in the failure)."""
    assert not target.exists(), f"{relative} would replace a sample rule"
    shutil.copy(source, target)


def problems_of(project: Path) -> list[str]:
    """The problems validation reports for the project, as `path:line:col: field: message` lines (it must fail)."""
    with pytest.raises(RuleError) as caught:
        load_and_validate(project)
    return [str(p) for p in caught.value.problems]
