"""The asset graph: dbt sources → staging → generated rule models → journey state → analyst relations.

Specs come from the dbt manifest (dagster-dbt's translator reads it; nothing shells out to dbt). The
engine's two steps are assets of their own, and the dbt sources in schema `journey_state` are drawn
as what they are: tables those steps write. Two edges are left out on purpose because they cross
from one run to the next (a cycle within a run otherwise): `journey_state.run_context` (T, set by
the engine before the build) and `journey_state.attributes` (written by actions, read by the next
run's features).
"""

from __future__ import annotations

from dataclasses import dataclass

from dagster import AssetCheckSpec, AssetDep, AssetKey, AssetSpec
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings
from dagster_dbt.asset_utils import build_dbt_specs

from journeys.engine.build import FULL_SCAN_TAG  # dbt tests the run skips

TRANSITIONS = AssetKey(["journey_state", "transitions"])
ACTIONS = AssetKey(["journey_state", "actions"])
BREAKER_CHECK = "segment_size_breaker"

# Which engine step writes each journey_state table the dbt project reads (None: an edge to the next run).
STATE_TABLE_WRITER: dict[str, AssetKey | None] = {
    "runs": TRANSITIONS, "journeys": TRANSITIONS, "journey_steps": TRANSITIONS, "enrollments": TRANSITIONS,
    "transitions": TRANSITIONS, "membership": TRANSITIONS, "tracked_segments": TRANSITIONS,
    "actions": ACTIONS, "tasks": ACTIONS, "email_outbox": ACTIONS,
    "run_context": None, "attributes": None,
}  # fmt: skip

# dbt model folder → Dagster group, in pipeline order.
GROUPS = {
    "staging": "staging",
    "intermediate": "generated",
    "generated": "generated",
    "marts": "analyst_relations",
}


@dataclass(frozen=True)
class ModelInfo:
    """What the run needs to know about one dbt model asset."""

    name: str
    key: AssetKey
    relation: str  # "schema"."alias", counted for row-count metadata
    group: str


@dataclass(frozen=True)
class Lineage:
    sources: list[AssetSpec]  # external: loaded by `journeys load` or a team's own pipelines
    models: list[AssetSpec]  # materialized by the run, through dbt
    engine: list[AssetSpec]  # journey_state/transitions and journey_state/actions
    checks: list[AssetCheckSpec]  # dbt tests, plus the breaker
    model_info: dict[str, ModelInfo]  # by dbt model name
    test_checks: dict[str, AssetCheckSpec]  # by dbt test name (and by unique id)
    data_checks: list[AssetCheckSpec]  # full-scan dbt tests: the daily journeys_data_checks job, not the run


# State tables the generated models read as of the previous run (the match models evaluate only the
# active enrollments' entities): an edge to the next run, like run_context, not one within the run.
PREVIOUS_RUN_READS = {"enrollments"}


def _remap(key: AssetKey, group: str) -> AssetKey | None:
    if len(key.path) == 2 and key.path[0] == "journey_state":
        if group == "generated" and key.path[1] in PREVIOUS_RUN_READS:
            return None
        return STATE_TABLE_WRITER.get(key.path[1])
    return key


def _remapped_deps(spec: AssetSpec, group: str) -> list[AssetDep]:
    keys: list[AssetKey] = []
    for dep in spec.deps:
        key = _remap(dep.asset_key, group)
        if key is not None and key not in keys:
            keys.append(key)
    return [AssetDep(k) for k in keys]


def build_lineage(manifest: dict) -> Lineage:
    """Asset and check specs for every dbt model, test and raw source, plus the engine's assets."""
    translator = DagsterDbtTranslator(DagsterDbtTranslatorSettings(enable_asset_checks=True))
    dbt_specs, dbt_checks = build_dbt_specs(
        translator=translator,
        manifest=manifest,
        select="fqn:*",
        exclude="",
        selector="",
        io_manager_key=None,
        project=None,
    )
    nodes = manifest["nodes"]
    by_key = {}
    for uid, node in nodes.items():
        if node["resource_type"] == "model":
            by_key[translator.get_asset_spec(manifest, uid, None).key] = node

    models, info = [], {}
    for spec in sorted(dbt_specs, key=lambda s: s.key.to_user_string()):
        node = by_key[spec.key]
        folder = node["fqn"][1] if len(node["fqn"]) > 2 else "generated"
        group = GROUPS.get(folder, "generated")
        models.append(spec.replace_attributes(deps=_remapped_deps(spec, group), group_name=group, skippable=True))
        info[node["name"]] = ModelInfo(node["name"], spec.key, f'"{node["schema"]}"."{node["alias"]}"', group)

    sources = []
    for uid, source in sorted(manifest["sources"].items()):
        if source["source_name"] == "journey_state":
            continue  # drawn as the engine's assets
        spec = translator.get_asset_spec(manifest, uid, None)
        sources.append(
            spec.replace_attributes(
                group_name="sources", description=source.get("description") or spec.description
            )
        )

    generated_keys = [
        i.key for i in info.values() if i.group == "generated" and i.name.startswith(("segment_", "journey_"))
    ]
    engine = [
        AssetSpec(
            TRANSITIONS, group_name="journey_state", kinds={"python", "duckdb"}, skippable=True,
            deps=generated_keys,
            description="The diff: who entered each journey's segments since the previous run; enrollments, "
                        "suppressions, unenrollments, goals and completions, committed in one transaction "
                        "(journey_state.enrollments, .transitions, .membership, pending rows of .actions).",
        ),
        AssetSpec(
            ACTIONS, group_name="journey_state", kinds={"python", "duckdb"}, skippable=True,
            deps=[TRANSITIONS],
            description="Due actions executed exactly once (journey_state.actions ledger, .tasks, .attributes, "
                        ".email_outbox or SMTP). Journeys held by the segment-size breaker keep theirs pending.",
        ),
    ]  # fmt: skip

    breaker = AssetCheckSpec(
        BREAKER_CHECK, asset=TRANSITIONS, blocking=True,
        description="Fails, and holds the journey's actions, when a journey's entering set jumps beyond the bounds "
                    "(JOURNEYS_BREAKER_MAX_FACTOR x the previous run, JOURNEYS_BREAKER_MAX_SHARE of the entity table, "
                    "at least JOURNEYS_BREAKER_MIN_ENTERING). Acknowledge with journey@run_id (docs/orchestration.md).",
    )  # fmt: skip
    test_checks, tick_checks, data_checks = {}, [], []
    for check in dbt_checks:
        test_checks[check.name] = check
        unique_id = check.metadata.get("dagster_dbt/unique_id")
        if unique_id:
            test_checks[unique_id] = check
        full_scan = FULL_SCAN_TAG in (nodes.get(unique_id or "", {}).get("tags") or [])
        (data_checks if full_scan else tick_checks).append(check)
    return Lineage(sources, models, engine, [*tick_checks, breaker], info, test_checks, data_checks)
