"""A real SMTP server in the test process (aiosmtpd), recording what it accepts, and able to misbehave."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.server.stall_rcpt_seconds:
            await asyncio.sleep(self.server.stall_rcpt_seconds)
        reply = self.server.reply_for_rcpt
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.server.stall_seconds:
            await asyncio.sleep(self.server.stall_seconds)
        reply = self.server.reply_for_data
        if reply:
            return reply
        with self.server.lock:
            self.server.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted"


class SmtpServer:
    """`reply_for_rcpt`/`reply_for_data` (e.g. "451 try later", "550 no such user") make it refuse;
    `stall_seconds` delays the reply to DATA, `stall_rcpt_seconds` the reply to RCPT (before any message
    could have been accepted); `go_down()` / `come_back()` refuse connections altogether for a while."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.reply_for_rcpt: str | None = None
        self.reply_for_data: str | None = None
        self.stall_seconds = 0.0
        self.stall_rcpt_seconds = 0.0
        self._controller = self._new_controller()
        self._running = False

    def _new_controller(self) -> Controller:
        return Controller(_Handler(self), hostname="127.0.0.1", port=self.port)

    def start(self) -> None:
        self._controller.start()
        self._running = True

    def stop(self) -> None:
        if self._running:
            self._controller.stop()
            self._running = False

    def go_down(self) -> None:
        """Stop listening: connections are refused until `come_back()`."""
        self.stop()

    def come_back(self) -> None:
        """Listen again on the same port (a stopped controller cannot be restarted: its loop is closed)."""
        if not self._running:
            self._controller = self._new_controller()
            self.start()

    def refuse_connections(self) -> None:
        """Stop listening: clients get "connection refused" until `accept_connections`."""
        self._controller.stop()

    def accept_connections(self) -> None:
        self._controller = self._new_controller()
        self._controller.start()

    def to(self, address: str) -> list[Received]:
        with self.lock:
            return [m for m in self.received if address in m.rcpt_tos]

    async def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 10) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                snapshot = list(self.received)
            if predicate(snapshot):
                return snapshot
            if time.monotonic() > deadline:
                raise TimeoutError(f"SMTP condition not met in {timeout}s; {len(snapshot)} message(s) received")
            await asyncio.sleep(0.05)

    async def wait_to(self, address: str, count: int = 1, timeout: float = 10) -> list[Received]:
        await self.wait_for(lambda ms: sum(address in m.rcpt_tos for m in ms) >= count, timeout)
        return self.to(address)


SmtpAuth = Literal["absent", "refuse", "accept"]


class AuthSmtpServer(SmtpServer):
    """An SMTP server that asks for authentication, or cannot do it: `auth` "absent" does not offer AUTH (a
    client with credentials gives up: "The SMTP AUTH extension is not supported by this server"), "refuse"
    offers it and refuses every credential (535), "accept" takes any. `set_auth` changes it for the
    connections that follow. With a `tls_context` it also offers STARTTLS (`set_tls`); without one, a client
    that insists on STARTTLS gives up ("The SMTP STARTTLS extension is not supported by this server")."""

    def __init__(self, auth: SmtpAuth = "absent", tls_context: ssl.SSLContext | None = None) -> None:
        self.auth: SmtpAuth = auth
        self.tls_context = tls_context
        super().__init__()

    def _new_controller(self) -> Controller:
        return Controller(
            _Handler(self),
            hostname="127.0.0.1",
            port=self.port,
            # aiosmtpd offers AUTH only over TLS unless told otherwise: "absent" is its default.
            auth_require_tls=self.auth == "absent",
            authenticator=self._authenticate,
            tls_context=self.tls_context,
        )

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        # handled=False: aiosmtpd answers itself (235, or 535 "Authentication credentials invalid").
        return AuthResult(success=self.auth == "accept", handled=False)

    def set_auth(self, auth: SmtpAuth) -> None:
        self.auth = auth
        self._restart()

    def set_tls(self, tls_context: ssl.SSLContext | None) -> None:
        self.tls_context = tls_context
        self._restart()

    def _restart(self) -> None:
        if self._running:  # what the server offers is fixed when it starts
            self.stop()
            self._controller = self._new_controller()
            self.start()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
