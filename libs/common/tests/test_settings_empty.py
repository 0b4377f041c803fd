"""An empty variable is an unset one: compose passes `${SPM_X:-}` as "", and every setting then takes its
default (the notifier once took SPM_SMTP_USERNAME="" for a user name and tried SMTP AUTH against Mailpit)."""

from __future__ import annotations

import os

import pytest
from audit.settings import Settings as AuditSettings
from contact.settings import Settings as ContactSettings
from notifier.settings import Settings as NotifierSettings
from orders.settings import Settings as OrdersSettings
from spm_common.settings import BootstrapSettings, CommonSettings, SpmSettings, load

CLASSES: list[type[SpmSettings]] = [
    CommonSettings,
    BootstrapSettings,
    ContactSettings,
    OrdersSettings,
    NotifierSettings,
    AuditSettings,
]
FIELDS = [(cls, name) for cls in CLASSES for name in cls.model_fields]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SPM_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(("cls", "name"), FIELDS, ids=[f"{cls.__module__}.{name}" for cls, name in FIELDS])
def test_an_empty_variable_takes_the_default(
    monkeypatch: pytest.MonkeyPatch, cls: type[SpmSettings], name: str
) -> None:
    monkeypatch.setenv(f"SPM_{name.upper()}", "")
    settings = load(cls)
    assert getattr(settings, name) == cls.model_fields[name].get_default(call_default_factory=True)


def test_empty_smtp_credentials_mean_no_smtp_login(monkeypatch: pytest.MonkeyPatch) -> None:
    # Exactly what docker-compose.yml gives the notifier when .env says nothing about SMTP credentials.
    monkeypatch.setenv("SPM_SMTP_USERNAME", "")
    monkeypatch.setenv("SPM_SMTP_PASSWORD", "")
    settings = load(NotifierSettings)
    assert settings.smtp_username is None and settings.smtp_password is None
