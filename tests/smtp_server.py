"""A real SMTP server on loopback for tests: records every message it accepts, can be stopped and
restarted on the same port, and can answer chosen SMTP error codes."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Received:
    """One message as the server accepted it: the SMTP envelope and the parsed message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage

    @property
    def message_id(self) -> str:
        return self.message["Message-ID"]

    @property
    def subject(self) -> str:
        return self.message["Subject"]

    @property
    def body(self) -> str:
        return self.message.get_body(("plain", "html")).get_content().replace("\r\n", "\n")


class _Handler:
    def __init__(self, server: "SmtpServer"):
        self.server = server

    async def handle_RCPT(self, smtp, session, envelope, address, rcpt_options):
        reply = self.server._reject_recipients.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp, session, envelope):
        with self.server._lock:
            if self.server._replies:
                reply = self.server._replies.pop(0)
                self.server.refused += 1
                return reply
            msg = message_from_bytes(envelope.content, policy=policy.default)
            self.server.received.append(Received(envelope.mail_from, tuple(envelope.rcpt_tos), msg))
        return "250 2.0.0 OK"


class SmtpServer:
    """`start()` / `stop()` any number of times; the port (hence `url`) stays the same. `with SmtpServer() as
    server:` starts it and stops it at the end. A subclass changes how it answers by its `handler`."""

    handler: type[_Handler] = _Handler

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.received: list[Received] = []
        self.refused = 0  # DATA commands answered with a chosen error
        self._replies: list[str] = []
        self._reject_recipients: dict[str, str] = {}
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://{HOST}:{self.port}"

    def start(self) -> "SmtpServer":
        assert self._controller is None, "already running"
        # A Controller's event loop is closed by stop(): a restart needs a new one (same port).
        self._controller = Controller(self.handler(self), hostname=HOST, port=self.port)
        self._controller.start()
        return self

    def __enter__(self) -> "SmtpServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    def answer(self, reply: str, times: int = 1) -> None:
        """Answer the next `times` DATA commands with `reply` (e.g. "451 4.3.0 Try again later")."""
        with self._lock:
            self._replies.extend([reply] * times)

    def reject_recipient(self, address: str, reply: str = "550 5.1.1 No such user") -> None:
        """Answer RCPT TO:<address> with `reply` until told otherwise (`reply=""` accepts again)."""
        self._reject_recipients[address] = reply

    def messages(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def by_message_id(self) -> dict[str, list[Received]]:
        out: dict[str, list[Received]] = {}
        for r in self.messages():
            out.setdefault(r.message_id, []).append(r)
        return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server
