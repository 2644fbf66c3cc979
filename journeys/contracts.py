"""Read the staging contracts (dbt_project/models/staging/stg_*.yml): the one schema of the source tables."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ruamel.yaml import YAML

SOURCE_TABLES = (
    "users",
    "accounts",
    "subscriptions",
    "account_team",
    "milestones",
    "outcomes",
    "playbook_enrollments",
    "custom_attributes",
    "events",
)
# Optional sources: created empty when missing, so a team that has none needs no file.
OPTIONAL_SOURCE_TABLES = ("email_suppressions",)

NUMERIC_TYPES = frozenset({"integer", "bigint", "double", "float", "real", "decimal", "numeric", "smallint", "hugeint"})
TEMPORAL_TYPES = frozenset({"date", "timestamp", "timestamptz"})


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str
    not_null: bool
    unique: bool = False  # the staging yml lists a `unique` data test on the column

    @property
    def kind(self) -> str:
        """text | number | time | boolean | json: what the rule language may do with it."""
        base = self.data_type.split("(")[0].strip().lower()
        if base in NUMERIC_TYPES:
            return "number"
        if base in TEMPORAL_TYPES:
            return "time"
        if base == "boolean":
            return "boolean"
        if base == "json":
            return "json"
        return "text"


@dataclass(frozen=True)
class TableContract:
    table: str
    columns: tuple[Column, ...]

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def staging_dir(project_dir: Path) -> Path:
    return Path(project_dir) / "dbt_project" / "models" / "staging"


def load_contracts(project_dir: Path) -> dict[str, TableContract]:
    """The contract of every source table, keyed by source table name (`users`, not `stg_users`)."""
    return _load_contracts(str(Path(project_dir).resolve()))


@lru_cache(maxsize=8)
def _load_contracts(project_dir: str) -> dict[str, TableContract]:
    yaml = YAML(typ="safe")
    contracts: dict[str, TableContract] = {}
    for path in sorted(staging_dir(Path(project_dir)).glob("stg_*.yml")):
        doc = yaml.load(path.read_text())
        for model in doc.get("models", []):
            table = model["name"].removeprefix("stg_")
            columns = tuple(
                Column(
                    name=c["name"],
                    data_type=str(c["data_type"]).lower(),
                    not_null=any(k.get("type") == "not_null" for k in c.get("constraints", [])),
                    unique="unique" in c.get("data_tests", []),
                )
                for c in model.get("columns", [])
            )
            contracts[table] = TableContract(table, columns)
    return contracts
