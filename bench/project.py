"""The benchmark's rule set: the 20 journeys of bench/rules/, or variants of them, in a scratch project folder.

A variant of a journey changes only thresholds and waits (the `KNOBS` below): it keeps the entry segments
and the event features of its base journey, as a real team's variants do. Selecting n journeys takes the
first n base journeys (n <= 20), then variant 1 of every base, variant 2, ... (at most 100).

The *mature* rule set (`write_project(..., mature=True)`, `python -m bench.run --mature`) is the same 20
journeys with the SPEC §9 constructs a mature team adds: bench/rules/mature/journeys/<id>.yml replaces
the plain journey of the same id (13 of the 20; the others are used as they are), and
bench/rules/mature/journeys.yml adds frequency caps, a send window, per-run limits and the webhook
allowlist. Segments and templates are the plain ones, so segment membership is the same in both.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[1]
RULES = Path(__file__).resolve().parent / "rules" / "sql_rules"
MATURE = Path(__file__).resolve().parent / "rules" / "mature"  # overlay: journeys/<id>.yml and journeys.yml

# Base journeys in selection order: users and accounts alternate, so any prefix mixes both.
BASE_JOURNEYS = (
    "onboarding_drip", "account_health", "trial_conversion", "renewal", "dashboards_intro",
    "reengagement", "dunning", "api_upsell", "expansion", "power_user_advocacy",
    "periodic_checkin", "report_tips", "nps_followup", "export_power", "trial_ending",
    "feature_discovery", "onboarding_playbook", "champion_program", "integration_health", "csm_intro",
)  # fmt: skip

# journey -> knob -> (path in the YAML document, values of variants 0..4); variant 0 is the file as written.
KNOBS: dict[str, dict[str, tuple[str, list]]] = {
    "onboarding_drip": {"goal_reports": ("goal.criteria.count.at_least", [3, 2, 4, 5, 6]),
                        "first_wait": ("actions.1.wait", ["2d", "1d", "3d", "4d", "5d"])},
    "account_health": {"goal_health": ("goal.criteria.any.1.value", [80, 75, 85, 90, 70]),
                       "wait": ("actions.3.wait", ["1w", "5d", "10d", "2w", "3d"])},
    "trial_conversion": {"if_logins": ("actions.2.if.count.at_least", [2, 1, 3, 4, 5])},
    "renewal": {"cooldown": ("entry.reenrollment.cooldown", ["300d", "200d", "250d", "330d", "360d"]),
                "wait": ("actions.1.wait", ["14d", "7d", "10d", "21d", "28d"])},
    "dashboards_intro": {"goal_uses": ("goal.criteria.count.at_least", [1, 2, 3, 4, 5])},
    "reengagement": {"goal_logins": ("goal.criteria.count.at_least", [1, 2, 3, 4, 5]),
                     "cooldown": ("entry.reenrollment.cooldown", ["30d", "14d", "21d", "45d", "60d"])},
    "dunning": {"wait": ("actions.1.wait", ["3d", "1d", "2d", "5d", "7d"])},
    "api_upsell": {"max_mrr": ("exit.blacklist.any.0.value", [5000, 3000, 4000, 8000, 10000])},
    "expansion": {"min_health": ("exit.blacklist.value", [40, 30, 35, 45, 50])},
    "power_user_advocacy": {"goal_invites": ("goal.criteria.count.at_least", [1, 2, 3, 4, 5])},
    "periodic_checkin": {"wait": ("actions.2.wait", ["30d", "14d", "21d", "45d", "60d"])},
    "report_tips": {"cooldown": ("entry.reenrollment.cooldown", ["14d", "7d", "21d", "30d", "10d"])},
    "nps_followup": {"goal_nps": ("goal.criteria.value", [30, 20, 40, 50, 10])},
    "export_power": {"goal_shares": ("goal.criteria.count.at_least", [1, 2, 3, 4, 5])},
    "trial_ending": {"goal_seats": ("goal.criteria.subscription.all.2.value", [0, 5, 10, 20, 30])},
    "feature_discovery": {"goal_alerts": ("goal.criteria.count.at_least", [1, 2, 3, 4, 5])},
    "onboarding_playbook": {"wait": ("actions.1.wait", ["1w", "5d", "10d", "2w", "3d"])},
    "champion_program": {"industry": ("exit.blacklist.value", ["education", "retail", "fintech", "healthcare", "manufacturing"])},
    "integration_health": {"goal_syncs": ("goal.criteria.count.at_least", [5, 3, 10, 20, 1])},
    "csm_intro": {"min_mrr": ("actions.0.if.value", [1000, 500, 2000, 3000, 800])},
}  # fmt: skip
VARIANTS = 5
# Where a mature journey moved a knob (same values, another place in the document).
MATURE_KNOB_PATHS: dict[str, dict[str, str]] = {
    "onboarding_drip": {"first_wait": "actions.1.wait_until.timeout"},  # wait 2d + if -> wait_until, timeout 2d
    "renewal": {"wait": "actions.3.wait"},  # wait_until_date and a webhook come first
}


@dataclass(frozen=True)
class JourneySpec:
    """One journey of the benchmark: its id, its base journey, and the knob values it uses."""

    id: str
    base: str
    variant: int
    params: dict[str, Any] = field(hash=False)
    unenroll_from: tuple[str, ...] = ()


def select_journeys(n: int) -> list[JourneySpec]:
    if not 1 <= n <= len(BASE_JOURNEYS) * VARIANTS:
        raise ValueError(f"journeys must be between 1 and {len(BASE_JOURNEYS) * VARIANTS}, got {n}")
    picks = [(base, v) for v in range(VARIANTS) for base in BASE_JOURNEYS][:n]
    ids = {_journey_id(b, v) for b, v in picks}
    specs = []
    for base, v in picks:
        doc = _load(RULES / "journeys" / f"{base}.yml")
        unenroll = tuple(j for j in ((doc.get("exit") or {}).get("unenroll_from") or []) if j in ids)
        params = {name: values[v] for name, (_, values) in KNOBS[base].items()}
        specs.append(JourneySpec(_journey_id(base, v), base, v, params, unenroll))
    return specs


def _journey_id(base: str, variant: int) -> str:
    return base if variant == 0 else f"{base}_v{variant}"


def journey_file(base: str, mature: bool = False) -> Path:
    """The rule file of a base journey: its mature overlay when there is one and `mature`, else the plain one."""
    overlay = MATURE / "journeys" / f"{base}.yml"
    return overlay if mature and overlay.exists() else RULES / "journeys" / f"{base}.yml"


def knob_path(base: str, knob: str, mature: bool = False) -> str:
    path = KNOBS[base][knob][0]
    return MATURE_KNOB_PATHS.get(base, {}).get(knob, path) if mature else path


def write_project(root: Path, specs: list[JourneySpec], mature: bool = False) -> Path:
    """A project folder: the repo's dbt_project/ (without generated models or target/) and the selected rules;
    `mature`: the journeys' §9 overlays (bench/rules/mature/) and its journeys.yml."""
    root = Path(root)
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(REPO / "dbt_project", root / "dbt_project", ignore=shutil.ignore_patterns("target", "logs", "generated"))
    rules = root / "sql_rules"
    shutil.copytree(RULES / "templates", rules / "templates")
    (rules / "journeys").mkdir(parents=True)
    (rules / "segments").mkdir(parents=True)
    wanted: set[str] = set()
    for spec in specs:
        source = journey_file(spec.base, mature)
        doc = _load(source)
        for name, (_, values) in KNOBS[spec.base].items():
            path = knob_path(spec.base, name, mature)
            if _get(doc, path) != values[0]:
                raise ValueError(f"{source.relative_to(REPO)}: {path} is {_get(doc, path)!r}, KNOBS say {values[0]!r}")
            _set(doc, path, spec.params[name])
        doc["journey"] = spec.id
        if spec.variant:
            doc["name"] = f"{doc['name']} (variant {spec.variant})"
        if doc.get("exit") and "unenroll_from" in doc["exit"]:
            if spec.unenroll_from:
                doc["exit"]["unenroll_from"] = list(spec.unenroll_from)
            else:
                del doc["exit"]["unenroll_from"]
        wanted |= _segments_used(doc)
        (rules / "journeys" / f"{spec.id}.yml").write_text(_dump(doc))
    # segments the journeys use, and the segments those segments use
    pending = set(wanted)
    while pending:
        seg = pending.pop()
        path = RULES / "segments" / f"{seg}.yml"
        if path.exists():
            more = _segments_used({"criteria": _load(path)["criteria"]}) - wanted
            wanted |= more
            pending |= more
    for seg in sorted(wanted):
        for path in RULES.glob(f"segments/{seg}.*"):
            shutil.copy(path, rules / "segments" / path.name)
    if mature:
        shutil.copy(MATURE / "journeys.yml", root / "journeys.yml")
    return root


# The SPEC §9 constructs, as they show in a journey document (journeys.yml's settings are listed apart).
CONSTRUCTS = ("wait_until", "wait_until_date", "split", "webhook", "entry.holdout", "exit.on_leave_entry", "goal.within")


def constructs_used(doc: dict) -> list[str]:
    """Which §9 constructs a journey document uses (each once)."""
    found = set()

    def steps(items):
        for step in items or []:
            for key in ("wait_until", "wait_until_date", "split", "webhook"):
                if key in step:
                    found.add(key)
            for key in ("then", "else", "on_timeout"):
                steps(step.get(key))
            for path in step.get("split") or []:
                steps(path.get("steps"))

    steps(doc.get("actions"))
    if (doc.get("entry") or {}).get("holdout"):
        found.add("entry.holdout")
    if (doc.get("exit") or {}).get("on_leave_entry"):
        found.add("exit.on_leave_entry")
    if (doc.get("goal") or {}).get("within"):
        found.add("goal.within")
    return [c for c in CONSTRUCTS if c in found]


def mature_constructs(specs: list[JourneySpec]) -> dict[str, list[str]]:
    """journey id -> the §9 constructs its mature document uses (journeys without any are left out)."""
    out = {}
    for spec in specs:
        used = constructs_used(_load(journey_file(spec.base, mature=True)))
        if used:
            out[spec.id] = used
    return out


def _segments_used(doc: dict) -> set[str]:
    found = set((doc.get("entry") or {}).get("segments") or [])

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("segment"), str) and "op" in node:
                found.add(node["segment"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk({k: v for k, v in doc.items() if k not in ("entry", "journey", "segment")})
    return found


def _yaml() -> YAML:
    yaml = YAML()
    yaml.width = 4096
    return yaml


def _load(path: Path):
    return _yaml().load(path.read_text())


def _dump(doc) -> str:
    out = io.StringIO()
    _yaml().dump(doc, out)
    return out.getvalue()


def _walk_to(doc, path: str):
    parts = path.split(".")
    node = doc
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    return node, (int(last) if isinstance(node, list) else last)


def _get(doc, path: str):
    node, key = _walk_to(doc, path)
    return node[key]


def _set(doc, path: str, value) -> None:
    node, key = _walk_to(doc, path)
    node[key] = value
