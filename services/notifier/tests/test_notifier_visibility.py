"""What an operator sees while the SMTP server refuses the notifier: warnings, gauges, /readyz at 503 with the
reason, and all of it clearing on its own once the server lets the notifier in. Each way a server refuses
every attempt: no AUTH offered, AUTH refused, no TLS where the notifier wants it, no connection at all."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from notifier.app import create
from notifier.settings import Settings
from notifier_helpers import FAST, address, delivery_of, eventually, request_event, settled
from prometheus_client.parser import text_string_to_metric_families
from spm_common.testing.logs import captured_json_logs
from spm_common.testing.smtp import AuthSmtpServer, SmtpServer
from spm_common.testing.world import World, running

WINDOW_SECONDS = 1.5


def tls_context(folder: Path) -> ssl.SSLContext:
    """A server context with a self-signed certificate for 127.0.0.1, made for this test."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smtp.test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


@dataclass
class Refusal:
    """A server that refuses every attempt in one way, the notifier settings that meet it, the reason the
    operator is shown, and what fixes it on the server's side."""

    refuse: Callable[[AuthSmtpServer], None]
    fix: Callable[[AuthSmtpServer, Path], None]
    reason: str
    settings: dict[str, Any] = field(default_factory=dict)


CREDENTIALS = {"smtp_username": "spm-notifier", "smtp_password": "not-the-password"}
REFUSALS = {
    "auth not offered": Refusal(
        lambda server: server.set_auth("absent"),
        lambda server, _: server.set_auth("accept"),
        "SMTP AUTH extension is not supported",
        CREDENTIALS,
    ),
    "auth refused": Refusal(
        lambda server: server.set_auth("refuse"),
        lambda server, _: server.set_auth("accept"),
        "Authentication credentials invalid",
        CREDENTIALS,
    ),
    # The notifier insists on STARTTLS (SPM_SMTP_SECURITY=starttls); the server offers none until it is fixed.
    "tls mismatch": Refusal(
        lambda server: server.set_tls(None),
        lambda server, folder: server.set_tls(tls_context(folder)),
        "STARTTLS extension not supported",
        {"smtp_security": "starttls", "smtp_validate_certs": False},
    ),
    "connection refused": Refusal(
        lambda server: server.go_down(),
        lambda server, _: server.come_back(),
        "Connect call failed",
    ),
}


@pytest.fixture
def auth_smtp() -> Iterator[AuthSmtpServer]:
    server = AuthSmtpServer("accept")
    server.start()
    yield server
    server.stop()


def sample(metrics: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(metrics):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


@pytest.mark.parametrize("refusal", list(REFUSALS))
async def test_a_server_refusing_every_attempt_is_seen_and_then_recovers_on_its_own(
    world: World, publish, db, auth_smtp: AuthSmtpServer, tmp_path: Path, refusal: str
) -> None:
    refusing = REFUSALS[refusal]
    reason = refusing.reason
    settings = world.settings(
        Settings,
        **{
            **FAST,
            "smtp_port": auth_smtp.port,
            **refusing.settings,
            "notifier_smtp_unready_seconds": WINDOW_SECONDS,
            # Retried every second or so; it must not give up before the server is fixed.
            "notifier_retry_max_seconds": 1.0,
            "notifier_max_attempts": 100,
        },
    )
    to = address("refused")
    event = request_event("contact-ack", to)
    with captured_json_logs("notifier") as logs:
        async with running(create(settings)) as client:
            assert (await client.get("/readyz")).status_code == 200
            refusing.refuse(auth_smtp)
            await publish(event)

            async def unready() -> dict | None:
                answer = await client.get("/readyz")
                return answer.json() if answer.status_code == 503 else None

            body = await eventually(unready, timeout=30)
            assert body["status"] == "unavailable" and body["smtp"] is False
            assert body["database"] is True and body["broker"] is True
            assert reason in body["problems"]["smtp"]
            row = await delivery_of(db, event)
            assert row["status"] in ("pending", "sending") and reason in row["last_error"]

            metrics = (await client.get("/metrics")).text
            assert sample(metrics, "spm_loop_consecutive_failures", service="notifier", loop="smtp") >= 1
            # Between two tries the delivery waits (pending); during one it is being sent (sending).
            waiting = sum(
                sample(metrics, "spm_notifier_deliveries_by_status", status=s) for s in ("pending", "sending")
            )
            assert waiting >= 1
            assert sample(metrics, "spm_notifier_oldest_pending_seconds") > 0
            # Sent deliveries are counted, not gauged (the table keeps them for days).
            sent_before = sample(metrics, "spm_notifier_deliveries_total", outcome="sent") or 0

            # What was logged while the server refused (its restart may drop a try under way: not counted).
            refused_lines = len(logs.lines)
            refusing.fix(auth_smtp, tmp_path)

            async def ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await eventually(ready, timeout=30)
            await auth_smtp.wait_to(to, timeout=30)
            sent = await settled(db, event, "sent")
            metrics = (await client.get("/metrics")).text
            assert sample(metrics, "spm_loop_consecutive_failures", service="notifier", loop="smtp") == 0
            assert sample(metrics, "spm_notifier_deliveries_total", outcome="sent") > sent_before

    warnings = [line for line in logs.lines[:refused_lines] if line["level"] == "warning"]
    retried = [line for line in warnings if line["event"] == "delivery will be retried"]
    assert retried, warnings
    assert all(line["delivery_id"] == sent["id"] and reason in line["error"] for line in retried), retried
    assert [line["attempt"] for line in retried] == sorted({line["attempt"] for line in retried})
    failing = [line for line in warnings if line["event"] == "background loop failing" and line["loop"] == "smtp"]
    assert failing and reason in failing[0]["error"]
    # Rate-limited: one line at first, and the rest counted, not printed.
    assert len(failing) < sent["attempts"]
    assert any(line["event"] == "background loop recovered" and line["loop"] == "smtp" for line in logs.lines)
    assert to not in logs.text and to.split("@")[0] not in logs.text


async def test_a_delivery_that_fails_is_a_warning_with_reason_attempt_and_id_never_the_address(
    world: World, publish, db, smtp: SmtpServer
) -> None:
    settings = world.settings(Settings, **{**FAST, "smtp_port": smtp.port})
    to = address("failing")
    event = request_event("contact-ack", to)
    # Servers quote the address they refuse; the log keeps the reply without it.
    smtp.reply_for_rcpt = f"550 5.1.1 <{to}>: no such user here"
    try:
        with captured_json_logs("notifier") as logs:
            async with running(create(settings)):
                await publish(event)
                failed = await settled(db, event, "failed")
    finally:
        smtp.reply_for_rcpt = None
    [line] = [line for line in logs.lines if line["event"] == "delivery failed"]
    assert line["level"] == "warning"
    assert (line["delivery_id"], line["attempt"]) == (failed["id"], 1)
    assert line["error"].startswith("550 5.1.1 ") and line["error"].endswith(": no such user here")
    assert to not in logs.text and to.split("@")[0] not in logs.text
