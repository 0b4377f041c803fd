"""Settings come from SPM_* variables with working defaults, and a bad one stops the service at once,
named, with its value kept out of the message (it may be a secret)."""

from __future__ import annotations

import os

import pytest
from spm_common.settings import CommonSettings, load

from .conftest import ProbeSettings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SPM_"):
            monkeypatch.delenv(name)


def test_defaults_are_those_of_the_contract() -> None:
    settings = load(ProbeSettings)
    assert settings.database_url == "postgresql://postgres@127.0.0.1:5432/spm"
    assert settings.amqp_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert settings.exchange == "spm.events"
    assert (settings.smtp_host, settings.smtp_port) == ("127.0.0.1", 1025)
    assert settings.mail_from == "SPM Group <no-reply@spmgroup.vn>"
    assert settings.operator_token is None and settings.webhook_secret is None
    assert settings.http_host == "127.0.0.1"
    assert settings.log_format == "json"
    assert settings.port == 8082
    assert settings.role_database_url() == "postgresql://spm_orders@127.0.0.1:5432/spm"


def test_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPM_SMTP_PORT", "2525")
    monkeypatch.setenv("SPM_ORDERS_PORT", "9082")
    monkeypatch.setenv("SPM_OPERATOR_TOKEN", "s3cret-operator-token-of-32-characters")
    monkeypatch.setenv("SPM_LOG_FORMAT", "console")
    settings = load(ProbeSettings)
    assert settings.smtp_port == 2525
    assert settings.port == 9082
    assert settings.operator_token is not None
    assert settings.operator_token.get_secret_value() == "s3cret-operator-token-of-32-characters"
    assert "s3cret-operator-token-of-32-characters" not in repr(settings)
    assert settings.log_format == "console"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SPM_SMTP_PORT", "abc-not-a-port"),
        ("SPM_SMTP_PORT", "99999"),
        ("SPM_ORDERS_PORT", "eighty"),
        ("SPM_LOG_FORMAT", "xml-please"),
        ("SPM_MAX_ATTEMPTS", "0"),
        ("SPM_OUTBOX_POLL_SECONDS", "soon-ish"),
    ],
)
def test_a_bad_variable_exits_naming_it_but_not_its_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exited:
        load(ProbeSettings)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid configuration for ProbeSettings" in err
    assert f"  {variable}: " in err
    assert value not in err


def test_every_bad_variable_is_named_at_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SPM_SMTP_PORT", "abc")
    monkeypatch.setenv("SPM_PREFETCH", "-1")
    with pytest.raises(SystemExit):
        load(CommonSettings)
    err = capsys.readouterr().err
    assert "SPM_SMTP_PORT" in err and "SPM_PREFETCH" in err


def test_the_inbox_must_outlast_the_dead_letters(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load(ProbeSettings)
    assert (settings.inbox_retention_days, settings.dlq_retention_days) == (30, 14)
    # A dead letter replayed after its event id left the inbox would be handled a second time.
    monkeypatch.setenv("SPM_INBOX_RETENTION_DAYS", "10")
    with pytest.raises(SystemExit) as exited:
        load(ProbeSettings)
    assert exited.value.code == 2
    assert "  SPM_INBOX_RETENTION_DAYS: must be longer than SPM_DLQ_RETENTION_DAYS" in capsys.readouterr().err
