"""send_email: render the template with the entity's row, then SMTP (or the email_outbox relation).

The action key is the Message-ID (`<KEY@DOMAIN>`, or `<KEY.N@DOMAIN>` per recipient when there are
several), so a message re-sent after a crash can be dropped by the receiver.
"""

from __future__ import annotations

import datetime as dt
import os
import smtplib
import socket
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import urlparse

import duckdb

from actions.base import ActionContext, ActionFailed, ActionSkipped
from journeys.engine import faults
from journeys.engine.ledger import DueAction

S = "journey_state"
TEAM_ROLES = ("csm", "sales_manager")
SMTP_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Message:
    message_id: str
    recipient: str
    subject: str
    body: str
    html: bool


class EmailExecutor:
    action_types = ("send_email",)

    def __init__(self, templates: dict[str, Path], smtp_url: str | None = None, *, domain: str | None = None,
                 sender: str | None = None, list_unsubscribe: str | None = None, timeout: float = SMTP_TIMEOUT_SECONDS):  # fmt: skip
        self.templates = templates
        self.smtp_url = smtp_url
        self.domain = domain or os.environ.get("JOURNEYS_MESSAGE_ID_DOMAIN", "journeys.local")
        self.sender = sender or os.environ.get("JOURNEYS_EMAIL_FROM", "journeys@localhost")
        self.list_unsubscribe = list_unsubscribe or f"<mailto:unsubscribe@{self.domain}>"
        self.timeout = timeout

    @classmethod
    def from_settings(cls, templates: dict[str, Path], smtp_url: str | None, email) -> "EmailExecutor":
        """From journeys.yml's `email:` section (environment variables override the Message-ID domain and sender)."""
        return cls(templates, smtp_url, domain=os.environ.get("JOURNEYS_MESSAGE_ID_DOMAIN") or email.message_id_domain,
                   sender=os.environ.get("JOURNEYS_EMAIL_FROM") or email.from_, list_unsubscribe=email.list_unsubscribe)  # fmt: skip

    def is_internal(self, action: DueAction) -> bool:
        return self.smtp_url is None  # without a server, the outbox table is the delivery

    def messages(self, action: DueAction, ctx: ActionContext) -> list[Message]:
        p = action.params
        path = self.templates.get(p["template"])
        if path is None:
            raise ActionFailed(f"template '{p['template']}' no longer exists", permanent=True)
        recipients = self._recipients(action, ctx, p.get("to"))
        if not recipients:
            raise ActionFailed(f"no recipient address for {action.entity_type} '{action.entity_id}' (to: {p.get('to') or 'the user'})", permanent=True)
        allowed = [(n, r) for n, r in enumerate(recipients, start=1) if not ctx.directory.is_suppressed(r)]
        if not allowed:
            raise ActionSkipped("suppressed: " + ", ".join(recipients))
        body_template = path.read_text(encoding="utf-8")
        out = []
        for n, recipient in allowed:  # numbered over all recipients, so a Message-ID never depends on suppressions
            variables = ctx.template_variables(action, recipient)
            if p.get("to") == "users":
                variables["user"] = next((u for u in ctx.directory.users_of(variables["account"].get("account_id"))
                                          if u.get("email") == recipient), {})  # fmt: skip
            suffix = f".{n}" if len(recipients) > 1 else ""
            subject = ctx.render(p.get("subject") or variables["journey"]["name"], variables).strip()
            out.append(Message(f"<{action.action_key}{suffix}@{self.domain}>", recipient, subject,
                               ctx.render(body_template, variables), path.suffix == ".html"))  # fmt: skip
        return out

    def _recipients(self, action: DueAction, ctx: ActionContext, to: str | None) -> list[str]:
        account = ctx.directory.account_of(action.entity_type, action.entity_id) or {}
        if to is None:
            user = ctx.directory.row(action.entity_type, action.entity_id) or {}
            return [user["email"]] if user.get("email") else []
        if to in TEAM_ROLES:
            return ctx.directory.team_members(account.get("account_id"), to)
        if to == "users":
            return [u["email"] for u in ctx.directory.users_of(account.get("account_id")) if u.get("email")] if account else []
        return [to]

    def apply(self, con: duckdb.DuckDBPyConnection, action: DueAction, ctx: ActionContext) -> None:
        for m in self.messages(action, ctx):
            ctx.rows.add(f"{S}.email_outbox", (m.message_id, action.action_key, action.journey_id, m.recipient, m.subject,
                                               m.body, self.list_unsubscribe, ctx.as_of))  # fmt: skip

    def deliver(self, action: DueAction, ctx: ActionContext) -> None:
        messages = self.messages(action, ctx)
        try:
            mimes = [self._mime(m, ctx) for m in messages]
        except ValueError as e:  # e.g. a line break in a rendered subject: bad data, retrying cannot help
            raise ActionFailed(f"cannot build the message: {e}", permanent=True) from None
        url = urlparse(self.smtp_url)
        accepted: int | None = None  # messages accepted so far; None: not connected
        try:
            smtp = smtplib.SMTP(url.hostname or "localhost", url.port or 25, timeout=self.timeout)
            try:
                accepted = 0
                for message, mime in zip(messages, mimes):
                    if ctx.deliveries is not None and ctx.deliveries.delivered(message.message_id):
                        accepted += 1  # accepted by an earlier attempt: never sent twice
                        continue
                    smtp.send_message(mime)
                    faults.point("after_smtp_accept")  # the one duplicate window: accepted, not yet recorded
                    if ctx.deliveries is not None:
                        ctx.deliveries.record(message.message_id, action.action_key, message.recipient)
                    accepted += 1
            finally:
                _quit(smtp)
        except (smtplib.SMTPException, OSError, socket.timeout) as e:
            where = f"SMTP {url.hostname}:{url.port}"
            if accepted is not None and len(mimes) > 1:  # a retry sends only the ones not yet accepted
                where += f", message {accepted + 1} of {len(mimes)} ({accepted} already accepted)"
            raise ActionFailed(f"{where}: {type(e).__name__}: {e}", permanent=_rejected_for_good(e)) from None

    def _mime(self, m: Message, ctx: ActionContext) -> EmailMessage:
        mime = EmailMessage()
        mime["From"] = self.sender
        mime["To"] = m.recipient
        mime["Subject"] = m.subject
        mime["Message-ID"] = m.message_id
        mime["Date"] = format_datetime(ctx.as_of.replace(tzinfo=dt.timezone.utc))
        mime["List-Unsubscribe"] = self.list_unsubscribe
        mime.set_content(m.body, subtype="html" if m.html else "plain")
        return mime


def _quit(smtp: smtplib.SMTP) -> None:
    """End the session; once the messages were accepted, a failed QUIT must not fail (and re-send) them."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def _rejected_for_good(error: BaseException) -> bool:
    """A 5xx answer to the recipient or to the message is a permanent rejection (RFC 5321 §4.2.1).

    A refused sender or a 5xx at connection time is a configuration problem of ours, retried until fixed.
    """
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return bool(error.recipients) and all(code >= 500 for code, _ in error.recipients.values())
    return isinstance(error, smtplib.SMTPDataError) and error.smtp_code >= 500
