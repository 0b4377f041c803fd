"""What an operator sees while the SMTP server refuses the notifier: warnings, gauges, /readyz at 503 with the
reason, and all of it clearing on its own once the server lets the notifier in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from notifier.app import create
from notifier.settings import Settings
from notifier_helpers import FAST, address, delivery_of, eventually, request_event, settled
from prometheus_client.parser import text_string_to_metric_families
from spm_common.testing.logs import captured_json_logs
from spm_common.testing.smtp import AuthSmtpServer, SmtpAuth
from spm_common.testing.world import World, running

WINDOW_SECONDS = 1.5


@pytest.fixture
def auth_smtp() -> Iterator[AuthSmtpServer]:
    server = AuthSmtpServer()
    server.start()
    yield server
    server.stop()


def sample(metrics: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(metrics):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


@pytest.mark.parametrize(
    ("refusal", "reason"),
    [("absent", "SMTP AUTH extension is not supported"), ("refuse", "Authentication credentials invalid")],
)
async def test_a_server_refusing_every_login_is_seen_and_then_recovers_on_its_own(
    world: World, publish, db, auth_smtp: AuthSmtpServer, refusal: SmtpAuth, reason: str
) -> None:
    auth_smtp.set_auth(refusal)
    settings = world.settings(
        Settings,
        **{
            **FAST,
            "smtp_port": auth_smtp.port,
            "smtp_username": "spm-notifier",
            "smtp_password": "not-the-password",
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

            auth_smtp.set_auth("accept")

            async def ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await eventually(ready, timeout=30)
            await auth_smtp.wait_to(to, timeout=30)
            sent = await settled(db, event, "sent")
            metrics = (await client.get("/metrics")).text
            assert sample(metrics, "spm_loop_consecutive_failures", service="notifier", loop="smtp") == 0

    warnings = [line for line in logs.lines if line["level"] == "warning"]
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
