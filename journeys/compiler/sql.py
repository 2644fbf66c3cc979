"""Small builders for generated SQL: safe literals, the run's logical time, relative times."""

from __future__ import annotations

import datetime as dt

from sqlglot import exp
from sqlglot.tokens import Tokenizer, TokenType

from journeys.rules.model import RELATIVE_TIME, SPAN

AS_OF = exp.column("as_of", table="rc")  # every generated query cross joins the run context as `rc`
_UNITS = {"m": "MINUTE", "h": "HOUR", "d": "DAY", "w": "WEEK"}


def literal(value) -> exp.Expression:
    """A value as a SQL literal node (never spliced text)."""
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, (int, float)):
        return exp.Literal.number(value)
    return exp.Literal.string(str(value))


def jinja_safe(tree: exp.Expression) -> exp.Expression:
    """Split string literals after every `{` so dbt's Jinja never sees `{{`, `{%` or `{#` in a value.

    `'a{{b'` becomes `'a{' || '{b'`: the same string in SQL, no delimiter for Jinja.
    """

    def split(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Literal) and node.is_string and "\n" in node.this:
            # the model template indents every line; a line break inside a literal would gain spaces
            pieces = [split(exp.Literal.string(p)) if p else None for p in node.this.split("\n")]
            result: exp.Expression | None = None
            for n, piece in enumerate(pieces):
                parts = ([exp.func("chr", exp.Literal.number(10))] if n else []) + ([piece] if piece is not None else [])
                for part in parts:
                    result = part if result is None else exp.DPipe(this=result, expression=part, safe=True)
            return exp.Paren(this=result)
        if isinstance(node, exp.Literal) and node.is_string and "{" in node.this:
            parts = node.this.split("{")
            chunks = [p + "{" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
            result: exp.Expression = exp.Literal.string(chunks[0])
            for chunk in chunks[1:]:
                result = exp.DPipe(this=result, expression=exp.Literal.string(chunk), safe=True)
            return exp.Paren(this=result)
        return node

    return tree.transform(split, copy=True)


def interval(text: str) -> exp.Interval:
    """`30d` as INTERVAL '30' DAY (weeks as days, which every dialect knows)."""
    m = SPAN.match(text)
    number, unit = int(m.group(1)), m.group(2)
    if unit == "w":
        number, unit = number * 7, "d"
    return exp.Interval(this=exp.Literal.string(str(number)), unit=exp.var(_UNITS[unit]))


def relative_time(text: str) -> exp.Expression:
    """`-30d` → as_of - INTERVAL '30' DAY; `+7d` → as_of + INTERVAL '7' DAY."""
    sign = RELATIVE_TIME.match(text).group(1)
    span = interval(text[1:])
    return exp.Sub(this=AS_OF.copy(), expression=span) if sign == "-" else exp.Add(this=AS_OF.copy(), expression=span)


def time_value(value: str) -> exp.Expression:
    """A criterion's time value: relative to the run's logical time, or an ISO date/timestamp."""
    if RELATIVE_TIME.match(value):
        return relative_time(value)
    return exp.cast(exp.Literal.string(utc_text(value)), "timestamp")


def utc_text(value: str) -> str:
    """An ISO date/timestamp as UTC text; an offset (`+02:00`) is converted, not dropped."""
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        return value
    return parsed.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat(sep=" ")


def as_timestamp(expression: exp.Expression, *, text: bool = False) -> exp.Expression:
    """A date/timestamp column as TIMESTAMP (a DATE is that day at 00:00 UTC); text is tried, not trusted."""
    return exp.TryCast(this=expression, to=exp.DataType.build("timestamp")) if text else exp.cast(expression, "timestamp")


def as_number(expression: exp.Expression) -> exp.Expression:
    """Text as a number, NULL when it is not one (so the comparison is false)."""
    return exp.TryCast(this=expression, to=exp.DataType.build("double"))


def false_if_null(condition: exp.Expression) -> exp.Expression:
    """Two-valued logic: a leaf over a missing value is false, never NULL."""
    return exp.func("coalesce", condition, exp.false())


def render(tree: exp.Expression) -> str:
    """Pretty, lowercase SQL (the house style), with Jinja-safe literals."""
    return lowercase_keywords(jinja_safe(tree).sql(dialect="duckdb", pretty=True))


_KEEP_CASE = {TokenType.STRING, TokenType.IDENTIFIER, TokenType.NATIONAL_STRING, TokenType.RAW_STRING}


def lowercase_keywords(sql: str) -> str:
    """Lowercase every token but string literals and quoted identifiers (sqlglot prints keywords upper)."""
    chars = list(sql)
    for token in Tokenizer().tokenize(sql):
        if token.token_type not in _KEEP_CASE:
            chars[token.start : token.end + 1] = sql[token.start : token.end + 1].lower()
    return "".join(chars)
