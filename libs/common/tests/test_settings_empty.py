"""An empty variable is an unset one: compose passes `${SPM_X:-}` as "", and every setting then takes its
default (the notifier once took SPM_SMTP_USERNAME="" for a user name and tried SMTP AUTH against Mailpit)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from audit.settings import Settings as AuditSettings
from console.settings import Settings as ConsoleSettings
from contact.settings import Settings as ContactSettings
from notifier.settings import Settings as NotifierSettings
from orders.settings import Settings as OrdersSettings
from spm_common.settings import BootstrapSettings, CommonSettings, SpmSettings, from_environment, load

CLASSES: list[type[SpmSettings]] = [
    CommonSettings,
    BootstrapSettings,
    ContactSettings,
    OrdersSettings,
    NotifierSettings,
    AuditSettings,
    ConsoleSettings,
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


ROOT = Path(__file__).resolve().parents[3]
SOURCES = sorted(
    path for folder in (ROOT / "libs/common/src", *ROOT.glob("services/*/src")) for path in folder.rglob("*.py")
)
# Every SPM_* variable the code reads outside a settings class, with the default it gives there.
READ_OUTSIDE = sorted(
    {
        (match[1], match[2])
        for path in SOURCES
        for match in re.finditer(r'from_environment\(\s*"(SPM_\w+)",\s*"([^"]*)"', path.read_text(encoding="utf-8"))
    }
)


def test_no_variable_is_read_around_the_rule() -> None:
    # os.environ.get("SPM_X", default) would give "" for `SPM_X=`; from_environment gives the default.
    direct = [
        f"{path.relative_to(ROOT)}: {line.strip()}"
        for path in SOURCES
        for line in path.read_text(encoding="utf-8").splitlines()
        if re.search(r"(os\.environ(\.get)?[\[(]|os\.getenv\()\s*[\"']SPM_", line)
    ]
    assert not direct, direct
    assert {name for name, _ in READ_OUTSIDE} >= {"SPM_LOG_FORMAT", "SPM_TEST_DATABASE_URL", "SPM_TEST_AMQP_URL"}


@pytest.mark.parametrize(("variable", "default"), READ_OUTSIDE, ids=[f"{v}={d}" for v, d in READ_OUTSIDE])
def test_a_variable_read_outside_the_settings_takes_its_default_when_empty(
    monkeypatch: pytest.MonkeyPatch, variable: str, default: str
) -> None:
    monkeypatch.setenv(variable, "")
    assert from_environment(variable, default) == default
    monkeypatch.setenv(variable, "set")
    assert from_environment(variable, default) == "set"
