"""`journeys load DIR`: check <table>.csv|.parquet files against the staging contracts, then replace
the raw source tables in one transaction.

Every file is read into an in-memory staging area first (CSV with every column as text, so the
contract decides the types) and checked: the contract columns are present, each value casts to
its column's type, not-null columns have values, unique columns have no duplicates. Only when
every file passes is the warehouse opened, and all tables are replaced in one transaction: a
failure anywhere leaves the previous data as it was. Extra columns in a file are ignored;
header names match the contract case-insensitively; an empty value is NULL; timestamps with a
UTC offset are converted to UTC.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import duckdb

from journeys.contracts import OPTIONAL_SOURCE_TABLES, SOURCE_TABLES, Column, TableContract, load_contracts
from journeys.errors import DataError, StateError

FORMATS = ("csv", "parquet")
_TYPE_WORDS = {
    "timestamp": "a timestamp", "timestamptz": "a timestamp", "date": "a date", "json": "valid JSON",
    "integer": "an integer", "bigint": "an integer", "smallint": "an integer", "hugeint": "an integer",
    "boolean": "a boolean (true/false)",
}


def load_directory(db_path: Path, data_dir: Path, project_dir: Path) -> dict[str, int]:
    """Load DIR/<table>.csv|.parquet into the raw source tables, replacing them atomically.

    Returns rows per loaded table; tables without a file are left as they are."""
    contracts = load_contracts(project_dir)
    files = find_source_files(Path(data_dir))
    with duckdb.connect() as con:  # the staging area; the warehouse is attached only once all files pass
        con.execute("set timezone = 'UTC'")
        con.execute("set enable_progress_bar = false")  # the CLI prints its own summary
        problems = [p for table, path in files.items() if (p := _stage(con, table, path, contracts[table]))]
        if problems:
            raise DataError("\n".join(problems))
        selects = {table: ", ".join(f'{_cast(c, _source_columns(con, table))} as "{c.name}"'
                                    for c in contracts[table].columns) for table in files}
        _attach(con, Path(db_path))
        counts = {}
        con.execute("begin transaction")
        try:
            con.execute("create schema if not exists raw")
            for table, select in selects.items():
                con.execute(f"create or replace table raw.{table} as "
                            f"select {select} from temp.main._stage_{table}")
                counts[table] = con.execute(f"select count(*) from raw.{table}").fetchall()[0][0]
            ensure_source_tables(con, project_dir)
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
    return counts


def ensure_source_tables(con: duckdb.DuckDBPyConnection, project_dir: Path) -> None:
    """Create every missing raw source table, empty, with its contract's columns and types."""
    con.execute("create schema if not exists raw")
    for table, contract in load_contracts(project_dir).items():
        columns = ", ".join(f'"{c.name}" {c.data_type}' for c in contract.columns)
        con.execute(f"create table if not exists raw.{table} ({columns})")


def find_source_files(data_dir: Path) -> dict[str, Path]:
    """The file of each table present in data_dir, in SOURCE_TABLES order; any other file is an error."""
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such directory")
    tables = SOURCE_TABLES + OPTIONAL_SOURCE_TABLES
    expected = ", ".join(tables)
    found: dict[str, Path] = {}
    problems = []
    for path in sorted(p for p in data_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
        table, _, fmt = path.name.partition(".")
        if table not in tables or fmt not in FORMATS:
            problems.append(f"{path}: not a source table file; expected <table>.csv or <table>.parquet "
                            f"with <table> one of: {expected}")
        elif table in found:
            problems.append(f"{data_dir / table}.*: both {table}.csv and {table}.parquet are present; "
                            "keep one")
        else:
            found[table] = path
    if problems:
        raise DataError("\n".join(problems))
    if not found:
        raise DataError(f"{data_dir}: no source files; expected <table>.csv or <table>.parquet "
                        f"with <table> one of: {expected}")
    return {t: found[t] for t in tables if t in found}


def _stage(con: duckdb.DuckDBPyConnection, table: str, path: Path, contract: TableContract) -> str | None:
    """Read one file into temp table _stage_<table> (file order) and check it; the first problem, or None."""
    expected = ", ".join(contract.names)
    is_csv = path.suffix == ".csv"
    if is_csv:
        header = _csv_header(path)
        if not header:
            return f"{path}: no header row; the first line must name the columns: {expected}"
        separator = _other_separator(header)
        if separator:
            return (f"{path}: a header with one column {_show(header[0])}: the names are separated by "
                    f"{separator}; expected a comma-separated file with the columns: {expected}")
        # the header is parsed here, not sniffed: DuckDB's sniffer may take leading rows for a preamble
        names = ", ".join(f"'{_quote(name)}': 'varchar'" for name in header)
        source = (f"read_csv('{_quote(path)}', auto_detect = false, header = true, columns = {{{names}}}, "
                  "delim = ',', quote = '\"', escape = '\"')")
    else:
        source = f"read_parquet('{_quote(path)}')"
    try:
        con.execute(f"create or replace temp table _stage_{table} as select * from {source}")
    except duckdb.Error as error:
        return _read_error(path, str(error))
    columns = _source_columns(con, table)
    missing = [c.name for c in contract.columns if c.name.lower() not in columns]
    if len(missing) == len(contract.columns) and is_csv:
        return f"{path}: no header row; the first line must name the columns: {expected}"
    if missing:
        return f"{path}: missing column '{missing[0]}'; expected columns: {expected}"

    def where(row: int) -> str:
        return f"{path}:{_csv_line(path, row)}" if is_csv else f"{path}: row {row + 1}"

    # one scan finds, per column, the first row whose value does not fit, then the earliest of them
    checks = []
    for c in contract.columns:
        value, casted = _source(c, columns), _cast(c, columns)
        checks.append((c, "type", f"{value} is not null and {casted} is null"))
        if c.not_null:
            checks.append((c, "null", f"{casted} is null or trim({casted}::varchar) = ''"))
    firsts = con.execute(
        "select " + ", ".join(f"min(rowid) filter (where {cond})" for _, _, cond in checks)
        + f" from _stage_{table}"
    ).fetchall()[0]
    bad = [(row, n) for n, row in enumerate(firsts) if row is not None]
    if bad:
        row, n = min(bad)
        c, kind, _ = checks[n]
        if kind == "null":
            return f"{where(row)}: column '{c.name}': empty value; the column must have a value"
        raw = con.execute(f"select {_source(c, columns)}::varchar from _stage_{table} where rowid = ?", [row])
        return f"{where(row)}: column '{c.name}': {_show(raw.fetchall()[0][0])} is not {_type_words(c)}"
    for c in (c for c in contract.columns if c.unique):
        casted = _cast(c, columns)
        dup = con.execute(
            f"select {casted} as v, min(rowid) from _stage_{table} group by v having count(*) > 1 "
            "order by 2 limit 1"
        ).fetchall()
        if dup:
            value, first = dup[0]
            second = con.execute(f"select rowid from _stage_{table} where {casted} = ? "
                                 "order by rowid limit 1 offset 1", [value]).fetchall()[0][0]
            also = f"line {_csv_line(path, first)}" if is_csv else f"row {first + 1}"
            return (f"{where(second)}: column '{c.name}': duplicate value {_show(value)} (also on {also}); "
                    "values must be unique")
    return None


def _csv_header(path: Path) -> list[str]:
    """The column names on the first non-blank record, made unique (DuckDB needs distinct names)."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        header = next((fields for fields in csv.reader(f) if fields), [])
    names: list[str] = []
    for n, name in enumerate(header):
        name = name.strip() or f"column{n}"
        names.append(name if name.lower() not in {m.lower() for m in names} else f"{name}_{n}")
    return names


_SEPARATORS = {";": "';'", "\t": "tabs", "|": "'|'"}


def _other_separator(header: list[str]) -> str | None:
    """How the names of a one-column header are separated, when it is a CSV saved with another delimiter
    (a spreadsheet in a locale whose decimal comma makes it use ';'), else None."""
    if len(header) != 1:
        return None
    return next((words for sep, words in _SEPARATORS.items() if sep in header[0]), None)


def _read_error(path: Path, message: str) -> str:
    """DuckDB's reader error as `path[:line]: what`, without its list of reader options."""
    lines = message.splitlines()
    line = re.search(r"CSV Error on Line: (\d+)", message)
    if line:
        detail = next((s for s in lines[1:] if s and not s.startswith("Original Line")), lines[0])
        # DuckDB counts records (header = 1); report the physical line, as for the other errors
        return f"{path}:{_csv_line(path, int(line.group(1)) - 2)}: cannot read the row: {detail.strip()}"
    return f"{path}: cannot read the file as {path.suffix[1:]}: {lines[0]}"


def _source_columns(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, tuple[str, str]]:
    """The staged file's columns: lowercased name -> (name as in the file, DuckDB type)."""
    rows = con.execute(f"describe _stage_{table}").fetchall()
    columns: dict[str, tuple[str, str]] = {}
    for name, data_type, *_ in rows:
        columns.setdefault(name.lower(), (name, data_type.lower()))
    return columns


def _source(c: Column, columns: dict[str, tuple[str, str]]) -> str:
    name, data_type = columns[c.name.lower()]
    quoted = '"' + name.replace('"', '""') + '"'
    # an empty text value is NULL, whatever the column's type
    return f"nullif(trim({quoted}), '')" if data_type == "varchar" and c.kind != "text" else quoted


def _cast(c: Column, columns: dict[str, tuple[str, str]]) -> str:
    """SQL casting the file's column to the contract type; NULL when the value does not fit."""
    value = _source(c, columns)
    base = c.data_type.split("(")[0].strip()
    if base == "timestamp":  # through timestamptz so that an offset (Z, +02:00) is converted to UTC
        return f"try_cast({value} as timestamptz)::timestamp"
    if c.kind == "number" and _type_words(c) == "an integer":  # '3.5' must not round to 4
        return (f"case when try_cast({value} as double) = try_cast({value} as {c.data_type}) "
                f"then try_cast({value} as {c.data_type}) end")
    return f"try_cast({value} as {c.data_type})"


def _type_words(c: Column) -> str:
    base = c.data_type.split("(")[0].strip()
    return _TYPE_WORDS.get(base, "a number" if c.kind == "number" else f"a {base}")


def _csv_line(path: Path, row: int) -> int:
    """The line on which data row `row` (0-based) starts: quoted newlines count, blank lines are skipped
    (as DuckDB does). Read only when reporting an error."""
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        start, record = 1, -1  # record -1 is the header
        try:
            for fields in reader:
                if fields:
                    if record == row:
                        return start
                    record += 1
                start = reader.line_num + 1
        except csv.Error:  # e.g. a field over the csv module's size limit: fall back to one line per row
            pass
    return row + 2


def _attach(con: duckdb.DuckDBPyConnection, db_path: Path) -> None:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con.execute(f"attach '{_quote(db_path)}' as warehouse")
    except duckdb.Error as error:
        message = str(error)
        if "could not set lock" in message.lower():
            problem = f"{db_path} is in use by another process (a run?); wait for it to finish"
        elif "already attached" in message:
            problem = f"{db_path} is open in another connection of this process; close it first"
        else:
            problem = f"{db_path}: cannot open the database: {message.splitlines()[0]}"
        raise StateError(problem) from error
    con.execute("use warehouse")


def _show(value: object) -> str:
    text = str(value)
    return "'" + (text if len(text) <= 60 else text[:57] + "...") + "'"


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")
