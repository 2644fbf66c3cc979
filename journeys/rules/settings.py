"""journeys.yml: project settings for sending (caps, send window, per-run limits, webhooks, email headers)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from journeys.rules.model import DurationText, PropertyPath, Strict

SETTINGS_FILE = "journeys.yml"
CHANNELS = ("email", "webhook")
Channel = Literal["email", "webhook"]
CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
DOMAIN = re.compile(r"^[A-Za-z0-9.-]+$")


def _clock(value: Any) -> str:
    if not isinstance(value, str) or not CLOCK.match(value):
        raise PydanticCustomError("clock", "'{value}' is not a time of day; expected HH:MM, e.g. \"09:00\" (quoted)", {"value": value})
    return value


def timezone_problem(name: str) -> str | None:
    try:
        ZoneInfo(name)
        return None
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown timezone '{name}'; expected an IANA name like UTC, Europe/Paris or America/New_York"


def _domain(value: str) -> str:
    if not DOMAIN.match(value):  # pydantic's own message would quote the regex
        raise PydanticCustomError(
            "domain", "'{value}' is not a domain; expected letters, digits, dots and dashes, e.g. acme.example",
            {"value": value},
        )
    return value


def _url_prefix(value: str) -> str:
    if not re.match(r"^https?://[^\s/]+", value):
        raise PydanticCustomError(
            "allow", "'{value}' is not an http(s) URL prefix; expected a prefix like https://hooks.example.com/",
            {"value": value},
        )
    return value


class EmailSettings(Strict):
    from_: str = Field(default="journeys@localhost", alias="from", min_length=3)
    message_id_domain: Annotated[str, AfterValidator(_domain)] = "journeys.local"
    list_unsubscribe: str = Field(default="<mailto:unsubscribe@journeys.local>", min_length=3)


class FrequencyCap(Strict):
    channel: Channel = "email"
    max: int = Field(ge=1)
    per: DurationText


class SendWindow(Strict):
    start: Annotated[str, BeforeValidator(_clock)]
    end: Annotated[str, BeforeValidator(_clock)]
    timezone_property: str | None = None
    default_timezone: str = "UTC"
    channels: tuple[Channel, ...] = ("email",)

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        problem = timezone_problem(v)
        if problem:
            raise PydanticCustomError("timezone", problem, {})
        return v

    @field_validator("timezone_property")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and PropertyPath.parse(v).scope not in ("user", "account"):
            raise PydanticCustomError("timezone_property", "expected a user.* or account.* property holding IANA names", {})
        return v

    @model_validator(mode="after")
    def _not_empty(self) -> "SendWindow":
        if self.start == self.end:
            raise PydanticCustomError("send_window", "start equals end; expected a window of some length", {})
        return self


class Webhooks(Strict):
    # URL prefixes a webhook may call, e.g. https://hooks.example.com/; checked one by one, so an error
    # names its entry
    allow: tuple[Annotated[str, AfterValidator(_url_prefix)], ...] = ()

    def allows(self, url: str) -> bool:
        return any(url.startswith(prefix) for prefix in self.allow)


class ProjectSettings(Strict):
    email: EmailSettings = EmailSettings()
    frequency_caps: tuple[FrequencyCap, ...] = ()
    send_window: SendWindow | None = None
    max_sends_per_run: dict[Channel, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    webhooks: Webhooks = Webhooks()
