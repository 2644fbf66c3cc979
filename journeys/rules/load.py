"""Read sql_rules/ into typed objects, keeping each value's line so every problem can name it."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import ConstructorError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

from journeys.errors import RuleProblem
from journeys.rules.settings import SETTINGS_FILE, ProjectSettings
from journeys.rules.model import IDENTIFIER, CRITERIA_KEYS, STEP_KEYS, Journey, Segment, SqlSegment

RULES_DIR = "sql_rules"
MAX_RULE_FILE_BYTES = 1_000_000
TEMPLATE_SUFFIXES = (".html", ".txt", ".md")
SQL_HEADER = re.compile(r"^\s*--\s*(entity|description)\s*:\s*(.*?)\s*$")


@dataclass(frozen=True)
class RuleFile:
    """A rule file as read: its project-relative path and its YAML document (for line numbers)."""

    path: str
    doc: Any = None

    def position(self, loc: tuple) -> tuple[int, int]:
        """Line and column (1-based) of the value at `loc`, or of its nearest existing parent."""
        node, line, col = self.doc, 1, 0
        if isinstance(node, (CommentedMap, CommentedSeq)):
            line, col = node.lc.line + 1, node.lc.col + 1
        for part in loc:
            if isinstance(node, CommentedMap) and part in node:
                key_line, key_col = node.lc.key(part)
                line, col = key_line + 1, key_col + 1
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                item_line, item_col = node.lc.item(part)
                line, col = item_line + 1, item_col + 1
                node = node[part]
            else:
                break
        return line, col

    def problem(self, loc: tuple, message: str) -> RuleProblem:
        line, col = self.position(loc)
        return RuleProblem(self.path, line, col, format_loc(loc), message)


@dataclass
class RuleSet:
    """Everything under sql_rules/, parsed. `files` maps ('segment'|'journey', id) to its RuleFile."""

    project_dir: Path
    segments: dict[str, Segment | SqlSegment] = field(default_factory=dict)
    journeys: dict[str, Journey] = field(default_factory=dict)
    templates: dict[str, Path] = field(default_factory=dict)
    files: dict[tuple[str, str], RuleFile] = field(default_factory=dict)
    broken_ids: set[tuple[str, str]] = field(default_factory=set)  # files that failed to parse
    settings: ProjectSettings = field(default_factory=ProjectSettings)  # journeys.yml (defaults when absent)
    settings_file: RuleFile | None = None


def format_loc(loc: tuple) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def load_rules(project_dir: Path) -> tuple[RuleSet, list[RuleProblem]]:
    """Parse every rule file; returns the rules that parsed and the problems of those that did not."""
    project_dir = Path(project_dir)
    rules = RuleSet(project_dir=project_dir)
    problems: list[RuleProblem] = []
    root = project_dir / RULES_DIR
    if not root.is_dir():
        return rules, [RuleProblem(RULES_DIR, 0, 0, "", "no rules folder; expected sql_rules/ with segments/ and journeys/")]

    settings_path = project_dir / SETTINGS_FILE
    if settings_path.is_file():
        file, settings, file_problems = _read_yaml_model(settings_path, SETTINGS_FILE, ProjectSettings, "settings")
        rules.settings_file = file
        if settings is not None:
            rules.settings = settings
        problems.extend(file_problems)

    for path in _files(root / "templates", TEMPLATE_SUFFIXES):
        rules.templates.setdefault(path.stem, path)
        rules.templates[path.name] = path

    for path in _files(root / "segments", (".yml", ".yaml", ".sql")):
        rel = path.relative_to(project_dir).as_posix()
        if path.suffix == ".sql":
            segment, problem = _read_sql_segment(path, rel)
            file = RuleFile(rel)
        else:
            file, segment, problem = _read_yaml_model(path, rel, Segment, "segment")
        _register(rules, problems, "segment", path, file, segment, problem, rules.segments)

    for path in _files(root / "journeys", (".yml", ".yaml")):
        rel = path.relative_to(project_dir).as_posix()
        file, journey, problem = _read_yaml_model(path, rel, Journey, "journey")
        _register(rules, problems, "journey", path, file, journey, problem, rules.journeys)
    return rules, problems


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in suffixes and not p.name.startswith("."))


def _register(rules, problems, kind, path, file, obj, file_problems, into) -> None:
    rule_id = getattr(obj, kind, None) if obj is not None else path.stem
    if file_problems:
        problems.extend(file_problems)
        rules.broken_ids.add((kind, path.stem))
        return
    if rule_id != path.stem:
        problems.append(file.problem((kind,), f"id '{rule_id}' differs from the file name; expected '{path.stem}'"))
        rules.broken_ids.add((kind, path.stem))
        return
    if (kind, rule_id) in rules.files:
        other = rules.files[(kind, rule_id)].path
        problems.append(file.problem((kind,), f"duplicate {kind} id '{rule_id}'; already defined in {other}"))
        return
    into[rule_id] = obj
    rules.files[(kind, rule_id)] = file


def read_rule_text(path: Path, rel: str) -> tuple[str | None, list[RuleProblem]]:
    """The text of a rule file or template, or the problem: larger than MAX_RULE_FILE_BYTES, not UTF-8."""
    size = path.stat().st_size
    if size > MAX_RULE_FILE_BYTES:
        return None, [RuleProblem(rel, 1, 0, "", f"file is {size} bytes; expected at most {MAX_RULE_FILE_BYTES}")]
    data = path.read_bytes()
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        return None, [RuleProblem(rel, line, col, "", f"not UTF-8 text ({e.reason} 0x{data[e.start]:02x}); expected the file saved as UTF-8")]


def _read_yaml_model(path: Path, rel: str, model: type[BaseModel], kind: str):
    text, problems = read_rule_text(path, rel)
    if text is None:
        return RuleFile(rel), None, problems
    try:
        doc = _yaml().load(text)
    except MarkedYAMLError as e:
        return RuleFile(rel), None, [_syntax_problem(rel, text, e)]
    except ReaderError as e:  # a control character: the reader knows its offset, not its line
        return RuleFile(rel), None, [_reader_problem(rel, text, e)]
    except YAMLError as e:
        return RuleFile(rel), None, [RuleProblem(rel, 1, 0, "", f"YAML syntax: {e}")]
    except RecursionError:
        line, col = _too_deep_in_text(text)
        return RuleFile(rel), None, [RuleProblem(rel, line, col, "", TOO_DEEP)]
    file = RuleFile(rel, doc)
    if doc is None:
        return file, None, [RuleProblem(rel, 1, 0, "", f"empty file; expected a {kind} definition")]
    bomb = _alias_bomb(doc)  # first: every walk below visits each alias's expansion again
    if bomb is not None:
        return file, None, [file.problem(bomb, ALIAS_BOMB)]
    bad_text = _find_surrogate(doc, ())
    if bad_text is not None:
        return file, None, [file.problem(bad_text, "text with a lone UTF-16 surrogate escape (\\uD800-\\uDFFF); expected real Unicode characters")]
    too_deep = _too_deep_in_doc(doc)
    if too_deep:
        return file, None, [RuleProblem(rel, *too_deep, "", TOO_DEEP)]
    try:
        return file, model.model_validate(doc), []
    except ValidationError as e:
        return file, None, [_translate(file, err) for err in e.errors() if not _after_item_errors(err)]
    except RecursionError:
        return file, None, [RuleProblem(rel, 1, 0, "", "criteria nested too deeply; expected at most about 100 levels")]


def _find_surrogate(node: Any, loc: tuple) -> tuple | None:
    """The path of the first string holding a lone surrogate (YAML lets "\\ud83d" through; no file can store it)."""
    if isinstance(node, str):
        return loc if any("\ud800" <= ch <= "\udfff" for ch in node) else None
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        found = _find_surrogate(value, loc + (key,))
        if found is not None:
            return found
    return None


class _Constructor(RoundTripConstructor):
    """Points a scalar the YAML library cannot build (an unquoted 2026-02-30, `!!int abc`) at its place:
    its ValueError carries no line."""

    def construct_non_recursive_object(self, node: Any, tag: str | None = None) -> Any:
        try:
            return super().construct_non_recursive_object(node, tag)
        except (ValueError, OverflowError) as e:
            kind = _TAG_WORDS.get(str(node.tag).rsplit(":", 1)[-1], "value")
            problem = f"'{node.value}' is not a valid {kind} ({e}); expected a real {kind}, or quotes to keep it as text"
            raise ConstructorError(None, None, problem, node.start_mark) from None


_TAG_WORDS = {"timestamp": "date", "int": "whole number", "float": "number"}


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.Constructor = _Constructor
    yaml.allow_duplicate_keys = False
    return yaml


def _reader_problem(rel: str, text: str, e: ReaderError) -> RuleProblem:
    """A character YAML refuses (NUL, other control characters), at its line and column."""
    line = text.count("\n", 0, e.position) + 1
    col = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
    code = e.character if isinstance(e.character, int) else ord(str(e.character)[:1] or "\0")
    return RuleProblem(rel, line, col, "", f"YAML syntax: unacceptable character #x{code:04x}: {e.reason}; "
                                           "expected printable text (remove the control character)")


# Aliases (*name) repeat their anchor's whole value: nested a few times, a few hundred bytes stand for
# billions of values (the "billion laughs"), and every walk (surrogates, depth, pydantic) would visit
# them all. A file's own values are bounded by its size; what aliases add is bounded here.
MAX_ALIASED_VALUES = 10_000
ALIAS_BOMB = (f"the aliases (*name) here bring the values repeated by aliases past {MAX_ALIASED_VALUES}; "
              "expected the values written out, or fewer nested aliases")


def _children(node: Any, loc: tuple = ()) -> list[tuple[Any, tuple]]:
    if isinstance(node, dict):
        return [(value, loc + (key,)) for key, value in node.items()]
    if isinstance(node, list):
        return [(value, loc + (i,)) for i, value in enumerate(node)]
    return []


def _expanded_sizes(doc: Any) -> dict[int, float]:
    """How many values each mapping or list stands for once its aliases are expanded, by id(), counted
    once per object (iteratively); an alias inside its own anchor counts as infinite."""
    sizes: dict[int, float] = {}
    stack = [(doc, False)]
    while stack:
        node, counted = stack.pop()
        if counted:
            sizes[id(node)] = 1 + sum(sizes[id(c)] if isinstance(c, (dict, list)) else 1 for c, _ in _children(node))
        elif isinstance(node, (dict, list)) and id(node) not in sizes:
            sizes[id(node)] = math.inf  # until its children are counted
            stack.append((node, True))
            stack.extend((child, False) for child, _ in _children(node))
    return sizes


def _alias_bomb(doc: Any) -> tuple | None:
    """The path of the mapping or list holding the alias past which aliases have repeated more than
    MAX_ALIASED_VALUES values, or None. Walks the file as written (each object once, in document
    order): a repeat is an alias. (The parent, since ruamel places an alias at its anchor.)"""
    sizes, seen, added = _expanded_sizes(doc), set(), 0.0
    stack: list[tuple[Any, tuple]] = [(doc, ())]
    while stack:
        node, loc = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        if id(node) in seen:
            added += sizes[id(node)]
            if added > MAX_ALIASED_VALUES:
                return loc[:-1]
            continue
        seen.add(id(node))
        stack.extend(reversed(_children(node, loc)))
    return None


_CLOSING = {"[": "]", "{": "}", '"': '"', "'": "'"}


def _syntax_problem(rel: str, text: str, e: MarkedYAMLError) -> RuleProblem:
    """A YAML parse error at the place to fix, in words rather than parser states where we can."""
    mark, problem = e.problem_mark or e.context_mark, str(e.problem or "")
    what = " ".join(str(x) for x in (e.context, e.problem) if x) or "invalid YAML"
    if "<stream end>" in problem and e.context_mark is not None:
        # An unclosed bracket is reported at the end of the file; the opening bracket is the place to fix.
        mark = e.context_mark
        opened = text[mark.index] if mark.index < len(text) else ""
        if opened in _CLOSING:
            what = f"'{opened}' is never closed; expected a matching '{_CLOSING[opened]}' before the end of the file"
    elif "found character '\\t'" in problem:
        what += "; expected spaces for indentation, not tabs"
    elif "found duplicate key" in problem:
        what += "; expected each key once"
    elif "expected <block end>" in problem:
        what += "; expected this line indented like the keys above it"
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 0)
    return RuleProblem(rel, line, col, "", f"YAML syntax: {what}")


# Real rules nest fewer than 30 levels; far deeper trees would exhaust Python's recursion in the
# YAML parser, the validator or the compiler, so they are refused up front with their position.
MAX_NESTING = 100
TOO_DEEP = f"nested more than {MAX_NESTING} levels deep; expected a flatter rule (combine conditions with all/any)"
_OPENING_TOKENS = ("BlockMappingStartToken", "BlockSequenceStartToken", "FlowMappingStartToken", "FlowSequenceStartToken")
_CLOSING_TOKENS = ("BlockEndToken", "FlowMappingEndToken", "FlowSequenceEndToken")


def _too_deep_in_doc(doc: Any) -> tuple[int, int] | None:
    """Line and column of the first mapping or list nested deeper than MAX_NESTING (iteratively)."""
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, (CommentedMap, CommentedSeq)):
            continue
        if depth > MAX_NESTING:
            return node.lc.line + 1, node.lc.col + 1
        children = node.values() if isinstance(node, CommentedMap) else node
        stack.extend((child, depth + 1) for child in children)
    return None


def _too_deep_in_text(text: str) -> tuple[int, int]:
    """Where nesting first passes MAX_NESTING, from the YAML tokens (the scanner does not recurse)."""
    depth = 0
    try:
        for token in _yaml().scan(text):
            name = type(token).__name__
            depth += (name in _OPENING_TOKENS) - (name in _CLOSING_TOKENS)
            if depth > MAX_NESTING:
                return token.start_mark.line + 1, token.start_mark.column + 1
    except YAMLError:
        pass
    return 1, 0


_TYPE_WORDS = {
    "string_type": "text",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "tuple_type": "a list",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
}


_BOUNDS = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"),
           "less_than": ("<", "lt"), "less_than_equal": ("<=", "le")}  # pydantic's error type: sign, ctx key


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a bound of a float field: 0, not 0.0
    return repr(value) if isinstance(value, (int, float)) else f"'{value}'"


def _after_item_errors(err: dict) -> bool:
    """pydantic adds 'too short' to a list whose items all failed; the items' own errors say it all."""
    value, ctx = err.get("input"), err.get("ctx") or {}
    return err["type"] == "too_short" and isinstance(value, (list, tuple)) and len(value) >= ctx.get("min_length", 1)


def _translate(file: RuleFile, err: dict) -> RuleProblem:
    """One pydantic error as `path:line:col: field: what is wrong; what is expected`."""
    # drop pydantic's own steps: union tags, validator names, and `[key]` (a dict key's error is at the key)
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and (p.startswith(("<", "function-")) or p == "[key]")))
    kind, ctx = err["type"], err.get("ctx") or {}
    loc += tuple(ctx.get("at", ()))  # a validator of a list may point at one of its items
    if kind == "unknown_key":
        loc = loc + (ctx["key"],)
        message = err["msg"]
    elif kind == "value":  # a leaf's value does not fit its op: point at the value
        loc = loc + ("value",)
        message = err["msg"]
    elif kind == "missing":
        line, col = file.position(loc[:-1])
        return RuleProblem(file.path, line, col, format_loc(loc), "missing; this key is required")
    elif kind in ("criteria", "step") and isinstance(err["input"], dict) and err["input"]:
        key = next(iter(err["input"]))
        loc = loc + (key,)
        expected = CRITERIA_KEYS if kind == "criteria" else STEP_KEYS
        message = f"unknown {'criterion' if kind == 'criteria' else 'step'} '{key}'; expected one of: {', '.join(expected)}"
    elif kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        if loc[-1:] == ("reenrollment",):
            expected += ", or {cooldown: <duration>}"
        message = f"{_describe(err['input'])} is not allowed; expected one of: {expected}"
    elif kind in _TYPE_WORDS:
        message = f"expected {_TYPE_WORDS[kind]}, got {_describe(err['input'])}"
    elif kind == "too_short":
        message = "must not be empty" if isinstance(err["input"], str) else f"expected at least {ctx.get('min_length', 1)} item(s)"
    elif kind == "too_long" or kind == "string_too_long":
        message = f"too long; expected at most {ctx.get('max_length')} characters/items"
    elif kind == "string_too_short":
        message = "must not be empty"
    elif kind in _BOUNDS:
        sign, key = _BOUNDS[kind]
        message = f"expected a number {sign} {_describe(ctx.get(key))}, got {_describe(err['input'])}"
    else:
        message = err["msg"].removeprefix("Value error, ")
    return file.problem(loc, message)


def _read_sql_segment(path: Path, rel: str) -> tuple[SqlSegment | None, list[RuleProblem]]:
    text, problems = read_rule_text(path, rel)
    if text is None:
        return None, problems
    if not IDENTIFIER.match(path.stem):
        return None, [RuleProblem(rel, 1, 0, "", f"'{path.stem}' is not a valid segment id (the file name); "
                                                 "expected lowercase letters, digits and _ (starting with a letter)")]
    header: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        m = SQL_HEADER.match(line)
        if not m:
            break
        header[m.group(1)] = m.group(2)
    entity = header.get("entity")
    if entity not in ("user", "account"):
        got = f"'{entity}' is not an entity" if entity is not None else "no '-- entity:' header"
        return None, [RuleProblem(rel, 1, 0, "entity", f"{got}; expected a first line '-- entity: user' or '-- entity: account'")]
    body = text.strip()
    if not body or all(line.strip().startswith("--") or not line.strip() for line in body.splitlines()):
        return None, [RuleProblem(rel, 1, 0, "", "no SQL; expected a select returning one column entity_id")]
    return SqlSegment(segment=path.stem, entity=entity, sql=text, description=header.get("description")), []
