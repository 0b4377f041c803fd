"""SPM_ENVIRONMENT=production with a default secret: each container's real command, started as compose would
start it (the Dockerfile's CMD or compose's `command`, with exactly the environment compose gives it), exits
non-zero before it reaches any server, naming each weak variable on stderr and never its value."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from spm_common.settings import PLACEHOLDER, WITH_SCHEMA
from spm_common.testing.compose import Compose, filled_in, parse_dotenv

ROOT = Path(__file__).resolve().parents[1]
IMAGE_VENV = "/app/.venv"
AMQP_USERS = ("contact", "orders", "notifier", "audit", "console", "shop", "releases", "logs", "monitor")


def own(service: str) -> set[str]:
    """What compose gives a service without a .env: its own logins and key, each a development-only default."""
    return {f"SPM_{service.upper()}_DATABASE_URL", f"SPM_{service.upper()}_AMQP_URL", f"SPM_{service.upper()}_SECRET"}


# Without a .env but with SPM_ENVIRONMENT=production, each container names exactly these.
WITHOUT_ENV = {
    "contact": {"SPM_OPERATOR_TOKEN", *own("contact")},
    "contact-relay": {"SPM_OPERATOR_TOKEN", *own("contact")},
    "orders": {"SPM_OPERATOR_TOKEN", "SPM_WEBHOOK_SECRET", *own("orders")},
    "notifier": {"SPM_OPERATOR_TOKEN", "SPM_NOTIFIER_PUBLIC_URL", "SPM_SMTP_SECURITY", *own("notifier")},
    "audit": {"SPM_OPERATOR_TOKEN", "SPM_AUDIT_CHECKPOINT_KEY", *own("audit")},
    "console": {"SPM_OPERATOR_TOKEN", "SPM_CONSOLE_RABBITMQ_MONITOR_URL", *own("console")},
    "db-init": {
        "SPM_DATABASE_URL",
        "SPM_RABBITMQ_MANAGEMENT_URL",
        *(f"SPM_{s.upper()}_DB_PASSWORD" for s in WITH_SCHEMA),
        *(f"SPM_{who.upper()}_AMQP_PASSWORD" for who in AMQP_USERS),
    },
}
# With .env.example filled in for production, the one variable left out of it (so compose's development-only
# default applies), and so the one a container must name.
LEFT_OUT = {
    "contact": "SPM_CONTACT_SECRET",
    "contact-relay": "SPM_CONTACT_SECRET",
    "orders": "SPM_ORDERS_SECRET",
    "notifier": "SPM_NOTIFIER_SECRET",
    "audit": "SPM_AUDIT_SECRET",
    "console": "SPM_CONSOLE_SECRET",
    "db-init": "SPM_CONTACT_DB_PASSWORD",
}


def start(compose: Compose, name: str) -> subprocess.CompletedProcess[str]:
    image = compose.image(name, base_env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    env = {**image.env, **compose.environment(name)}
    env["PATH"] = env["PATH"].replace(IMAGE_VENV, sys.prefix)  # the image's environment is this checkout's
    # A process that got past its settings would try the container hosts (postgres, rabbitmq) and wait: the
    # timeout fails the test then.
    return subprocess.run(
        compose.command(name, image), env=env, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )


def named(stderr: str) -> set[str]:
    return set(re.findall(r"^  (SPM_\w+): production ", stderr, re.MULTILINE))


def development_defaults(compose: Compose, name: str) -> list[str]:
    """The development-only passwords and keys in the container's environment (none may be echoed)."""
    values = []
    for value in compose.environment(name).values():
        values += re.findall(r"(?:dev-only|development-only)[\w-]*", value)
    return values


@pytest.mark.parametrize("name", list(WITHOUT_ENV))
def test_without_a_env_production_stops_each_container_naming_every_weak_variable(name: str) -> None:
    compose = Compose(ROOT, shell={}, dotenv={"SPM_ENVIRONMENT": "production"})
    done = start(compose, name)
    assert done.returncode != 0, done.stdout + done.stderr
    assert named(done.stderr) == WITHOUT_ENV[name], done.stderr
    for value in development_defaults(compose, name):
        assert value not in done.stderr + done.stdout
    assert "tuho3Q4B" not in done.stderr, "the development checkpoint key is never echoed"


@pytest.mark.parametrize("name", list(LEFT_OUT))
def test_one_default_secret_in_a_production_env_stops_the_container_naming_it(name: str) -> None:
    example = parse_dotenv((ROOT / ".env.example").read_text(encoding="utf-8"))
    dotenv = filled_in(
        {
            **example,
            "SPM_ENVIRONMENT": "production",
            "SPM_NOTIFIER_PUBLIC_URL": "https://notify.example.com",
            "SPM_SMTP_SECURITY": "starttls",
        },
        PLACEHOLDER,
    )
    del dotenv[LEFT_OUT[name]]
    compose = Compose(ROOT, shell={}, dotenv=dotenv)
    done = start(compose, name)
    assert done.returncode != 0, done.stdout + done.stderr
    assert named(done.stderr) == {LEFT_OUT[name]}, done.stderr
    assert "production refuses a development-only default" in done.stderr
    for value in development_defaults(compose, name):
        assert value not in done.stderr + done.stdout
