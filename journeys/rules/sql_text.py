"""Check hand-written SQL in rules: the `{sql: ...}` escape hatch and raw `.sql` segments."""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from journeys.contracts import OPTIONAL_SOURCE_TABLES, SOURCE_TABLES, TableContract
from journeys.rules.load import MAX_NESTING

ENTITY_ALIAS = {"user": "u", "account": "a"}
JINJA_CALL = re.compile(r"\{\{\s*(ref|source|as_of)\s*\(([^{}]*)\)\s*\}\}")
JINJA_ANY = re.compile(r"\{[{%#]")
QUOTED_NAME = re.compile(r"""^(['"])([A-Za-z0-9_]+)\1$""")
SQL_STRING = re.compile(r"'(?:[^']|'')*'")

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
    "event_features", "user_features", "account_features", "segment_membership", "journey_eligible", "journey_candidates",
    "journey_goal_matches", "journey_exit_matches", "journey_condition_matches",
})  # fmt: skip
# Models a raw segment may ref() besides the staging models: they do not depend on the segments.
INTERMEDIATE_MODELS = ("entity_attributes",)
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
    _refuse_deep_nesting(text)
    try:
        tree = sqlglot.parse_one(text, dialect="duckdb")
    except ParseError as e:
        first = e.errors[0] if e.errors else {}
        raise SqlTextError(f"not valid SQL ({first.get('description', e)}); expected one boolean expression") from None
    except RecursionError:
        raise SqlTextError(TOO_DEEP_FOR_PARSER, _deepest(text)[1]) from None
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


TOO_DEEP = f"parentheses nested more than {MAX_NESTING} levels deep; expected a flatter expression"
TOO_DEEP_FOR_PARSER = "nested too deeply for the SQL parser; expected a flatter expression"


def _deepest(text: str) -> tuple[int, int]:
    """The deepest nesting of parentheses outside '...' strings, and the line where it is first reached."""
    depth = deepest = 0
    line = deepest_line = 1
    blanked = SQL_STRING.sub(lambda m: "\n" * m.group().count("\n"), text)  # a string keeps only its line breaks
    for ch in blanked:
        depth += (ch == "(") - (ch == ")")
        line += ch == "\n"
        if depth > deepest:
            deepest, deepest_line = depth, line
    return deepest, deepest_line


def _refuse_deep_nesting(text: str) -> None:
    """sqlglot recurses once per parenthesis (and gives up near 300): refuse past MAX_NESTING, at its line."""
    deepest, line = _deepest(text)
    if deepest > MAX_NESTING:
        raise SqlTextError(TOO_DEEP, line)


def check_sql_segment(sql: str, contracts: dict[str, TableContract]) -> None:
    """A raw segment must be one select returning a column named entity_id; Jinja only for ref/source/as_of,
    reading models and sources that exist and do not depend on the segments."""
    for call in JINJA_CALL.finditer(sql):
        problem = _call_problem(call.group(1), call.group(2), contracts)
        if problem:
            raise SqlTextError(problem, sql.count("\n", 0, call.start()) + 1)
    body = JINJA_CALL.sub(lambda m: f"__jinja_{m.group(1)}__", sql)
    leftover = JINJA_ANY.search(body)
    if leftover:
        line = body.count("\n", 0, leftover.start()) + 1
        raise SqlTextError(
            f"Jinja '{leftover.group()}' is not allowed; expected only {{{{ ref(...) }}}}, {{{{ source(...) }}}} and {{{{ as_of() }}}}", line
        )
    _refuse_deep_nesting(body)
    try:
        statements = [s for s in sqlglot.parse(body, dialect="duckdb") if s is not None]
    except ParseError as e:
        first = e.errors[0] if e.errors else {}
        raise SqlTextError(f"not valid SQL ({first.get('description', e)}); expected one select statement", first.get("line")) from None
    except RecursionError:
        raise SqlTextError(TOO_DEEP_FOR_PARSER, _deepest(body)[1]) from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise SqlTextError("expected exactly one select statement")
    query = statements[0]
    names = [s.alias_or_name for s in query.selects]
    if "entity_id" not in names:
        raise SqlTextError(f"the select returns {', '.join(names) or 'no columns'}; expected a column named entity_id")


def _call_problem(function: str, arguments: str, contracts: dict[str, TableContract]) -> str | None:
    """What is wrong with one {{ ref(...) }} / {{ source(...) }}: dbt would only fail at build time."""
    if function == "as_of":
        return None
    names = [m.group(2) if (m := QUOTED_NAME.match(a.strip())) else None for a in arguments.split(",")]
    models = sorted({f"stg_{table}" for table in contracts} | set(INTERMEDIATE_MODELS))
    tables = SOURCE_TABLES + OPTIONAL_SOURCE_TABLES
    if function == "ref":
        if len(names) != 1 or names[0] is None:
            return f"ref({arguments.strip()}) needs one quoted model name; expected e.g. ref('stg_users')"
        if names[0] in GENERATED_MODELS:
            return (f"ref('{names[0]}') is a generated model that depends on the segments (a cycle); "
                    "expected staging models (stg_*), entity_attributes or sources")
        if names[0] not in models:
            return f"ref('{names[0]}'): unknown model; expected one of: {', '.join(models)}"
        return None
    if len(names) != 2 or None in names:
        return f"source({arguments.strip()}) needs two quoted names; expected e.g. source('raw', 'users')"
    if names[0] != "raw" or names[1] not in tables:
        return (f"source('{names[0]}', '{names[1]}'): unknown source; expected source('raw', '<table>') "
                f"with <table> one of: {', '.join(tables)}")
    return None
