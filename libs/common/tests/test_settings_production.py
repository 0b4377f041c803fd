"""SPM_ENVIRONMENT=production: every service and `spm-admin bootstrap` refuse to start while a secret, token
or password is unset, a development-only default or shorter than 32 characters, while RabbitMQ is reached as
`guest`, unsubscribe links are http:// or SMTP goes without TLS beyond this machine. They name the variable,
never its value. Development keeps every default; an operator token is 32 characters in every environment."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from audit.settings import Settings as AuditSettings
from console.settings import Settings as ConsoleSettings
from contact.settings import Settings as ContactSettings
from notifier.settings import Settings as NotifierSettings
from orders.settings import Settings as OrdersSettings
from spm_common.settings import WITH_SCHEMA, BootstrapSettings, SpmSettings, load

ROOT = Path(__file__).resolve().parents[3]
SERVICE_CLASSES: dict[str, type[SpmSettings]] = {
    "contact": ContactSettings,
    "orders": OrdersSettings,
    "notifier": NotifierSettings,
    "audit": AuditSettings,
    "console": ConsoleSettings,
}
EVERY_CLASS: list[type[SpmSettings]] = [*SERVICE_CLASSES.values(), BootstrapSettings]
# Made up for these tests, 40 characters each, as `secrets.token_urlsafe(32)` would give (43).
STRONG = "Zq3vR8mT1xK6pW2nB9cJ4hL7sD0fG5yA-uE_iO8w"
SHORT = STRONG[:31]


def strong(name: str) -> str:
    return f"{name}-{STRONG}"


# Every secret a production deployment sets, each strong.
PRODUCTION = {
    "SPM_ENVIRONMENT": "production",
    "SPM_OPERATOR_TOKEN": strong("operator"),
    "SPM_WEBHOOK_SECRET": strong("webhook"),
    "SPM_AMQP_URL": f"amqp://spm:{strong('rabbitmq')}@rabbitmq:5672/",
    # The notifier tells which service published a mail request by its RabbitMQ user: it logs in as its own.
    "SPM_NOTIFIER_AMQP_URL": f"amqp://spm_notifier:{strong('notifier-rabbitmq')}@rabbitmq:5672/",
    "SPM_DATABASE_URL": f"postgresql://postgres:{strong('postgres')}@postgres:5432/spm",
    "SPM_NOTIFIER_PUBLIC_URL": "https://spmgroup.vn/notifier",
    "SPM_SMTP_HOST": "smtp.example.net",
    "SPM_SMTP_SECURITY": "starttls",
    # An Ed25519 private key, base64 of its 32 raw bytes (a fixed, obviously fake one).
    "SPM_AUDIT_CHECKPOINT_KEY": base64.b64encode(bytes(range(32))).decode(),
    **{f"SPM_{s.upper()}_SECRET": strong(s) for s in WITH_SCHEMA},
    **{f"SPM_{s.upper()}_DB_PASSWORD": strong(f"{s}-db") for s in WITH_SCHEMA},
    **{
        f"SPM_{s.upper()}_DATABASE_URL": f"postgresql://spm_{s}:{strong(f'{s}-db')}@postgres:5432/spm"
        for s in WITH_SCHEMA
    },
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SPM_"):
            monkeypatch.delenv(name)


def in_production(monkeypatch: pytest.MonkeyPatch, **changes: str | None) -> None:
    """The strong production environment, with `changes` (None: unset)."""
    for name, value in {**PRODUCTION, **changes}.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


def refused(cls: type[SpmSettings], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        load(cls)
    assert exited.value.code != 0
    return capsys.readouterr().err


def test_development_starts_with_every_default() -> None:
    for cls in EVERY_CLASS:
        assert load(cls).environment == "development"


@pytest.mark.parametrize("cls", EVERY_CLASS, ids=lambda cls: cls.__module__)
def test_production_starts_with_strong_secrets(monkeypatch: pytest.MonkeyPatch, cls: type[SpmSettings]) -> None:
    in_production(monkeypatch)
    assert load(cls).environment == "production"


# (variable, class that reads it): every secret, token and password production checks.
SECRETS = [
    *[("SPM_OPERATOR_TOKEN", cls) for cls in SERVICE_CLASSES.values()],
    ("SPM_WEBHOOK_SECRET", OrdersSettings),
    *[(f"SPM_{s.upper()}_SECRET", cls) for s, cls in SERVICE_CLASSES.items()],
    *[(f"SPM_{s.upper()}_DB_PASSWORD", BootstrapSettings) for s in WITH_SCHEMA],
]


@pytest.mark.parametrize(("variable", "cls"), SECRETS, ids=[f"{v}-{c.__module__}" for v, c in SECRETS])
@pytest.mark.parametrize("value", [None, "", SHORT, f"development-only-{STRONG}", f"dev-only-{STRONG}"])
def test_a_weak_secret_is_refused(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    cls: type[SpmSettings],
    value: str | None,
) -> None:
    in_production(monkeypatch, **{variable: value})
    err = refused(cls, capsys)
    assert f"  {variable}: " in err and "32 characters" in err
    if value:
        assert value not in err and STRONG[:20] not in err
    assert "secrets.token_urlsafe(32)" in err, "says how to make one"


@pytest.mark.parametrize(("variable", "cls"), [(f"SPM_{s.upper()}_SECRET", c) for s, c in SERVICE_CLASSES.items()])
def test_the_development_default_of_a_service_secret_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, cls: type[SpmSettings]
) -> None:
    # As docker-compose.yml passes it without a .env: the code's own default, spelled out.
    default = cls.model_fields[variable.removeprefix("SPM_").lower()].default.get_secret_value()
    in_production(monkeypatch, **{variable: default})
    err = refused(cls, capsys)
    assert f"  {variable}: production refuses a development-only default" in err
    assert default not in err


@pytest.mark.parametrize(
    "url",
    [
        f"amqp://guest:{STRONG}@rabbitmq:5672/",  # RabbitMQ's default user, however good its password
        "amqp://guest:guest@127.0.0.1:5672/",  # the code's default
        "amqp://spm:dev-only-rabbitmq-password@rabbitmq:5672/",  # compose's development default
        f"amqp://spm:{SHORT}@rabbitmq:5672/",
        "amqp://spm@rabbitmq:5672/",
    ],
)
@pytest.mark.parametrize("cls", SERVICE_CLASSES.values(), ids=lambda cls: cls.__module__)
def test_a_weak_rabbitmq_login_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str, cls: type[SpmSettings]
) -> None:
    in_production(monkeypatch, SPM_AMQP_URL=url, SPM_NOTIFIER_AMQP_URL=None)
    err = refused(cls, capsys)
    assert "  SPM_AMQP_URL: production " in err
    password = url.split("://")[1].split("@")[0].partition(":")[2]
    if password != "guest":  # the message names the user guest, which is no secret
        assert not password or password not in err


@pytest.mark.parametrize("service", WITH_SCHEMA)
@pytest.mark.parametrize(
    "password", [None, "", "dev-only-{service}-password", SHORT], ids=["unset", "empty", "compose", "short"]
)
def test_a_weak_service_database_password_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], service: str, password: str | None
) -> None:
    variable = f"SPM_{service.upper()}_DATABASE_URL"
    if password is None:  # unset: SPM_DATABASE_URL's database as the role, which has no password
        url = None
    else:
        password = password.format(service=service)
        url = f"postgresql://spm_{service}{':' + password if password else ''}@postgres:5432/spm"
    in_production(monkeypatch, **{variable: url})
    err = refused(SERVICE_CLASSES[service], capsys)
    assert f"  {variable}: production " in err
    assert not password or password not in err


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:5432/spm",  # the code's default: no password
        "postgresql://postgres:dev-only-postgres-password@postgres:5432/spm",  # compose's development default
        f"postgresql://postgres:{SHORT}@postgres:5432/spm",
    ],
)
def test_a_weak_admin_database_password_stops_the_bootstrap(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    in_production(monkeypatch, SPM_DATABASE_URL=url)
    err = refused(BootstrapSettings, capsys)
    assert "  SPM_DATABASE_URL: production " in err
    assert "dev-only-postgres-password" not in err and SHORT not in err


def test_unsubscribe_links_must_be_https(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    in_production(monkeypatch, SPM_NOTIFIER_PUBLIC_URL="http://spmgroup.vn/notifier")
    err = refused(NotifierSettings, capsys)
    assert "  SPM_NOTIFIER_PUBLIC_URL: production needs an https:// URL" in err
    assert "spmgroup.vn/notifier" not in err


@pytest.mark.parametrize("host", ["smtp.example.net", "mailpit", "10.0.0.25", "2001:db8::25"])
def test_smtp_without_tls_is_refused_beyond_this_machine(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], host: str
) -> None:
    in_production(monkeypatch, SPM_SMTP_HOST=host, SPM_SMTP_SECURITY="none")
    err = refused(NotifierSettings, capsys)
    assert "  SPM_SMTP_SECURITY: production refuses SMTP without TLS" in err
    assert host not in err


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.0.0.53", "::1", "[::1]"])
def test_smtp_without_tls_to_this_machine_is_allowed(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    # A relay on the same host (a local Postfix) is reached without crossing the network.
    in_production(monkeypatch, SPM_SMTP_HOST=host, SPM_SMTP_SECURITY="none")
    assert load(NotifierSettings).smtp_security == "none"


def test_every_weak_setting_is_named_at_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in list(os.environ):
        if name.startswith("SPM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SPM_ENVIRONMENT", "production")  # and every default left as it is
    err = refused(NotifierSettings, capsys)
    for variable in (
        "SPM_AMQP_URL",
        "SPM_OPERATOR_TOKEN",
        "SPM_NOTIFIER_DATABASE_URL",
        "SPM_NOTIFIER_SECRET",
        "SPM_NOTIFIER_PUBLIC_URL",
    ):
        assert f"  {variable}: production " in err
    assert "development-only-notifier-secret" not in err


@pytest.mark.parametrize("environment", ["development", "production"])
def test_an_operator_token_shorter_than_32_characters_is_refused_everywhere(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], environment: str
) -> None:
    in_production(monkeypatch, SPM_ENVIRONMENT=environment, SPM_OPERATOR_TOKEN=SHORT)
    err = refused(ContactSettings, capsys)
    assert "  SPM_OPERATOR_TOKEN: " in err and "at least 32 characters" in err
    assert SHORT not in err


def test_an_operator_token_may_be_unset_in_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPM_OPERATOR_TOKEN", "")
    assert load(ContactSettings).operator_token is None
    monkeypatch.setenv("SPM_OPERATOR_TOKEN", STRONG[:32])
    token = load(ContactSettings).operator_token
    assert token is not None and token.get_secret_value() == STRONG[:32]


def run(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPM_")}
    return subprocess.run(
        command, env={**clean, **env}, capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )


def test_a_service_process_with_a_development_secret_exits_in_production() -> None:
    env = {k: v for k, v in PRODUCTION.items() if k != "SPM_AUDIT_SECRET"}
    # Where the database or broker would be is never reached: the process stops before it connects.
    done = run([sys.executable, "-m", "audit"], **env, SPM_AUDIT_SECRET="development-only-audit-secret")
    assert done.returncode != 0
    assert "SPM_AUDIT_SECRET: production refuses a development-only default" in done.stderr
    assert "development-only-audit-secret" not in done.stderr + done.stdout
    assert "SPM_OPERATOR_TOKEN" not in done.stderr, "only the weak one is named"


def test_the_bootstrap_with_compose_development_passwords_exits_in_production() -> None:
    # db-init as docker-compose.yml runs it without a .env, but with SPM_ENVIRONMENT=production.
    env = {
        "SPM_ENVIRONMENT": "production",
        "SPM_DATABASE_URL": "postgresql://postgres:dev-only-postgres-password@127.0.0.1:1/spm",
        **{f"SPM_{s.upper()}_DB_PASSWORD": f"dev-only-{s}-password" for s in WITH_SCHEMA},
    }
    done = run([str(Path(sys.executable).parent / "spm-admin"), "bootstrap"], **env)
    assert done.returncode != 0
    for variable in ("SPM_DATABASE_URL", *(f"SPM_{s.upper()}_DB_PASSWORD" for s in WITH_SCHEMA)):
        assert f"  {variable}: production refuses a development-only default" in done.stderr
    assert "dev-only" not in done.stderr + done.stdout


@pytest.mark.parametrize(
    "url",
    [
        f"amqp://guest:{STRONG}@rabbitmq:5672/",
        "amqp://spm_{service}:dev-only-{service}-rabbitmq-password@rabbitmq:5672/",  # compose's development default
        f"amqp://spm_{{service}}:{SHORT}@rabbitmq:5672/",
        "amqp://spm_{service}@rabbitmq:5672/",
    ],
    ids=["guest", "compose", "short", "none"],
)
@pytest.mark.parametrize("service", WITH_SCHEMA)
def test_a_weak_own_rabbitmq_login_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], service: str, url: str
) -> None:
    # Compose gives each service a RabbitMQ user of its own (SPM_<SERVICE>_AMQP_URL) and no SPM_AMQP_URL.
    variable = f"SPM_{service.upper()}_AMQP_URL"
    url = url.format(service=service)
    in_production(monkeypatch, **{variable: url, "SPM_AMQP_URL": None})
    err = refused(SERVICE_CLASSES[service], capsys)
    assert f"  {variable}: production " in err
    assert "  SPM_AMQP_URL:" not in err, "the shared URL is not used, so not judged"
    password = url.split("://")[1].split("@")[0].partition(":")[2]
    assert not password or password not in err


@pytest.mark.parametrize(
    "changes",
    [
        {"SPM_NOTIFIER_AMQP_URL": None},  # the strong shared login of the other services
        {"SPM_NOTIFIER_AMQP_URL": f"amqp://spm_contact:{strong('contact-rabbitmq')}@rabbitmq:5672/"},
    ],
    ids=["shared", "another-services"],
)
def test_the_notifier_refuses_a_login_not_its_own_in_production(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], changes: dict[str, str | None]
) -> None:
    """A shared login tells no one apart: the notifier would have to take a mail request's source on trust."""
    in_production(monkeypatch, **changes)
    err = refused(NotifierSettings, capsys)
    assert "  SPM_NOTIFIER_AMQP_URL: production needs SPM_NOTIFIER_AMQP_URL logging in as the notifier's own" in err
    assert strong("rabbitmq") not in err and strong("contact-rabbitmq") not in err


@pytest.mark.parametrize(
    "url",
    [
        "http://spm_monitor:dev-only-monitor-rabbitmq-password@rabbitmq:15672",
        f"http://spm_monitor:{SHORT}@rabbitmq:15672",
    ],
    ids=["compose", "short"],
)
def test_a_weak_console_monitor_login_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    in_production(monkeypatch, SPM_CONSOLE_RABBITMQ_MONITOR_URL=url)
    err = refused(ConsoleSettings, capsys)
    assert "  SPM_CONSOLE_RABBITMQ_MONITOR_URL: production " in err
    assert url.split(":")[2].split("@")[0] not in err


def test_the_development_checkpoint_key_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    default = AuditSettings.model_fields["audit_checkpoint_key"].default.get_secret_value()
    in_production(monkeypatch, SPM_AUDIT_CHECKPOINT_KEY=default)
    err = refused(AuditSettings, capsys)
    assert "  SPM_AUDIT_CHECKPOINT_KEY: production refuses a development-only default" in err
    assert default not in err


BROKER_USERS = ("contact", "orders", "notifier", "audit", "console", "shop", "releases", "logs", "monitor")
MANAGED = {
    "SPM_RABBITMQ_MANAGEMENT_URL": f"http://spm:{strong('rabbitmq-admin')}@rabbitmq:15672",
    **{f"SPM_{who.upper()}_AMQP_PASSWORD": strong(f"{who}-amqp") for who in BROKER_USERS},
}


def test_bootstrap_making_the_broker_users_starts_with_strong_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    in_production(monkeypatch, **MANAGED)
    assert load(BootstrapSettings).rabbitmq_management_url is not None


@pytest.mark.parametrize("who", BROKER_USERS)
@pytest.mark.parametrize("value", [SHORT, "dev-only-{who}-rabbitmq-password"], ids=["short", "compose"])
def test_a_weak_broker_user_password_stops_the_bootstrap(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], who: str, value: str
) -> None:
    variable = f"SPM_{who.upper()}_AMQP_PASSWORD"
    value = value.format(who=who)
    in_production(monkeypatch, **{**MANAGED, variable: value})
    err = refused(BootstrapSettings, capsys)
    assert f"  {variable}: production " in err and value not in err


@pytest.mark.parametrize(
    "url",
    [
        "http://spm:dev-only-rabbitmq-password@rabbitmq:15672",  # compose's development default
        f"http://spm:{SHORT}@rabbitmq:15672",
        f"http://guest:{STRONG}@rabbitmq:15672",
    ],
    ids=["compose", "short", "guest"],
)
def test_a_weak_broker_administrator_stops_the_bootstrap(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    in_production(monkeypatch, **{**MANAGED, "SPM_RABBITMQ_MANAGEMENT_URL": url})
    err = refused(BootstrapSettings, capsys)
    assert "  SPM_RABBITMQ_MANAGEMENT_URL: production " in err
    password = url.split(":")[2].split("@")[0]
    assert password == STRONG or password not in err
