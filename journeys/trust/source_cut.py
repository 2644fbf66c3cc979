"""Source tables as they were at T, for backtest: each source relation of the scratch copy becomes a view that
hides what happened after the T of the run being built.

The untouched table is renamed `<name>__backtest_full` (no copy of the data) and a view of the original name
reads it, cut at `journey_state.run_context`, the T every run writes before its dbt build. So each run of the
replay sees the sources as of its own T, staging and raw SQL segments alike, without rewriting a table per T.

What can be cut is what has a timestamp. Rows that did not exist yet (created, occurred, met, enrolled after T)
are removed; a later fact about an older row (a subscription activated or cancelled after T, a playbook
completed after T) is emptied. Everything else is today's value: current plan, mrr, status and stage, custom
attributes, the account team, users.last_seen_at (docs/trust.md, backtest limits).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
from ruamel.yaml import YAML

from journeys.contracts import OPTIONAL_SOURCE_TABLES, SOURCE_TABLES
from journeys.errors import JourneysError

FULL_SUFFIX = "__backtest_full"
AS_OF = "(select max(as_of) from journey_state.run_context)"

# The moment a row came to exist: rows after T are cut.
ROW_TIME = {
    "users": "created_at",
    "accounts": "created_at",
    "subscriptions": "created_on",
    "milestones": "achieved_at",
    "outcomes": "met_at",
    "playbook_enrollments": "enrolled_at",
    "events": "occurred_at",
    "email_suppressions": "suppressed_at",
}
# Facts about an existing row that happened later: empty until they happen.
LATER_FACTS = {
    "subscriptions": ("activated_on", "cancelled_on"),
    "playbook_enrollments": ("completed_at",),
}


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def source_relations(project_dir: Path) -> dict[str, tuple[str, str]]:
    """(schema, name) of each source table the staging models read with `source('raw', table)`, as the
    project's sources file maps it (a team may point them at its own schema and table names)."""
    yaml = YAML(typ="safe")
    tables = SOURCE_TABLES + OPTIONAL_SOURCE_TABLES
    for path in sorted((Path(project_dir) / "dbt_project" / "models").rglob("*.yml")):
        doc = yaml.load(path.read_text())
        sources = doc.get("sources") if isinstance(doc, dict) else None
        for source in sources or []:
            if source.get("name") != "raw":
                continue
            schema = str(source.get("schema") or "raw")
            mapped = {t["name"]: (schema, str(t.get("identifier") or t["name"])) for t in source.get("tables") or []}
            return {t: mapped.get(t, (schema, t)) for t in tables}
    return {t: ("raw", t) for t in tables}


def install_cut(con: duckdb.DuckDBPyConnection, relations: dict[str, tuple[str, str]]) -> None:
    """Replace every source relation by its view as of the run's T (call once, on the scratch copy only)."""
    for table, (schema, name) in relations.items():
        kind = con.execute(
            "select table_type from information_schema.tables where table_schema = ? and table_name = ? and table_catalog = current_database()",
            [schema, name],
        ).fetchone()
        if kind is None:
            raise JourneysError(f"source {table} ({schema}.{name}) is not in the database file; backtest can only cut "
                                "source tables stored in it")  # fmt: skip
        full = name + FULL_SUFFIX
        con.execute(f"alter {'view' if kind[0] == 'VIEW' else 'table'} {quote(schema)}.{quote(name)} rename to {quote(full)}")
        columns = [c for (c,) in con.execute(
            "select column_name from information_schema.columns where table_schema = ? and table_name = ? "
            "and table_catalog = current_database() order by ordinal_position", [schema, full]).fetchall()]  # fmt: skip
        con.execute(f"create view {quote(schema)}.{quote(name)} as {cut_select(table, f'{quote(schema)}.{quote(full)}', columns)}")


def _after_t(column: str) -> str:
    # try_cast: a text timestamp is read as staging reads it; a value that is not a time is never "after T"
    return f"coalesce(try_cast({quote(column)} as timestamp) > {AS_OF}, false)"


def cut_select(table: str, relation: str, columns: list[str]) -> str:
    """The select of one source as of T: rows created after T removed, later facts emptied, column order kept."""
    lower = {c.lower(): c for c in columns}
    later = {lower[c] for c in LATER_FACTS.get(table, ()) if c in lower}
    select = []
    for c in columns:
        if c in later:
            select.append(f"case when {_after_t(c)} then null else {quote(c)} end as {quote(c)}")
        elif table == "playbook_enrollments" and c.lower() == "status" and "completed_at" in lower:
            # completed after T: still active at T
            select.append(f"case when {_after_t(lower['completed_at'])} then 'active' else {quote(c)} end as {quote(c)}")
        else:
            select.append(quote(c))
    row_time = lower.get(ROW_TIME.get(table, ""))
    where = f" where not {_after_t(row_time)}" if row_time else ""
    return f"select {', '.join(select)} from {relation}{where}"
