"""The notifier as docker-compose.yml configures it without a .env: empty SMTP credentials mean no login,
so mail reaches a server that offers no AUTH (Mailpit, the test server)."""

from __future__ import annotations

import os
import uuid

import pytest
from notifier.settings import Settings
from notifier.smtp import SENT, Connection
from spm_common.settings import load
from spm_common.testing.smtp import SmtpServer

pytestmark = pytest.mark.asyncio


async def test_empty_smtp_credentials_send_without_logging_in(
    monkeypatch: pytest.MonkeyPatch, smtp: SmtpServer
) -> None:
    for name in list(os.environ):
        if name.startswith("SPM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SPM_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SPM_SMTP_PORT", str(smtp.port))
    monkeypatch.setenv("SPM_SMTP_USERNAME", "")  # compose: "${SPM_SMTP_USERNAME:-}"
    monkeypatch.setenv("SPM_SMTP_PASSWORD", "")
    recipient = f"{uuid.uuid4().hex[:12]}@example.com"
    connection = Connection(load(Settings))
    try:
        result = await connection.send("no-reply@spmgroup.vn", recipient, b"Subject: hello\r\n\r\nHello.\r\n")
    finally:
        await connection.close()
    assert result == SENT
    assert len(await smtp.wait_to(recipient)) == 1
