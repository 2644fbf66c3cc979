"""Cross-file checks: references, cycles, properties against the contracts, templates, escape hatches."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from jinja2 import TemplateSyntaxError, nodes

from journeys.contracts import TableContract, load_contracts
from journeys.errors import RuleError, RuleProblem
from journeys.rules.load import MAX_NESTING, RuleFile, RuleSet, load_rules, read_rule_text
from journeys.rules.model import (
    MAX_DURATION_WORDS,
    RELATIVE_TIME,
    AllOf,
    AnyOf,
    CopyAttributeStep,
    CreateTaskStep,
    IfStep,
    Journey,
    PropertyLeaf,
    PropertyPath,
    Segment,
    SegmentLeaf,
    SendEmailStep,
    SqlLeaf,
    SqlSegment,
    NotOf,
    WaitUntilDateStep,
    WaitUntilStep,
    WebhookStep,
    duration_seconds,
    too_long,
)
from journeys.rules.sql_text import SqlTextError, check_sql_segment, parse_sql_leaf
from journeys.rules.templates import template_environment
from journeys.rules.walk import walk_criteria, walk_steps

# What each kind of value may be compared with.
OPS_BY_KIND = {
    "text": {"equal_to", "not_equal_to", "contains", "does_not_contain", "in", "not_in", "is_set", "is_not_set"},
    "number": {"more_than", "less_than", "equal_to", "not_equal_to", "in", "not_in", "between", "is_set", "is_not_set"},
    "time": {"before", "after", "between", "equal_to", "not_equal_to", "is_set", "is_not_set"},
    "boolean": {"equal_to", "not_equal_to", "is_set", "is_not_set"},
    "json": {"is_set", "is_not_set"},
}
NUMERIC_OPS = {"more_than", "less_than"}
TIME_OPS = {"before", "after"}
EMAIL_RECIPIENTS = ("csm", "sales_manager", "users")


def load_and_validate(project_dir: Path) -> RuleSet:
    """Parse and check every rule file; raise RuleError listing all problems, before any SQL runs."""
    rules, problems = load_rules(project_dir)
    problems += validate_rules(rules, load_contracts(project_dir))
    if problems:
        raise RuleError(problems)
    return rules


def validate_rules(rules: RuleSet, contracts: dict[str, TableContract]) -> list[RuleProblem]:
    problems: list[RuleProblem] = []
    for seg_id, segment in rules.segments.items():
        file = rules.files[("segment", seg_id)]
        if isinstance(segment, SqlSegment):
            try:
                check_sql_segment(segment.sql, contracts)
            except SqlTextError as e:
                problems.append(RuleProblem(file.path, e.line or 1, 0, "sql", str(e)))
            continue
        problems += _check_criteria(rules, contracts, file, segment.criteria, ("criteria",), segment.entity)
    problems += _segment_cycles(rules)
    problems += validate_settings(rules, contracts)
    for journey_id, journey in rules.journeys.items():
        problems += _check_journey(rules, contracts, rules.files[("journey", journey_id)], journey)
    return problems


def _check_journey(rules: RuleSet, contracts, file: RuleFile, journey: Journey) -> list[RuleProblem]:
    problems = []
    for i, seg_id in enumerate(journey.entry.segments):
        loc = ("entry", "segments", i)
        segment = rules.segments.get(seg_id)
        if segment is None:
            if ("segment", seg_id) not in rules.broken_ids:
                problems.append(file.problem(loc, f"unknown segment '{seg_id}'; expected one of: {_names(rules.segments)}"))
        elif segment.entity != journey.entity:
            problems.append(file.problem(loc, f"segment '{seg_id}' is a{_n(segment.entity)} {segment.entity} segment; expected a{_n(journey.entity)} {journey.entity} segment"))
    if journey.exit:
        for i, other in enumerate(journey.exit.unenroll_from):
            loc = ("exit", "unenroll_from", i)
            if other == journey.journey:
                problems.append(file.problem(loc, "a journey cannot unenroll from itself; expected another journey"))
            elif other not in rules.journeys and ("journey", other) not in rules.broken_ids:
                problems.append(file.problem(loc, f"unknown journey '{other}'; expected one of: {_names(rules.journeys)}"))
            elif other in rules.journeys and rules.journeys[other].entity != journey.entity:
                problems.append(file.problem(loc, f"journey '{other}' is a{_n(rules.journeys[other].entity)} {rules.journeys[other].entity} journey; expected a{_n(journey.entity)} {journey.entity} journey"))
        if journey.exit.blacklist is not None:
            problems += _check_criteria(rules, contracts, file, journey.exit.blacklist, ("exit", "blacklist"), journey.entity)
    if journey.goal:
        problems += _check_criteria(rules, contracts, file, journey.goal.criteria, ("goal", "criteria"), journey.entity)
    for step, loc, _ in walk_steps(journey.actions, ("actions",)):
        if isinstance(step, IfStep):
            problems += _check_criteria(rules, contracts, file, step.if_, loc + ("if",), journey.entity)
        elif isinstance(step, SendEmailStep):
            problems += _check_email(rules, contracts, file, step, loc, journey)
        elif isinstance(step, CreateTaskStep):
            problems += _check_template_text(contracts, file, step.create_task.title, loc + ("create_task", "title"), journey)
            if step.create_task.notes:
                problems += _check_template_text(contracts, file, step.create_task.notes, loc + ("create_task", "notes"), journey)
        elif isinstance(step, CopyAttributeStep):
            path = PropertyPath.parse(step.copy_attribute.from_)
            problems += _check_path(contracts, file, path, loc + ("copy_attribute", "from"), journey.entity, "entity")
        elif isinstance(step, WaitUntilStep):
            problems += _check_criteria(rules, contracts, file, step.wait_until.criteria, loc + ("wait_until", "criteria"), journey.entity)
        elif isinstance(step, WaitUntilDateStep):
            problems += _check_date_property(contracts, file, step.wait_until_date.property, loc + ("wait_until_date", "property"), journey.entity)
        elif isinstance(step, WebhookStep):
            problems += _check_webhook(rules, contracts, file, step, loc, journey)
    return problems


def _check_date_property(contracts, file: RuleFile, text: str, loc, entity: str) -> list[RuleProblem]:
    """A wait_until_date needs a date or timestamp: a time column, or a custom attribute holding ISO text."""
    path = PropertyPath.parse(text)
    if path.scope not in ("user", "account") or (entity == "account" and path.scope == "user"):
        # _check_path would speak of "a user criterion"; a wait_until_date is not one
        if entity == "user":
            whose, expected = "the user or its account", "user.<column>, user.custom.<name>, account.<column> or account.custom.<name>"
        else:
            whose, expected = "the account", "account.<column> or account.custom.<name>"
        return [file.problem(loc, f"{path} cannot be used in wait_until_date; expected a date of {whose}: {expected}")]
    problems = _check_path(contracts, file, path, loc, entity, "entity")
    if problems:
        return problems
    kind = property_kind(contracts, path)
    if kind not in (None, "time"):
        return [file.problem(loc, f"{path} is a {kind} property; expected a date or timestamp property (or a custom attribute holding ISO dates)")]
    return []


def _check_webhook(rules: RuleSet, contracts, file: RuleFile, step: WebhookStep, loc, journey: Journey) -> list[RuleProblem]:
    hook, problems = step.webhook, []
    allow = rules.settings.webhooks
    if not allow.allows(hook.url):
        allowed = ", ".join(allow.allow) or "nothing yet (add webhooks.allow to journeys.yml)"
        problems.append(file.problem(loc + ("webhook", "url"), f"'{hook.url}' is not allowed by journeys.yml webhooks.allow; expected a URL starting with: {allowed}"))
    for key_loc, text in _template_strings(hook.body, loc + ("webhook", "body")):
        problems += _check_template_text(contracts, file, text, key_loc, journey)
    for name, text in hook.headers.items():
        problems += _check_template_text(contracts, file, text, loc + ("webhook", "headers", name), journey)
    return problems


def _template_strings(value, loc):
    """Every text inside a JSON body, with its location (each is rendered as a template)."""
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _template_strings(item, loc + (key,))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _template_strings(item, loc + (i,))


def validate_settings(rules: RuleSet, contracts) -> list[RuleProblem]:
    """journeys.yml facts that need the contracts: the send window's timezone property exists."""
    window, file = rules.settings.send_window, rules.settings_file
    if window is None or window.timezone_property is None or file is None:
        return []
    path = PropertyPath.parse(window.timezone_property)
    return _check_path(contracts, file, path, ("send_window", "timezone_property"), "user", "entity")


def _check_email(rules: RuleSet, contracts, file: RuleFile, step: SendEmailStep, loc, journey: Journey) -> list[RuleProblem]:
    email, problems = step.send_email, []
    template = rules.templates.get(email.template)
    if template is None:
        names = sorted({p.stem for p in rules.templates.values()})
        problems.append(
            file.problem(loc + ("send_email", "template"), f"unknown template '{email.template}'; expected a file in sql_rules/templates/ "
                         f"({', '.join(names) or 'none there'})")
        )
    else:
        rel = template.relative_to(rules.project_dir).as_posix()
        text, read_problems = read_rule_text(template, rel)  # the size limit and UTF-8, as for rule files
        problems += read_problems
        if text is not None:
            problems += _check_template_text(contracts, RuleFile(rel), text, (), journey, whole_file=True)
    if email.subject:
        problems += _check_template_text(contracts, file, email.subject, loc + ("send_email", "subject"), journey)
    if journey.entity == "account" and not email.to:
        problems.append(file.problem(loc + ("send_email",), f"an account journey must name 'to'; expected one of: {', '.join(EMAIL_RECIPIENTS)} or an address"))
    if email.to and email.to not in EMAIL_RECIPIENTS and "@" not in email.to:
        problems.append(file.problem(loc + ("send_email", "to"), f"'{email.to}' is not a recipient; expected one of: {', '.join(EMAIL_RECIPIENTS)} or an address"))
    return problems


def _check_template_text(contracts, file: RuleFile, text: str, loc, journey: Journey, whole_file: bool = False) -> list[RuleProblem]:
    """Templates compile in the sandbox and use only known variables, columns, filters and tests."""

    def problem(line: int | None, message: str) -> RuleProblem:
        return RuleProblem(file.path, line or 1, 0, "", message) if whole_file else file.problem(loc, message)

    env = template_environment()
    deepest, deepest_line = _template_depth(text)
    if deepest > MAX_NESTING:
        return [problem(deepest_line, TEMPLATE_TOO_DEEP)]
    try:
        tree = env.parse(text)
    except TemplateSyntaxError as e:
        return [problem(e.lineno, f"template syntax: {e.message}")]
    except RecursionError:  # Jinja's parser recurses per bracket: it may give up before MAX_NESTING
        return [problem(deepest_line, TEMPLATE_TOO_DEEP)]
    problems = [problem(node.lineno, message) for node, message in _unsupported_template_nodes(env, tree)]
    allowed = _template_variables(contracts, journey.entity)
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    for name in tree.find_all(nodes.Name):
        if name.ctx != "load" or name.name in assigned:
            continue
        if name.name not in allowed:
            expected = ", ".join(sorted(allowed))
            problems.append(problem(name.lineno, f"unknown template variable '{name.name}'; expected one of: {expected}"))
    for attr in tree.find_all(nodes.Getattr):
        if isinstance(attr.node, nodes.Name) and attr.node.name in allowed and allowed[attr.node.name] is not None:
            if attr.attr not in allowed[attr.node.name]:
                fields = ", ".join(sorted(allowed[attr.node.name]))
                problems.append(problem(attr.lineno, f"unknown field '{attr.node.name}.{attr.attr}'; expected one of: {fields}"))
    return problems


TEMPLATE_TOO_DEEP = f"template nested more than {MAX_NESTING} levels deep (blocks and brackets); expected a flatter one"
# Templates are rendered alone, from a string: there is nothing to include, import or extend.
_LOADING_NODES = {
    nodes.Include: "include", nodes.Import: "import", nodes.FromImport: "from ... import", nodes.Extends: "extends",
}  # fmt: skip
_BLOCK_TAGS = {"if", "for", "macro", "call", "filter", "with", "block", "autoescape", "trans"}
_BRACKETS = {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}


def _template_depth(text: str) -> tuple[int, int]:
    """The deepest nesting of blocks and brackets, and its line, from Jinja's lexer (which does not recurse)."""
    depth = deepest = 0
    deepest_line, after_block_begin = 1, False
    try:
        for line, kind, value in template_environment().lex(text):
            if kind == "whitespace":
                continue
            if after_block_begin and kind == "name":  # a tag: {% if %} opens, {% endif %} closes
                depth += (value in _BLOCK_TAGS) - (value.startswith("end") and value[3:] in _BLOCK_TAGS)
            elif kind == "operator":
                depth += _BRACKETS.get(value, 0)
            after_block_begin = kind == "block_begin"
            if depth > deepest:
                deepest, deepest_line = depth, line
    except TemplateSyntaxError:
        pass  # parse reports it
    return deepest, deepest_line


def _unsupported_template_nodes(env, tree):
    """(node, message) for what env.parse accepts but rendering would refuse: unknown filters and tests
    (resolved only when compiled) and include/import/extends (templates have no loader)."""
    for node in tree.find_all((nodes.Filter, nodes.Test, *_LOADING_NODES)):
        if isinstance(node, nodes.Filter) and node.name not in env.filters:
            yield node, f"unknown filter '{node.name}'; expected one of: {_names(env.filters)}"
        elif isinstance(node, nodes.Test) and node.name not in env.tests:
            yield node, f"unknown test '{node.name}'; expected one of: {_names(env.tests)}"
        elif type(node) in _LOADING_NODES:
            tag = _LOADING_NODES[type(node)]
            yield node, f"{{% {tag} %}} is not supported: a template is rendered alone; expected the text written out"


def _template_variables(contracts, entity: str) -> dict[str, set[str] | None]:
    """Names a template may use, with their allowed fields (None: any)."""
    user = set(contracts["users"].names) | {"custom"}
    account = set(contracts["accounts"].names) | {"custom"}
    variables: dict[str, set[str] | None] = {"account": account, "journey": {"id", "name"}, "action_key": None, "recipient": None}
    variables["entity"] = user if entity == "user" else account
    variables["user"] = user  # for an account journey mailing `users`, the recipient user
    return variables


def _check_criteria(rules: RuleSet, contracts, file: RuleFile, tree, loc, entity: str) -> list[RuleProblem]:
    problems = []
    for node, node_loc, scope in walk_criteria(tree, loc):
        if isinstance(node, PropertyLeaf):
            problems += _check_property(contracts, file, node, node_loc, entity, scope)
        elif scope != "entity" and not _is_boolean_node(node):
            inside = "an event's where" if scope == "event" else "a subscription criterion"
            prop = "event.<key>" if scope == "event" else "subscription.<column>"
            problems.append(file.problem(node_loc, f"only {prop} properties may be used inside {inside}; expected property, all, any or not"))
        elif isinstance(node, SegmentLeaf):
            target = rules.segments.get(node.segment)
            if target is None:
                if ("segment", node.segment) not in rules.broken_ids:
                    problems.append(file.problem(node_loc + ("segment",), f"unknown segment '{node.segment}'; expected one of: {_names(rules.segments)}"))
            elif target.entity == "user" and entity == "account":
                problems.append(file.problem(node_loc + ("segment",), f"segment '{node.segment}' is a user segment; an account criterion needs an account segment"))
        elif isinstance(node, SqlLeaf):
            try:
                parse_sql_leaf(node.sql, entity, contracts)
            except SqlTextError as e:
                problems.append(file.problem(node_loc + ("sql",), str(e)))
    return problems


def _is_boolean_node(node) -> bool:
    return isinstance(node, (AllOf, AnyOf, NotOf))


def _check_property(contracts, file: RuleFile, leaf: PropertyLeaf, loc, entity: str, scope: str) -> list[RuleProblem]:
    path = leaf.path
    problems = _check_path(contracts, file, path, loc + ("property",), entity, scope)
    if problems:
        return problems
    kind = property_kind(contracts, path)
    if kind is not None and leaf.op not in OPS_BY_KIND[kind]:
        return [file.problem(loc + ("op",), f"op '{leaf.op}' does not apply to {kind} property {path}; expected one of: {', '.join(sorted(OPS_BY_KIND[kind]))}")]
    return _check_value(file, leaf, loc, kind)


def _check_path(contracts, file: RuleFile, path: PropertyPath, loc, entity: str, scope: str) -> list[RuleProblem]:
    allowed_scopes = {"entity": {"user", "account"} if entity == "user" else {"account"}, "subscription": {"subscription"}, "event": {"event"}}[scope]
    if path.scope not in allowed_scopes:
        where = {"entity": f"a{_n(entity)} {entity} criterion", "subscription": "a subscription criterion", "event": "an event's where"}[scope]
        expected = ", ".join(f"{s}.*" for s in sorted(allowed_scopes))
        if path.scope == "event":
            expected += " (event.* only inside an event's where)"
        return [file.problem(loc, f"{path} cannot be used in {where}; expected {expected}")]
    if path.custom or path.scope == "event":
        return []
    table = {"user": "users", "account": "accounts", "subscription": "subscriptions"}[path.scope]
    if contracts[table].column(path.name) is None:
        return [file.problem(loc, f"unknown column '{path.name}' of {table}; expected one of: {', '.join(contracts[table].names)}")]
    return []


def property_kind(contracts, path: PropertyPath) -> str | None:
    """The contract kind of a column property; None for untyped text (custom attributes, event JSON)."""
    if path.custom or path.scope == "event":
        return None
    table = {"user": "users", "account": "accounts", "subscription": "subscriptions"}[path.scope]
    return contracts[table].column(path.name).kind


def _check_value(file: RuleFile, leaf: PropertyLeaf, loc, kind: str | None) -> list[RuleProblem]:
    values = leaf.value if isinstance(leaf.value, tuple) else (leaf.value,) if leaf.value is not None else ()
    op = leaf.op
    wants_time = op in TIME_OPS or (kind == "time" and op in ("between", "equal_to", "not_equal_to"))
    wants_number = op in NUMERIC_OPS or (kind == "number" and op not in ("is_set", "is_not_set"))
    if op == "between" and kind is None:
        wants_time = all(isinstance(v, str) for v in values)
        wants_number = not wants_time
    for v in values:
        if wants_time and not is_time_value(v):
            return [file.problem(loc + ("value",), f"{v!r} is not a time; expected an ISO date/timestamp or a relative time like -30d or +7d")]
        if wants_time and RELATIVE_TIME.match(v) and too_long(v):  # far past year 9999: Python dates overflow
            message = f"{v!r} is too far from T; expected a relative time of at most {MAX_DURATION_WORDS}"
            return [file.problem(loc + ("value",), message)]
        if wants_number and (isinstance(v, bool) or not isinstance(v, (int, float))):
            return [file.problem(loc + ("value",), f"{v!r} is not a number; expected a number for op '{op}'")]
        if kind == "boolean" and not isinstance(v, bool):
            return [file.problem(loc + ("value",), f"{v!r} is not a boolean; expected true or false")]
        if op in ("contains", "does_not_contain") and not isinstance(v, str):
            return [file.problem(loc + ("value",), f"{v!r} is not text; expected text for op '{op}'")]
    if op == "between" and len(values) == 2 and _same_footing(values) and _comparable(values[0]) > _comparable(values[1]):
        return [file.problem(loc + ("value",), f"[{values[0]}, {values[1]}] is empty; expected [low, high] with low <= high")]
    return []


def is_time_value(value) -> bool:
    if not isinstance(value, str):
        return False
    if RELATIVE_TIME.match(value):
        return True
    try:
        dt.datetime.fromisoformat(value)
        return True
    except ValueError:
        return False


def _same_footing(values) -> bool:
    """Two bounds can be ordered here when both are numbers, both relative times or both ISO times."""
    kinds = {"number" if isinstance(x, (int, float)) else "relative" if RELATIVE_TIME.match(x) else "absolute" for x in values}
    return len(kinds) == 1


def _comparable(value):
    """A sort key for between bounds: numbers as is, relative times in seconds, ISO times as timestamps."""
    if isinstance(value, (int, float)):
        return value
    if RELATIVE_TIME.match(value):
        return dt.datetime(2000, 1, 1) + dt.timedelta(seconds=duration_seconds(value))
    parsed = dt.datetime.fromisoformat(value)
    return parsed.astimezone(dt.timezone.utc).replace(tzinfo=None) if parsed.tzinfo else parsed


def _segment_cycles(rules: RuleSet) -> list[RuleProblem]:
    """A segment may use others, but never itself through any chain."""
    graph = {sid: segment_dependencies(seg) for sid, seg in rules.segments.items()}
    problems, state = [], {}

    def visit(sid: str, chain: list[str]) -> None:
        state[sid] = "visiting"
        for dep in graph.get(sid, ()):
            if state.get(dep) == "visiting":
                cycle = chain[chain.index(dep):] + [dep] if dep in chain else [sid, dep]
                file = rules.files[("segment", sid)]
                loc = next(loc for node, loc, _ in walk_criteria(rules.segments[sid].criteria, ("criteria",))
                           if isinstance(node, SegmentLeaf) and node.segment == dep)
                problems.append(file.problem(loc + ("segment",), f"segment cycle {' -> '.join(cycle)}; expected segments that do not refer back to themselves"))
            elif dep in graph and dep not in state:
                visit(dep, chain + [dep])
        state[sid] = "done"

    for sid in sorted(graph):
        if sid not in state:
            visit(sid, [sid])
    return problems


def segment_dependencies(segment: Segment | SqlSegment) -> list[str]:
    if isinstance(segment, SqlSegment):
        return []
    return sorted({n.segment for n, _, _ in walk_criteria(segment.criteria, ()) if isinstance(n, SegmentLeaf)})


def _n(word: str) -> str:
    """The article's n: `an account`, `a user`."""
    return "n" if word[:1] in "aeio" else ""  # not u: `a user`


def _names(mapping: dict) -> str:
    """The sorted names (not Jinja's operator aliases of tests like `==`), or a word for none."""
    return ", ".join(sorted(name for name in mapping if name.isidentifier())) or "(none defined)"
