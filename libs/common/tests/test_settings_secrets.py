"""Secrets in settings: an empty one counts as unset, and a placeholder from .env.example is refused."""

from __future__ import annotations

import pytest
from audit.settings import Settings as AuditSettings
from contact.settings import Settings as ContactSettings
from spm_common.settings import CommonSettings, load


def test_an_empty_operator_token_or_webhook_secret_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # Compose passes `SPM_OPERATOR_TOKEN=` when .env leaves it out; "" must not become a token that matches "".
    monkeypatch.setenv("SPM_OPERATOR_TOKEN", "")
    monkeypatch.setenv("SPM_WEBHOOK_SECRET", "  ")
    settings = CommonSettings()
    assert settings.operator_token is None
    assert settings.webhook_secret is None


def test_a_set_token_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPM_OPERATOR_TOKEN", "a-real-token-of-some-length-32-characters")
    token = CommonSettings().operator_token
    assert token is not None
    assert token.get_secret_value() == "a-real-token-of-some-length-32-characters"


@pytest.mark.parametrize(
    ("variable", "value", "cls"),
    [
        ("SPM_OPERATOR_TOKEN", "change-me-operator-token", ContactSettings),
        ("SPM_AUDIT_SECRET", "change-me-audit-secret", AuditSettings),
        ("SPM_CONTACT_DATABASE_URL", "postgresql://spm_contact:change-me@postgres:5432/spm", ContactSettings),
        ("SPM_AMQP_URL", "amqp://spm:change-me-rabbitmq@rabbitmq:5672/", ContactSettings),
    ],
)
def test_a_placeholder_is_refused_naming_the_variable_not_the_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str, cls: type
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exited:
        load(cls)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert variable in err
    assert value not in err
