"""The fixed set of generated dbt models, built from the typed rules.

Whatever the number of rules, the same models exist (dbt charges per node): features, segment
membership, and per journey the entry candidates, goal, exit and `if` matches, with one CTE per
rule so a model reads like SQL written by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from journeys.compiler.criteria import ENTITY_KEY, CriteriaContext, compile_criteria, event_window, property_column
from journeys.compiler.features import FeatureRegistry
from journeys.compiler.sql import AS_OF, as_timestamp, false_if_null, literal, render
from journeys.contracts import TableContract
from journeys.rules.load import RuleSet
from journeys.rules.model import IfStep, PropertyLeaf, SqlSegment, WaitUntilDateStep, WaitUntilStep, duration_seconds
from journeys.rules.validate import segment_dependencies
from journeys.rules.walk import walk_steps

RUN_CONTEXT = "{{ source('journey_state', 'run_context') }}"
ENROLLMENTS = "{{ source('journey_state', 'enrollments') }}"
MATCH_COLUMNS = {"journey_id": "The journey.", "entity_type": "user or account.", "entity_id": "The matching entity."}


def ref(model: str) -> str:
    return "{{ ref('" + model + "') }}"


@dataclass
class Model:
    """One generated model: import CTEs (name → dbt relation), then logic CTEs, the last named `final`."""

    name: str
    description: str
    columns: dict[str, str]  # documented output columns → description
    imports: list[tuple[str, str]] = field(default_factory=list)
    ctes: list[tuple[str, str, str | None]] = field(default_factory=list)  # (name, sql, rule file it came from)
    materialized: str | None = None  # None: the folder's default (a table)


def members_from_segment_membership(seg_id: str) -> exp.Select:
    """A segment's members as journey-level criteria read them: from the built segment_membership."""
    return exp.select("entity_id").from_("segment_membership").where(exp.EQ(this=exp.column("segment_id"), expression=literal(seg_id)))


@dataclass(frozen=True)
class DateValue:
    """A part of a match model that reads a date property instead of testing criteria."""

    leaf: PropertyLeaf


def _cross_join_run_context(select: exp.Select) -> exp.Select:
    return select.join(exp.alias_(exp.to_table("run_context"), "rc"), join_type="cross")


def _empty(columns: list[str], types: dict[str, str] | None = None) -> str:
    cols = ",\n    ".join(f"cast(null as {(types or {}).get(c, 'varchar')}) as {c}" for c in columns)
    return f"select\n    {cols}\nwhere 1 = 0"


def _as_integer(expression: exp.Expression) -> exp.Expression:
    # sum() of integers is a 128-bit HUGEINT in DuckDB, and re-summing HUGEINTs is ~1.6x slower (bench/RESULTS.md)
    return exp.cast(expression, exp.DataType.build("int"))


def _count_if(condition: exp.Expression) -> exp.Expression:
    return _as_integer(exp.func("sum", exp.If(this=condition, true=exp.Literal.number(1), false=exp.Literal.number(0))))


def _any_row(condition: exp.Expression) -> exp.Expression:
    """Portable bool_or: does any row of the group satisfy the condition?"""
    return exp.EQ(this=exp.func("max", exp.If(this=condition, true=exp.Literal.number(1), false=exp.Literal.number(0))), expression=exp.Literal.number(1))


def _not_after_t(column: exp.Expression) -> exp.Expression:
    """Dated facts count from their date on (a missing date counts as always)."""
    return exp.or_(exp.Is(this=column, expression=exp.null()), exp.LTE(this=column.copy(), expression=AS_OF.copy()))


def _col(alias: str):
    return lambda name: exp.column(name, table=alias)


class ModelBuilder:
    """Builds every generated model from one rule set and its feature registry."""

    def __init__(self, rules: RuleSet, features: FeatureRegistry, contracts: dict[str, TableContract]):
        self.rules, self.features, self.contracts = rules, features, contracts

    def build(self) -> list[Model]:
        return [
            self.event_features(),
            self.user_features(),
            self.account_features(),
            self.segment_membership(),
            self.journey_eligible(),
            self.journey_candidates(),
            self.journey_matches("journey_goal_matches", "goal", "Entities matching each journey's goal at T."),
            self.journey_matches("journey_exit_matches", "blacklist", "Entities matching each journey's exit blacklist at T."),
            self.journey_condition_matches(),
        ]

    def context(self, entity: str, segment_members) -> CriteriaContext:
        segment_entity = lambda seg_id: self.rules.segments[seg_id].entity  # noqa: E731
        return CriteriaContext(entity, self.features, self.contracts, segment_members, segment_entity)

    # ----------------------------------------------------------------------- features

    def event_features(self) -> Model:
        keys = self._event_keys()
        model = Model(
            "event_features",
            f"Event counts per ({', '.join(k.removesuffix('_id') for k in keys)}), one column per distinct (event, where, within) of any rule.",
            {k: f"The {k.removesuffix('_id')} of the events." for k in keys},
            [("events", ref("stg_events")), ("run_context", RUN_CONTEXT)],
        )
        events = self.features.events
        if not events:
            model.ctes.append(("final", _empty(keys), None))
            return model
        e = _col("e")
        select = exp.select(*(e(k) for k in keys))
        for feature, column in events.items():
            condition = exp.and_(exp.EQ(this=e("event_name"), expression=literal(feature.event)), event_window(feature.within, e("occurred_at")))
            if feature.where is not None:
                condition = exp.and_(condition, exp.Paren(this=compile_criteria(feature.where, self.context("user", None))))
            select = select.select(exp.alias_(_count_if(condition), column))
            window = f" within {feature.within}" if feature.within else ""
            # no event name here: dbt renders descriptions with Jinja, and a name is free text
            model.columns[column] = f"Count of one event criterion's events{window}{' matching a where filter' if feature.where else ''}, up to T."
        prefilter = [exp.In(this=e("event_name"), expressions=[literal(n) for n in sorted({f.event for f in events})])]
        if all(f.within for f in events):  # only the widest window needs scanning
            prefilter.append(event_window(max((f.within for f in events), key=duration_seconds), e("occurred_at")))
        else:
            prefilter.append(exp.LTE(this=e("occurred_at"), expression=AS_OF.copy()))
        select = _cross_join_run_context(select.from_(exp.alias_(exp.to_table("events"), "e")))
        select = select.where(exp.and_(*prefilter)).group_by(*(e(k) for k in keys))
        model.ctes.append(("final", render(select), None))
        return model

    def _event_keys(self) -> list[str]:
        """Group events by the levels that count them: both keys only when user and account criteria both do
        (then each level re-aggregates); one level reads its rows as they are."""
        levels = set().union(*self.features.event_levels.values()) if self.features.event_levels else {"user"}
        return [f"{level}_id" for level in ("user", "account") if level in levels]

    def user_features(self) -> Model:
        model = Model(
            "user_features",
            "One row per user: the staged user columns plus every user-level feature the rules use.",
            {"user_id": "The user.", "account_id": "The user's account."},
            [("users", ref("stg_users")), ("entity_attributes", ref("entity_attributes")), ("event_features", ref("event_features"))],
        )
        select = exp.select(exp.Column(this=exp.Star(), table=exp.to_identifier("u"))).from_(exp.alias_(exp.to_table("users"), "u"))
        select = self._join_attributes_and_events(model, select, "user", "u")
        model.ctes.append(("final", render(select), None))
        return model

    def account_features(self) -> Model:
        model = Model(
            "account_features",
            "One row per account: the staged account columns plus every account-level feature the rules use.",
            {"account_id": "The account."},
            [
                ("accounts", ref("stg_accounts")),
                ("milestones", ref("stg_milestones")),
                ("outcomes", ref("stg_outcomes")),
                ("playbook_enrollments", ref("stg_playbook_enrollments")),
                ("account_team", ref("stg_account_team")),
                ("subscriptions", ref("stg_subscriptions")),
                ("entity_attributes", ref("entity_attributes")),
                ("event_features", ref("event_features")),
                ("run_context", RUN_CONTEXT),
            ],
        )
        select = exp.select(exp.Column(this=exp.Star(), table=exp.to_identifier("a"))).from_(exp.alias_(exp.to_table("accounts"), "a"))
        select = self._join_attributes_and_events(model, select, "account", "a")
        select = self._join_account_flags(model, select)
        model.ctes.append(("final", render(select), None))
        return model

    def _join_attributes_and_events(self, model: Model, select: exp.Select, level: str, alias: str) -> exp.Select:
        key = exp.column(f"{level}_id", table=alias)
        custom = [(name, col) for (scope, name), col in self.features.custom.items() if scope == level]
        if custom:
            ea = _col("ea")
            pivot = exp.select(exp.alias_(ea("entity_id"), f"{level}_id"))
            for name, col in custom:
                pivot = pivot.select(exp.alias_(exp.func("max", exp.If(this=exp.EQ(this=ea("name"), expression=literal(name)), true=ea("value"))), col))
                model.columns[col] = f"Custom attribute '{name}' (text; a journey-written value overrides the source value)."
            pivot = pivot.from_(exp.alias_(exp.to_table("entity_attributes"), "ea")).where(
                exp.and_(
                    exp.EQ(this=ea("entity_type"), expression=literal(level)),
                    exp.In(this=ea("name"), expressions=[literal(n) for n, _ in custom]),
                )
            ).group_by(ea("entity_id"))
            model.ctes.append((f"{level}_custom", render(pivot), None))
            select = select.select(*(exp.column(col, table="ca") for _, col in custom))
            select = select.join(exp.alias_(exp.to_table(f"{level}_custom"), "ca"), on=exp.EQ(this=exp.column(f"{level}_id", table="ca"), expression=key.copy()), join_type="left")
        counts = [col for col, levels in self.features.event_levels.items() if level in levels]
        if counts:
            ef = _col("ef")
            events_table = "event_features"
            if self._event_keys() != [f"{level}_id"]:  # rows per (user, account): re-aggregate to this level
                rollup = exp.select(ef(f"{level}_id"), *(exp.alias_(_as_integer(exp.func("sum", ef(c))), c) for c in counts))
                rollup = rollup.from_(exp.alias_(exp.to_table("event_features"), "ef")).group_by(ef(f"{level}_id"))
                model.ctes.append((f"{level}_events", render(rollup), None))
                events_table = f"{level}_events"
            select = select.select(*(exp.alias_(exp.func("coalesce", exp.column(c, table="ev"), exp.Literal.number(0)), c) for c in counts))
            select = select.join(exp.alias_(exp.to_table(events_table), "ev"), on=exp.EQ(this=exp.column(f"{level}_id", table="ev"), expression=key.copy()), join_type="left")
            for c in counts:
                model.columns[c] = f"Count of the {level}'s events for one event criterion (see event_features)."
        return select

    def _join_account_flags(self, model: Model, select: exp.Select) -> exp.Select:
        f = self.features
        m, o, t = _col("m"), _col("o"), _col("t")
        groups = [
            ("milestone_flags", "milestones", "m", "mf",
             [(col, exp.and_(exp.EQ(this=m("milestone"), expression=literal(n)), _not_after_t(m("achieved_at")))) for n, col in f.milestones.items()]),
            ("outcome_flags", "outcomes", "o", "of",
             [(col, exp.and_(exp.EQ(this=o("outcome"), expression=literal(n)), _not_after_t(o("met_at")))) for n, col in f.outcomes.items()]),
            ("playbook_flags", "playbook_enrollments", "p", "pf",
             [(col, _playbook_condition(n, op)) for (n, op), col in f.playbooks.items()]),
            ("team_flags", "account_team", "t", "tf",
             [(col, exp.and_(exp.EQ(this=t("role"), expression=literal(role)),
                             *([exp.EQ(this=t("member"), expression=literal(member))] if member is not None else [])))
              for (role, member), col in f.team.items()]),
            ("subscription_flags", "subscriptions", "s", "sf",
             [(col, compile_criteria(tree, self.context("account", None))) for tree, col in f.subscriptions.items()]),
        ]  # fmt: skip
        for cte, table, alias, join_alias, flags in groups:
            if not flags:
                continue
            key = exp.column("account_id", table=alias)
            flag_select = exp.select(key, *(exp.alias_(_any_row(cond), col) for col, cond in flags))
            flag_select = _cross_join_run_context(flag_select.from_(exp.alias_(exp.to_table(table), alias))).group_by(key.copy())
            model.ctes.append((cte, render(flag_select), None))
            for col, _ in flags:
                select = select.select(exp.alias_(false_if_null(exp.column(col, table=join_alias)), col))
                model.columns[col] = f"Account flag from {table} at T."
            on = exp.EQ(this=exp.column("account_id", table=join_alias), expression=exp.column("account_id", table="a"))
            select = select.join(exp.alias_(exp.to_table(cte), join_alias), on=on, join_type="left")
        return select

    # ----------------------------------------------------------------------- membership and matches

    def _entity_select(self, entity: str, condition: exp.Expression) -> exp.Select:
        """`select <key> as entity_id` over the entity's feature rows (a user row sees its account as `a`)."""
        alias, key = ENTITY_KEY[entity]
        table = "user_features" if entity == "user" else "account_features"
        select = exp.select(exp.alias_(exp.column(key, table=alias), "entity_id")).from_(exp.alias_(exp.to_table(table), alias))
        if entity == "user":
            on = exp.EQ(this=exp.column("account_id", table="a"), expression=exp.column("account_id", table="u"))
            select = select.join(exp.alias_(exp.to_table("account_features"), "a"), on=on, join_type="left")
        return _cross_join_run_context(select).where(condition)

    def segment_membership(self) -> Model:
        model = Model(
            "segment_membership",
            "Current members of every segment at T (one row per segment and entity).",
            {"segment_id": "The segment.", "entity_type": "user or account.", "entity_id": "The member."},
            [("user_features", ref("user_features")), ("account_features", ref("account_features")), ("run_context", RUN_CONTEXT)],
        )
        members = lambda seg_id: exp.select("entity_id").from_(f"seg_{seg_id}")  # noqa: E731
        for seg_id in self._segments_in_dependency_order():
            segment = self.rules.segments[seg_id]
            source = self.rules.files[("segment", seg_id)].path
            if isinstance(segment, SqlSegment):
                body = segment.sql.strip().rstrip(";").rstrip()
                sql = f"select distinct cast(raw_segment.entity_id as varchar) as entity_id\nfrom (\n{body}\n) as raw_segment"
            else:
                sql = render(self._entity_select(segment.entity, compile_criteria(segment.criteria, self.context(segment.entity, members))))
            model.ctes.append((f"seg_{seg_id}", sql, source))
        unions = [
            f"select {render(literal(seg_id))} as segment_id, '{self.rules.segments[seg_id].entity}' as entity_type, entity_id from seg_{seg_id}"
            for seg_id in sorted(self.rules.segments)
        ]
        model.ctes.append(("final", "\nunion all\n".join(unions) or _empty(list(model.columns)), None))
        return model

    def _segments_in_dependency_order(self) -> list[str]:
        order: list[str] = []

        def visit(seg_id: str) -> None:
            if seg_id in order:
                return
            for dep in segment_dependencies(self.rules.segments[seg_id]):
                visit(dep)
            order.append(seg_id)

        for seg_id in sorted(self.rules.segments):
            visit(seg_id)
        return order

    def _journey_entry_segments(self, model: Model) -> bool:
        """A `journey_entry_segments` CTE (journey_id, segment_id); False when no journey has an entry segment."""
        pairs = [(jid, seg) for jid in sorted(self.rules.journeys) for seg in self.rules.journeys[jid].entry.segments]
        if not pairs:
            return False
        rows = ",\n    ".join(f"({render(literal(j))}, {render(literal(s))})" for j, s in pairs)
        model.ctes.append(("journey_entry_segments", f"select * from (\n    values\n    {rows}\n) as entry_segments (journey_id, segment_id)", None))
        return True

    def journey_eligible(self) -> Model:
        # A view: a run reads it only for exit.on_leave_entry, `journeys preview` and `diff` on demand.
        model = Model(
            "journey_eligible",
            "Entities in at least one entry segment of each journey at T (entry candidates).",
            dict(MATCH_COLUMNS),
            [("segment_membership", ref("segment_membership"))],
            materialized="view",
        )
        if not self._journey_entry_segments(model):
            model.ctes.append(("final", _empty(list(model.columns)), None))
            return model
        model.ctes.append((
            "final",
            "select distinct\n    jes.journey_id,\n    sm.entity_type,\n    sm.entity_id\nfrom journey_entry_segments as jes\n"
            "inner join segment_membership as sm\n    on sm.segment_id = jes.segment_id",
            None,
        ))
        return model

    def journey_candidates(self) -> Model:
        model = Model(
            "journey_candidates",
            "Who a journey's goal, exit and step conditions can matter to at T: its entry candidates (a blacklist "
            "suppresses an entry, a goal can be met in the run that enrolls) and its active enrollments as of the "
            "previous run.",
            dict(MATCH_COLUMNS),
            [("journey_eligible", ref("journey_eligible")), ("enrollments", ENROLLMENTS)],
        )
        model.ctes.append((
            "final",
            "select journey_id, entity_type, entity_id from journey_eligible\nunion\n"
            "select journey_id, entity_type, entity_id from enrollments where status = 'active'",
            None,
        ))
        return model

    def _match_model(self, name: str, description: str, extra_columns: dict[str, str], parts: list[tuple[str, str, object, dict]],
                     value_column: str | None = None) -> Model:  # fmt: skip
        """parts: (journey id, entity, criteria or a date property, extra literal columns).

        With `value_column`, a DateValue part selects every entity whose property is set, with its
        value as a timestamp in that column (criteria parts leave it null)."""
        columns_doc = {**MATCH_COLUMNS, **extra_columns}
        if value_column:
            columns_doc[value_column] = "For a wait_until_date step: the entity's date property as a timestamp."
        model = Model(
            name,
            description + " Evaluated only for the journey's candidates: its entry candidates and active enrollments, the only ones a run reads.",
            columns_doc,
            [("user_features", ref("user_features")), ("account_features", ref("account_features")),
             ("segment_membership", ref("segment_membership")), ("candidates", ref("journey_candidates")),
             ("run_context", RUN_CONTEXT)],
        )  # fmt: skip
        by_entity: dict[str, list] = {}
        for part in parts:
            by_entity.setdefault(part[1], []).append(part)
        for entity, entity_parts in by_entity.items():
            model.ctes.extend(self._entity_matches(entity, entity_parts, bool(extra_columns), value_column))
        columns = ["journey_id", *extra_columns, "entity_type", "entity_id", *([value_column] if value_column else [])]
        unions = [f"select {', '.join(columns)} from {entity}_matches" for entity in by_entity]
        model.ctes.append(("final", "\nunion all\n".join(unions) or _empty(columns, {value_column: "timestamp"} if value_column else None), None))
        return model

    def _entity_matches(self, entity: str, parts: list, per_step: bool, value_column: str | None) -> list[tuple[str, str, None]]:
        """One pass over the candidates of every journey of this entity type: each row is tested with its own
        journey's (or step's) criteria in a `case`, one branch per rule. A CTE per rule would join the feature
        tables once per rule (10x slower with 100 journeys, bench/RESULTS.md)."""
        ctx = self.context(entity, members_from_segment_membership)
        alias, key = ENTITY_KEY[entity]
        ctes, branches, values = [], [], []
        for journey_id, _, tree, extra in parts:
            match_key = f"{journey_id}:{extra['step_id']}" if per_step else journey_id
            where = f"-- from {self.rules.files[('journey', journey_id)].path}" + (f" step {extra['step_id']}" if per_step else "")
            if isinstance(tree, DateValue):
                column, kind = property_column(tree.leaf, ctx)
                value = as_timestamp(column, text=kind != "time")
                values.append((match_key, render(value)))
                condition = render(exp.not_(exp.Is(this=value.copy(), expression=exp.null())))
            else:
                condition = render(compile_criteria(tree, ctx))
            branches.append(f"{where}\nwhen {render(literal(match_key))} then (\n{_indent(condition)}\n)")
        joins = ["from candidates as c"]
        if per_step:
            steps = [(j, e["step_id"]) for j, _, _, e in parts]
            rows = ",\n    ".join(f"({render(literal(j))}, {render(literal(step))}, {render(literal(j + ':' + step))})" for j, step in steps)
            ctes.append((f"{entity}_match_steps", f"select * from (\n    values\n    {rows}\n) as match_steps (journey_id, step_id, match_key)", None))
            joins.append(f"inner join {entity}_match_steps as s on s.journey_id = c.journey_id")
        table = "user_features" if entity == "user" else "account_features"
        joins.append(f"inner join {table} as {alias} on {alias}.{key} = c.entity_id")
        if entity == "user":
            joins.append("left join account_features as a on a.account_id = u.account_id")
        joins.append("cross join run_context as rc")
        match_key_sql = "s.match_key" if per_step else "c.journey_id"
        columns = ["c.journey_id", *(["s.step_id"] if per_step else []), f"'{entity}' as entity_type", f"{alias}.{key} as entity_id"]
        if value_column:
            whens = "\n".join(f"    when {render(literal(k))} then {v}" for k, v in values)
            columns.append(f"case {match_key_sql}\n{whens}\nend as {value_column}" if values else f"cast(null as timestamp) as {value_column}")
        select_list = _indent(",\n".join(columns))
        sql = (f"select\n{select_list}\n" + "\n".join(joins) + f"\nwhere c.entity_type = '{entity}'\n"
               f"  and case {match_key_sql}\n{_indent(chr(10).join(branches))}\n    else false\n  end")
        ctes.append((f"{entity}_matches", sql, None))
        return ctes

    def journey_matches(self, name: str, which: str, description: str) -> Model:
        parts = []
        for jid in sorted(self.rules.journeys):
            journey = self.rules.journeys[jid]
            tree = journey.goal.criteria if which == "goal" and journey.goal else (
                journey.exit.blacklist if which == "blacklist" and journey.exit else None)
            if tree is not None:
                parts.append((jid, journey.entity, tree, {}))
        return self._match_model(name, description, {}, parts)

    def journey_condition_matches(self) -> Model:
        parts = []
        for jid in sorted(self.rules.journeys):
            journey = self.rules.journeys[jid]
            for step, _, step_id in walk_steps(journey.actions, ()):
                if isinstance(step, IfStep):
                    parts.append((jid, journey.entity, step.if_, {"step_id": step_id}))
                elif isinstance(step, WaitUntilStep):
                    parts.append((jid, journey.entity, step.wait_until.criteria, {"step_id": step_id}))
                elif isinstance(step, WaitUntilDateStep):
                    date = DateValue(PropertyLeaf(property=step.wait_until_date.property, op="is_set"))
                    parts.append((jid, journey.entity, date, {"step_id": step_id}))
        return self._match_model(
            "journey_condition_matches",
            "Per journey step, the entities whose `if` / `wait_until` criteria hold at T, and the date a "
            "`wait_until_date` step reads (read when an enrollment reaches the step).",
            {"step_id": "The step (its position, e.g. 3 or 3.then.1)."},
            parts,
            value_column="value_at",
        )


def _indent(text: str, spaces: int = 4) -> str:
    return "\n".join((" " * spaces + line) if line else line for line in text.split("\n"))


def _playbook_condition(name: str, op: str) -> exp.Expression:
    p = _col("p")
    this = exp.and_(exp.EQ(this=p("playbook"), expression=literal(name)), _not_after_t(p("enrolled_at")))
    active = exp.or_(exp.EQ(this=p("status"), expression=literal("active")), exp.GT(this=p("completed_at"), expression=AS_OF.copy()))
    if op == "active_in":
        return exp.and_(this, exp.Paren(this=active))
    if op == "has_completed":
        return exp.and_(this, exp.EQ(this=p("status"), expression=literal("completed")), _not_after_t(p("completed_at")))
    if op == "is_overdue":
        return exp.and_(this, exp.Paren(this=active), exp.LT(this=p("due_at"), expression=AS_OF.copy()))
    return this  # never_enrolled: the column is "ever enrolled"; the criterion negates it
