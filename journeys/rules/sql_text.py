"""Check hand-written SQL in rules: the `{sql: ...}` escape hatch and raw `.sql` segments."""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from journeys.contracts import TableContract

ENTITY_ALIAS = {"user": "u", "account": "a"}
JINJA_CALL = re.compile(r"\{\{\s*(ref|source|as_of)\s*\(([^{}]*)\)\s*\}\}")
JINJA_ANY = re.compile(r"\{[{%#]")

# Scalar functions an escape hatch may call: sqlglot's typed functions, minus anything that
# reads files, the environment or settings (unknown functions parse as Anonymous and are refused).
_REFUSED_FUNCTIONS = tuple(getattr(exp, name) for name in ("Anonymous", "ReadCSV", "ReadParquet") if hasattr(exp, name))
# The logical time T is the only clock a rule may read: wall-clock and random functions would
# make a run depend on when it happened, not on (sources, rules, state, T).
_REFUSED_FUNCTIONS += tuple(
    getattr(exp, name) for name in ("CurrentDate", "CurrentTime", "CurrentTimestamp", "CurrentDatetime", "Rand", "Randn", "Uuid")
    if hasattr(exp, name)
)
GENERATED_MODELS = frozenset({
    "event_features", "user_features", "account_features", "segment_membership", "journey_eligible",
    "journey_goal_matches", "journey_exit_matches", "journey_condition_matches",
})  # fmt: skip
_REFUSED_NODES = (exp.Select, exp.Subquery, exp.Table, exp.Star, exp.Placeholder, exp.Parameter, exp.Command, exp.Query)


class SqlTextError(ValueError):
    """What is wrong with a piece of SQL, and what is expected; `line` (1-based) when known."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


def parse_sql_leaf(text: str, entity: str, contracts: dict[str, TableContract]) -> exp.Expression:
    """The escape hatch as a sqlglot tree over the compiler's aliases (`u.` for users, `a.` for accounts).

    Unqualified columns are the entity's own; `user.x` / `account.x` name the user's or the
    account's column (a user criterion may read its account). Only allowlisted columns pass.
    """
    try:
        tree = sqlglot.parse_one(text, dialect="duckdb")
    except ParseError as e:
        first = e.errors[0] if e.errors else {}
        raise SqlTextError(f"not valid SQL ({first.get('description', e)}); expected one boolean expression") from None
    if tree is None or isinstance(tree, (exp.Query, exp.Command)) or not _is_boolean(tree):
        raise SqlTextError("expected one boolean expression over the entity's columns, e.g. \"mrr > 100 and stage <> 'churned'\"")
    for node in tree.walk():
        if isinstance(node, _REFUSED_NODES):
            raise SqlTextError("subqueries, tables and * are not allowed; expected an expression over the entity's columns")
        if isinstance(node, _REFUSED_FUNCTIONS):
            name = node.name if isinstance(node, exp.Anonymous) else node.sql_name().lower()
            raise SqlTextError(f"unknown function '{name}'; expected standard SQL functions")
    for column in list(tree.find_all(exp.Column)):
        scope = column.table or entity
        if column.args.get("db") or column.args.get("catalog") or scope not in ENTITY_ALIAS:
            raise SqlTextError(f"'{column.sql()}' is not a column of the entity; expected a column, user.<column> or account.<column>")
        if scope == "user" and entity == "account":
            raise SqlTextError(f"'{column.sql()}': an account criterion cannot read user columns")
        table = "users" if scope == "user" else "accounts"
        if contracts[table].column(column.name) is None:
            raise SqlTextError(f"unknown column '{column.name}' of {table}; expected one of: {', '.join(contracts[table].names)}")
        column.replace(exp.column(column.name, table=ENTITY_ALIAS[scope]))
    return tree


def _is_boolean(tree: exp.Expression) -> bool:
    while isinstance(tree, exp.Paren):
        tree = tree.this
    return isinstance(tree, (exp.Predicate, exp.Connector, exp.Not, exp.Boolean, exp.Xor))


def check_sql_segment(sql: str) -> None:
    """A raw segment must be one select returning a column named entity_id; Jinja only for ref/source/as_of."""
    for call in JINJA_CALL.finditer(sql):
        target = call.group(2).strip().strip("'\"")
        if call.group(1) == "ref" and target in GENERATED_MODELS:
            line = sql.count("\n", 0, call.start()) + 1
            raise SqlTextError(
                f"ref('{target}') is a generated model that depends on the segments (a cycle); "
                "expected staging models (stg_*), entity_attributes or sources", line
            )
    body = JINJA_CALL.sub(lambda m: f"__jinja_{m.group(1)}__", sql)
    leftover = JINJA_ANY.search(body)
    if leftover:
        line = body.count("\n", 0, leftover.start()) + 1
        raise SqlTextError(
            f"Jinja '{leftover.group()}' is not allowed; expected only {{{{ ref(...) }}}}, {{{{ source(...) }}}} and {{{{ as_of() }}}}", line
        )
    try:
        statements = [s for s in sqlglot.parse(body, dialect="duckdb") if s is not None]
    except ParseError as e:
        first = e.errors[0] if e.errors else {}
        raise SqlTextError(f"not valid SQL ({first.get('description', e)}); expected one select statement", first.get("line")) from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise SqlTextError("expected exactly one select statement")
    query = statements[0]
    names = [s.alias_or_name for s in query.selects]
    if "entity_id" not in names:
        raise SqlTextError(f"the select returns {', '.join(names) or 'no columns'}; expected a column named entity_id")
