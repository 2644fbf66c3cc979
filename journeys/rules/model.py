"""Typed rule objects: segments, journeys, criteria and action steps, validated on construction.

Every model is frozen and hashable, so identical criteria (e.g. the same event filter in ten
journeys) compare equal and the compiler can compute them once. Shapes are checked here;
cross-file facts (does the segment exist, is the column a date) are checked in validate.py.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator
from pydantic_core import PydanticCustomError

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
DURATION = re.compile(r"^([1-9][0-9]{0,5})([mhdw])$")
RELATIVE_TIME = re.compile(r"^([+-])([0-9]{1,6})([mhdw])$")
SPAN = re.compile(r"^[+-]?([0-9]{1,6})([mhdw])$")  # either of the above, for arithmetic
ATTRIBUTE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
JSON_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# T + D must stay a date Python and the engine can hold (999999w is 19,000 years): a century is plenty.
MAX_DURATION_SECONDS = 100 * 365 * 86400
MAX_DURATION_WORDS = "100 years (36500d, 5214w)"

Scalar = Union[bool, int, float, str]


def _identifier(value: Any) -> str:
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise PydanticCustomError(
            "identifier", "'{value}' is not a valid id; expected lowercase letters, digits and _ (starting with a letter)", {"value": value}
        )
    return value


def duration_seconds(text: str) -> int:
    """`30m`, `12h`, `2d`, `1w` (or a signed relative time `-30d`) in seconds."""
    m = SPAN.match(text)
    sign = -1 if text.startswith("-") else 1
    return sign * int(m.group(1)) * UNIT_SECONDS[m.group(2)]


def too_long(text: str) -> bool:
    """A duration or relative time (already matched) further than MAX_DURATION_SECONDS."""
    return abs(duration_seconds(text)) > MAX_DURATION_SECONDS


def _duration(value: Any) -> str:
    if not isinstance(value, str) or not DURATION.match(value):
        raise PydanticCustomError(
            "duration", "'{value}' is not a duration; expected a number and a unit m, h, d or w, e.g. 30m, 12h, 2d, 1w", {"value": value}
        )
    if too_long(value):
        raise PydanticCustomError(
            "duration", "'{value}' is too long; expected at most {most}", {"value": value, "most": MAX_DURATION_WORDS}
        )
    return value


Identifier = Annotated[str, BeforeValidator(_identifier)]
DurationText = Annotated[str, BeforeValidator(_duration)]


class Strict(BaseModel):
    """A mapping whose keys are all known: an unknown key is an error naming the expected ones."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise PydanticCustomError("mapping", "expected a mapping with keys: {expected}", {"expected": ", ".join(cls.keys())})
        unknown = [k for k in data if k not in cls.keys()]
        if unknown:
            raise PydanticCustomError(
                "unknown_key",
                "unknown key '{key}'; expected one of: {expected}",
                {"key": str(unknown[0]), "expected": ", ".join(cls.keys())},
            )
        return data

    @classmethod
    def keys(cls) -> list[str]:
        return [f.alias or name for name, f in cls.model_fields.items()]


# --------------------------------------------------------------------------- criteria

PROPERTY_OPS = (
    "more_than", "less_than", "equal_to", "not_equal_to", "contains", "does_not_contain",
    "in", "not_in", "between", "before", "after", "is_set", "is_not_set",
)  # fmt: skip
PropertyOp = Literal[
    "more_than", "less_than", "equal_to", "not_equal_to", "contains", "does_not_contain",
    "in", "not_in", "between", "before", "after", "is_set", "is_not_set",
]  # fmt: skip
PROPERTY_PATH = re.compile(
    r"^(?:(user|account)\.custom\.([A-Za-z_][A-Za-z0-9_]*)"
    r"|(user|account|subscription)\.([a-z_][a-z0-9_]*)"
    r"|event\.([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*))$"
)


def normalize_scalar(value: Any) -> Scalar:
    """YAML gives dates as date objects; the rule language keeps them as ISO text."""
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (bool, int, float, str)):
        return value
    raise PydanticCustomError("scalar", "expected a text, number, boolean or date value, got {kind}", {"kind": type(value).__name__})


class PropertyPath(BaseModel):
    """A parsed property reference: scope (user/account/subscription/event), custom or column, name."""

    model_config = ConfigDict(frozen=True)
    scope: Literal["user", "account", "subscription", "event"]
    custom: bool
    name: str  # column, custom attribute name, or dotted JSON key

    @classmethod
    def parse(cls, text: str) -> "PropertyPath":
        m = PROPERTY_PATH.match(text)
        if not m:
            raise PydanticCustomError(
                "property_path",
                "'{value}' is not a property; expected user.<column>, account.<column>, user.custom.<name>, "
                "account.custom.<name>, subscription.<column> or event.<key>",
                {"value": text},
            )
        if m.group(1):
            return cls(scope=m.group(1), custom=True, name=m.group(2))
        if m.group(3):
            return cls(scope=m.group(3), custom=False, name=m.group(4))
        return cls(scope="event", custom=False, name=m.group(5))

    def __str__(self) -> str:
        return f"{self.scope}.custom.{self.name}" if self.custom else f"{self.scope}.{self.name}"


def _property_path(value: str) -> str:
    PropertyPath.parse(value)  # raises the readable error of a bad path
    return value


# A property reference kept as written, checked to parse (user.plan, account.custom.tier, ...).
PropertyPathText = Annotated[str, AfterValidator(_property_path)]


class PropertyLeaf(Strict):
    property: PropertyPathText
    op: PropertyOp
    value: Any = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> "PropertyLeaf":
        op, value = self.op, self.value
        if op in ("is_set", "is_not_set"):
            if value is not None:
                raise PydanticCustomError("value", "op '{op}' takes no value; remove 'value'", {"op": op})
            return self
        if value is None:
            raise PydanticCustomError("value", "op '{op}' needs a 'value'", {"op": op})
        if op == "between":
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise PydanticCustomError("value", "op 'between' needs 'value: [low, high]' (two values)", {})
            object.__setattr__(self, "value", tuple(normalize_scalar(v) for v in value))
        elif op in ("in", "not_in"):
            if not isinstance(value, (list, tuple)) or not value:
                raise PydanticCustomError("value", "op '{op}' needs a non-empty list of values", {"op": op})
            items = tuple(normalize_scalar(v) for v in value)
            if len({_value_kind(v) for v in items}) > 1:
                raise PydanticCustomError("value", "op '{op}' needs values of one kind (all numbers or all text)", {"op": op})
            object.__setattr__(self, "value", items)
        else:
            if isinstance(value, (list, tuple, dict)):
                raise PydanticCustomError("value", "op '{op}' needs a single value, not a list or mapping", {"op": op})
            object.__setattr__(self, "value", normalize_scalar(value))
        return self

    @property
    def path(self) -> PropertyPath:
        return PropertyPath.parse(self.property)


def _value_kind(value: Scalar) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "text"


class SegmentLeaf(Strict):
    segment: Identifier
    op: Literal["has_met", "has_not_met"]


class MilestoneLeaf(Strict):
    milestone: str = Field(min_length=1, max_length=200)
    op: Literal["has_met", "has_not_met"]


class OutcomeLeaf(Strict):
    outcome: str = Field(min_length=1, max_length=200)
    op: Literal["has_met", "has_not_met"]


class PlaybookLeaf(Strict):
    playbook: str = Field(min_length=1, max_length=200)
    op: Literal["active_in", "never_enrolled", "has_completed", "is_overdue"]


class TeamLeaf(Strict):
    team: Literal["csm", "sales_manager"]
    op: Literal["equal_to", "not_equal_to", "is_set", "is_not_set"]
    value: str | None = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> "TeamLeaf":
        if self.op in ("equal_to", "not_equal_to") and not self.value:
            raise PydanticCustomError("value", "op '{op}' needs a 'value' (the member's email)", {"op": self.op})
        if self.op in ("is_set", "is_not_set") and self.value is not None:
            raise PydanticCustomError("value", "op '{op}' takes no value; remove 'value'", {"op": self.op})
        return self


class EventCount(Strict):
    at_least: int | None = Field(default=None, ge=0)
    at_most: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_bound(self) -> "EventCount":
        if (self.at_least is None) == (self.at_most is None):
            raise PydanticCustomError("count", "expected exactly one of 'at_least' or 'at_most'", {})
        return self


class EventLeaf(Strict):
    event: str = Field(min_length=1, max_length=200)
    op: Literal["performed", "not_performed"]
    where: "Criteria | None" = None
    count: EventCount | None = None
    within: DurationText | None = None


class SubscriptionLeaf(Strict):
    subscription: "Criteria"


class SqlLeaf(Strict):
    sql: str = Field(min_length=1, max_length=10_000)


class AllOf(Strict):
    all: tuple["Criteria", ...] = Field(min_length=1)


class AnyOf(Strict):
    any: tuple["Criteria", ...] = Field(min_length=1)


class NotOf(Strict):
    not_: "Criteria" = Field(alias="not")


CRITERIA_KEYS = ("all", "any", "not", "segment", "milestone", "outcome", "playbook", "team", "property", "subscription", "event", "sql")
_CRITERIA_BY_KEY = {
    "all": AllOf, "any": AnyOf, "not": NotOf, "segment": SegmentLeaf, "milestone": MilestoneLeaf,
    "outcome": OutcomeLeaf, "playbook": PlaybookLeaf, "team": TeamLeaf, "property": PropertyLeaf,
    "subscription": SubscriptionLeaf, "event": EventLeaf, "sql": SqlLeaf,
}  # fmt: skip


def _tag_by_key(keys: tuple[str, ...], classes: dict[str, type]):
    """A discriminator that picks the union member by which of its keys the mapping has."""

    def tag(value: Any) -> str | None:
        if isinstance(value, dict):
            return next((f"<{k}>" for k in keys if k in value), None)
        for key, klass in classes.items():
            if isinstance(value, klass):
                return f"<{key}>"
        return None

    return tag


Criteria = Annotated[
    Union[tuple(Annotated[_CRITERIA_BY_KEY[k], Tag(f"<{k}>")] for k in CRITERIA_KEYS)],  # type: ignore[misc]
    Discriminator(
        _tag_by_key(CRITERIA_KEYS, _CRITERIA_BY_KEY),
        custom_error_type="criteria",
        custom_error_message="expected a criterion: a mapping with one of the keys " + ", ".join(CRITERIA_KEYS),
    ),
]

# --------------------------------------------------------------------------- actions


class SendEmail(Strict):
    template: str = Field(min_length=1, max_length=200)
    subject: str | None = Field(default=None, max_length=1000)
    to: str | None = Field(default=None, max_length=320)


class CreateTask(Strict):
    title: str = Field(min_length=1, max_length=1000)
    assignee: str = Field(min_length=1, max_length=320)
    due_in: DurationText | None = None
    notes: str | None = Field(default=None, max_length=10_000)


def _attribute_name(value: Any) -> str:
    if not isinstance(value, str) or not ATTRIBUTE_NAME.match(value):
        raise PydanticCustomError(
            "attribute", "'{value}' is not an attribute name; expected letters, digits and _", {"value": value}
        )
    return value


AttributeName = Annotated[str, BeforeValidator(_attribute_name)]


class SetAttribute(Strict):
    name: AttributeName
    value: Any

    @field_validator("value", mode="before")
    @classmethod
    def _scalar(cls, v: Any) -> Scalar:
        return normalize_scalar(v)


class CopyAttribute(Strict):
    from_: PropertyPathText = Field(alias="from")
    to: AttributeName


class ClearAttribute(Strict):
    name: AttributeName


class IncreaseAttribute(Strict):
    name: AttributeName
    by: float

    @field_validator("by", mode="before")
    @classmethod
    def _number(cls, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            # pydantic fills {value} in but knows no format spec like {value!r}: quote it here
            raise PydanticCustomError("number", "expected a number, got {value}", {"value": repr(v)})
        return v


class SendEmailStep(Strict):
    send_email: SendEmail


class CreateTaskStep(Strict):
    create_task: CreateTask


class SetAttributeStep(Strict):
    set_attribute: SetAttribute


class CopyAttributeStep(Strict):
    copy_attribute: CopyAttribute


class ClearAttributeStep(Strict):
    clear_attribute: ClearAttribute


class IncreaseAttributeStep(Strict):
    increase_attribute: IncreaseAttribute


class WaitStep(Strict):
    wait: DurationText


class IfStep(Strict):
    if_: Criteria = Field(alias="if")
    then: tuple["Step", ...] = Field(min_length=1)
    else_: tuple["Step", ...] | None = Field(default=None, alias="else", min_length=1)


class WaitUntil(Strict):
    criteria: Criteria
    timeout: DurationText


class WaitUntilStep(Strict):
    """Wait until the criteria hold (checked at every run within the timeout), then `then`; else `on_timeout`."""

    wait_until: WaitUntil
    then: tuple["Step", ...] = ()
    on_timeout: tuple["Step", ...] = ()


def _offset(value: Any) -> str:
    if not isinstance(value, str) or not RELATIVE_TIME.match(value):
        raise PydanticCustomError("offset", "'{value}' is not an offset; expected a signed duration like -30d or +2h", {"value": value})
    if too_long(value):
        raise PydanticCustomError(
            "offset", "'{value}' is too long; expected at most {most} either way", {"value": value, "most": MAX_DURATION_WORDS}
        )
    return value


class WaitUntilDate(Strict):
    property: PropertyPathText
    offset: Annotated[str, BeforeValidator(_offset)] = "+0d"
    if_past: Literal["continue", "exit"] = "continue"


class WaitUntilDateStep(Strict):
    """Wait until the entity's date/timestamp property plus an offset (read when the wait is reached)."""

    wait_until_date: WaitUntilDate


class SplitPath(Strict):
    name: Identifier
    percent: float = Field(gt=0, le=100)
    steps: tuple["Step", ...] = ()


class SplitStep(Strict):
    """Each enrollment takes one path, by a stable hash of (journey, entity, enrolled_at)."""

    split: tuple[SplitPath, ...] = Field(min_length=2)

    # field validators, not a model one: the error is then at `split`, not at the whole step
    @field_validator("split")
    @classmethod
    def _percents(cls, paths: tuple[SplitPath, ...]) -> tuple[SplitPath, ...]:
        total = sum(p.percent for p in paths)
        if abs(total - 100) > 1e-9:
            raise PydanticCustomError("split", "path percents sum to {total}; expected 100", {"total": f"{total:g}"})
        return paths

    @field_validator("split")
    @classmethod
    def _names(cls, paths: tuple[SplitPath, ...]) -> tuple[SplitPath, ...]:
        names = [p.name for p in paths]
        for n, name in enumerate(names):
            if name in names[:n]:  # `at`: load.py puts the error at this path's name
                raise PydanticCustomError(
                    "split",
                    "'{name}' is already the name of split[{first}]; expected a distinct name per path",
                    {"name": name, "first": names.index(name), "at": (n, "name")},
                )
        return paths


class Webhook(Strict):
    url: str = Field(min_length=1, max_length=2000)
    body: Any = None  # JSON; every text inside is a template
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: DurationText | None = None

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+", v):
            raise PydanticCustomError("url", "'{value}' is not an http(s) URL", {"value": v})
        return v


class OnFailure(Strict):
    retry: int = Field(default=3, ge=0, le=50)
    then: Literal["skip", "abort"] = "skip"


class WebhookStep(Strict):
    webhook: Webhook
    on_failure: OnFailure = OnFailure()


STEP_KEYS = ("send_email", "create_task", "set_attribute", "copy_attribute", "clear_attribute", "increase_attribute",
             "webhook", "wait", "wait_until", "wait_until_date", "split", "if")  # fmt: skip
_STEP_BY_KEY = {
    "send_email": SendEmailStep, "create_task": CreateTaskStep, "set_attribute": SetAttributeStep,
    "copy_attribute": CopyAttributeStep, "clear_attribute": ClearAttributeStep,
    "increase_attribute": IncreaseAttributeStep, "webhook": WebhookStep, "wait": WaitStep,
    "wait_until": WaitUntilStep, "wait_until_date": WaitUntilDateStep, "split": SplitStep, "if": IfStep,
}  # fmt: skip
ACTION_STEPS = (SendEmailStep, CreateTaskStep, SetAttributeStep, CopyAttributeStep, ClearAttributeStep,
                IncreaseAttributeStep, WebhookStep)  # fmt: skip

Step = Annotated[
    Union[tuple(Annotated[_STEP_BY_KEY[k], Tag(f"<{k}>")] for k in STEP_KEYS)],  # type: ignore[misc]
    Discriminator(
        _tag_by_key(STEP_KEYS, _STEP_BY_KEY),
        custom_error_type="step",
        custom_error_message="expected a step: a mapping with one of the keys " + ", ".join(STEP_KEYS),
    ),
]


def action_type(step: BaseModel) -> str:
    """The step's key: `send_email`, `wait`, `if`, ..."""
    return next(k for k, klass in _STEP_BY_KEY.items() if isinstance(step, klass))


# --------------------------------------------------------------------------- journeys and segments


class Cooldown(Strict):
    cooldown: DurationText


Reenrollment = Annotated[
    Union[Annotated[Literal["never", "after_exit"], Tag("<mode>")], Annotated[Cooldown, Tag("<cooldown>")]],
    Discriminator(lambda v: "<mode>" if isinstance(v, str) else "<cooldown>"),
]


def _percent(value: Any) -> float:
    """`10%`, `10` or `10.5%`: a share of 0-100 (exclusive of 100)."""
    text = str(value).strip() if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None
    m = re.match(r"^([0-9]+(?:\.[0-9]+)?)\s*%?$", text or "")
    if not m or not 0 <= float(m.group(1)) < 100:
        raise PydanticCustomError("percent", "'{value}' is not a share; expected a percent from 0% to 99%, e.g. 10%", {"value": value})
    return float(m.group(1))


class Entry(Strict):
    segments: tuple[Identifier, ...] = Field(min_length=1)
    existing_members: Literal["enroll", "skip"] = "skip"
    reenrollment: Reenrollment = "never"
    holdout: Annotated[float, BeforeValidator(_percent)] = 0.0


class Goal(Strict):
    criteria: Criteria
    on_goal: Literal["exit", "continue"] = "exit"
    within: DurationText | None = None  # only counts if reached within this long after enrollment


class Exit(Strict):
    unenroll_from: tuple[Identifier, ...] = ()
    blacklist: Criteria | None = None
    on_leave_entry: bool = Field(default=False, strict=True)


class Journey(Strict):
    journey: Identifier
    name: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    entity: Literal["user", "account"]
    enabled: bool = Field(default=True, strict=True)  # not lax: "yes" or 1 is an error, not true
    entry: Entry
    actions: tuple[Step, ...] = ()
    goal: Goal | None = None
    exit: Exit | None = None

    @property
    def title(self) -> str:
        return self.name or self.journey


class Segment(Strict):
    segment: Identifier
    entity: Literal["user", "account"]
    description: str | None = Field(default=None, max_length=10_000)
    criteria: Criteria


class SqlSegment(BaseModel):
    """A raw SQL segment (`<id>.sql`): a select returning `entity_id`, may use ref()/source()."""

    model_config = ConfigDict(frozen=True)
    segment: str
    entity: Literal["user", "account"]
    sql: str
    description: str | None = None


for _model in (EventLeaf, SubscriptionLeaf, AllOf, AnyOf, NotOf, IfStep, WaitUntil, WaitUntilStep, SplitPath, SplitStep, Goal, Exit, Journey, Segment):
    _model.model_rebuild()
