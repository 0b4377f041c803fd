"""The deployment files, checked without a Docker engine: docker-compose.yml, the Dockerfile, .env.example.

No Docker runs here, so these tests read the files and check what `docker compose up -d` relies on: every
container, its ports (CONTRACT section 1), health checks, start order, restart policies, named volumes, one
image per service installed from the lock file, and configuration that is documented and holds no secret.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from audit.settings import Settings as AuditSettings
from console.settings import Settings as ConsoleSettings
from contact.settings import Settings as ContactSettings
from notifier.settings import Settings as NotifierSettings
from orders.settings import Settings as OrdersSettings
from pydantic import SecretStr
from spm_common.brokerusers import USERS
from spm_common.settings import (
    PLACEHOLDER,
    WITH_SCHEMA,
    BootstrapSettings,
    ServiceSettings,
    SpmSettings,
    load,
)
from spm_common.testing.compose import Compose, references
from spm_common.testing.compose import filled_in as fill_placeholders

ROOT = Path(__file__).resolve().parents[1]
PORTS = {"contact": 8081, "orders": 8082, "notifier": 8083, "audit": 8084, "console": 8080}
SETTINGS: dict[str, type[ServiceSettings]] = {
    "contact": ContactSettings,
    "orders": OrdersSettings,
    "notifier": NotifierSettings,
    "audit": AuditSettings,
    "console": ConsoleSettings,
}
INFRASTRUCTURE = ("postgres", "rabbitmq", "mailpit")
ONE_SHOT = ("db-init",)
# The settings class each container reads its environment into.
READERS: dict[str, type[SpmSettings]] = {**SETTINGS, "contact-relay": ContactSettings, "db-init": BootstrapSettings}
# Containers started only with their profile: contact's outbox relay as a process of its own.
OPTIONAL = ("contact-relay",)
# Variables of the code that are no setting a person makes.
INTERNAL_FIELDS = {"service"}
# Secrets compose must never hand to a service that has no use for them.
ADMIN_SECRETS = {"SPM_POSTGRES_PASSWORD", "SPM_RABBITMQ_PASSWORD"}


def load_compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def containers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    """Every `NAME=value` of .env.example, including the commented-out ones (documented, not set)."""
    values = {}
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^#?\s*(SPM_[A-Z0-9_]+)=(.*)$", line)
        if match:
            values[match.group(1)] = match.group(2).strip().strip('"')
    return values


def compose_variables() -> dict[str, set[str]]:
    """Each variable the compose file interpolates, with the defaults it is given there."""
    found: dict[str, set[str]] = {}
    for reference in references((ROOT / "docker-compose.yml").read_text(encoding="utf-8")):
        defaults = found.setdefault(reference.name, set())
        if reference.default is not None:
            defaults.add(reference.default)
    return found


def settings_variables() -> dict[str, object]:
    """Every SPM_* variable the services and `spm-admin bootstrap` read, with its default in the code."""
    variables: dict[str, object] = {}
    for cls in set(READERS.values()):
        for name, field in cls.model_fields.items():
            if name not in INTERNAL_FIELDS:
                variables[f"SPM_{name.upper()}"] = field.get_default(call_default_factory=True)
    return variables


def readers_of(variable: str) -> list[type[SpmSettings]]:
    field = variable.removeprefix("SPM_").lower()
    return [cls for cls in set(READERS.values()) if field in cls.model_fields]


def resolved_environment(name: str, dotenv: dict[str, str]) -> dict[str, str]:
    """The environment compose gives a container, with `dotenv` as the .env file (empty: no .env)."""
    return Compose(ROOT, shell={}, dotenv=dotenv).environment(name)


def environment(container: dict[str, Any]) -> dict[str, str]:
    env = container.get("environment", {})
    assert isinstance(env, dict), "environment is written as a mapping"
    return {key: str(value) for key, value in env.items()}


def test_every_container_is_there(containers: dict[str, dict[str, Any]]) -> None:
    assert set(containers) == {*INFRASTRUCTURE, *ONE_SHOT, *WITH_SCHEMA, *OPTIONAL}
    for name in OPTIONAL:
        assert containers[name].get("profiles"), f"{name} starts only when asked for"


def test_the_separate_contact_relay_is_the_contact_image_with_its_own_command(
    containers: dict[str, dict[str, Any]],
) -> None:
    relay, contact = containers["contact-relay"], containers["contact"]
    assert relay["build"] == contact["build"] and relay["command"] == ["spm-contact-relay"]
    assert environment(contact)["SPM_CONTACT_OUTBOX_RELAY"] == "${SPM_CONTACT_OUTBOX_RELAY:-in-process}"
    for variable in ("SPM_CONTACT_DATABASE_URL", "SPM_CONTACT_SECRET", "SPM_CONTACT_AMQP_URL"):
        assert environment(relay)[variable] == environment(contact)[variable], variable
    assert "http://127.0.0.1:8091/readyz" in relay["healthcheck"]["test"][3]
    assert relay["depends_on"] == contact["depends_on"] and not relay.get("ports")


def test_the_infrastructure_images(containers: dict[str, dict[str, Any]]) -> None:
    assert re.fullmatch(r"postgres:17\.\d+(-\w+)?", containers["postgres"]["image"])
    # RabbitMQ 4 with the management plugin (its UI) enabled: the official `-management` image.
    assert re.fullmatch(r"rabbitmq:4\.\d+\.\d+-management", containers["rabbitmq"]["image"])
    assert containers["mailpit"]["image"].startswith("axllent/mailpit:")


# A tag names one release only with every part of its version: Postgres numbers releases MAJOR.MINOR, the
# others MAJOR.MINOR.PATCH (`17`, `4-management`, `3.11-slim` or `latest` move to each new release).
FULL_VERSION = {"postgres": r"\d+\.\d+"}
DEFAULT_FULL_VERSION = r"v?\d+\.\d+\.\d+"


def images() -> dict[str, str]:
    """Every image the stack runs or builds from: compose's `image:` entries and the Dockerfile's FROM lines."""
    found = {f"docker-compose.yml {name}": c["image"] for name, c in load_compose()["services"].items() if "image" in c}
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    for number, line in enumerate(dockerfile.splitlines(), 1):
        if line.startswith("FROM "):
            found[f"Dockerfile line {number}"] = line.split()[1]
    return found


def test_every_image_is_pinned_to_an_exact_version() -> None:
    pinned = images()
    assert len(pinned) == 5, pinned
    for where, image in pinned.items():
        if "@sha256:" in image:
            continue
        repository, _, tag = image.partition(":")
        version = FULL_VERSION.get(repository, DEFAULT_FULL_VERSION)
        assert re.fullmatch(rf"{version}(-[a-z0-9.-]+)?", tag), f"{where}: {image} is not pinned to one release"
        assert "latest" not in tag, f"{where}: {image}"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for image in pinned.values():
        assert f"`{image}`" in readme, f"README.md does not say {image} is what compose runs"


def published(container: dict[str, Any]) -> dict[int, str]:
    """Container port -> the host side of its mapping (`[address:]port`, possibly `${VARIABLE:-default}`)."""
    mappings = {}
    for entry in container.get("ports", []):
        host, _, inside = str(entry).rpartition(":")
        mappings[int(inside)] = host
    return mappings


def test_each_service_listens_on_its_contract_port(containers: dict[str, dict[str, Any]]) -> None:
    for service, port in PORTS.items():
        # On this machine's loopback unless the operator says otherwise: a TLS reverse proxy serves them to others.
        host = f"${{SPM_PUBLISH_ADDRESS:-127.0.0.1}}:${{SPM_{service.upper()}_PORT:-{port}}}"
        assert published(containers[service]) == {port: host}, service
        assert containers[service]["build"]["args"]["PORT"] == str(port), "the image EXPOSEs the contract port"
        # The port inside the container is the default one: no SPM_<SERVICE>_PORT inside it.
        assert f"SPM_{service.upper()}_PORT" not in environment(containers[service])


def test_the_uis_are_published_on_loopback(containers: dict[str, dict[str, Any]]) -> None:
    assert published(containers["mailpit"]) == {8025: "127.0.0.1:8025"}
    assert published(containers["rabbitmq"]) == {15672: "127.0.0.1:15672"}
    for name in ("postgres", "db-init"):
        assert not containers[name].get("ports"), f"{name} is reached over the compose network only"


def test_every_long_running_container_has_a_health_check(containers: dict[str, dict[str, Any]]) -> None:
    for name, container in containers.items():
        if name in ONE_SHOT:
            continue
        check = container.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), name
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        for key in ("interval", "timeout", "retries"):
            assert key in check, f"{name}: healthcheck without {key}"


def test_a_service_is_healthy_when_its_readyz_answers(containers: dict[str, dict[str, Any]]) -> None:
    for service, port in PORTS.items():
        test = containers[service]["healthcheck"]["test"]
        # Slim images have no curl: the image's own Python asks.
        assert test[:3] == ["CMD", "python", "-c"], service
        assert f"http://127.0.0.1:{port}/readyz" in test[3], service
        compile(test[3], f"{service} healthcheck", "exec")


def test_start_order(containers: dict[str, dict[str, Any]]) -> None:
    for name, container in containers.items():
        for dependency, rule in (container.get("depends_on") or {}).items():
            assert dependency in containers, f"{name} depends on unknown {dependency}"
            condition = rule["condition"]
            if dependency in ONE_SHOT:
                assert condition == "service_completed_successfully", f"{name} -> {dependency}"
            else:
                assert condition == "service_healthy", f"{name} -> {dependency}"
                assert containers[dependency].get("healthcheck"), f"{dependency} must have a health check"
    assert set(containers["db-init"]["depends_on"]) == {"postgres", "rabbitmq"}
    for service in WITH_SCHEMA:
        needs = {"db-init", "postgres", "rabbitmq"} | ({"mailpit"} if service == "notifier" else set())
        assert set(containers[service]["depends_on"]) == needs, service


def test_restart_policies(containers: dict[str, dict[str, Any]]) -> None:
    for name, container in containers.items():
        if name in ONE_SHOT:
            assert container["restart"] == "no", f"{name} runs once"
        else:
            assert container["restart"] in ("unless-stopped", "always"), name


def test_data_lives_in_named_volumes(compose: dict[str, Any], containers: dict[str, dict[str, Any]]) -> None:
    named = set(compose.get("volumes") or {})
    mounts = {}
    for name, container in containers.items():
        for volume in container.get("volumes", []):
            source, _, target = str(volume).partition(":")
            assert source in named, f"{name}: {source} is not a named volume"
            mounts[name] = target.split(":")[0]
    assert mounts["postgres"] == "/var/lib/postgresql/data"
    assert mounts["rabbitmq"] == "/var/lib/rabbitmq"
    assert "mailpit" in mounts
    assert containers["rabbitmq"].get("hostname"), "RabbitMQ keeps its data under its node name: fix the host name"
    used = {str(volume).partition(":")[0] for c in containers.values() for volume in c.get("volumes", [])}
    assert named == used, "every named volume is mounted somewhere"


def test_each_service_is_built_from_the_one_dockerfile_for_itself(containers: dict[str, dict[str, Any]]) -> None:
    for service, port in PORTS.items():
        build = containers[service]["build"]
        assert build == {"context": ".", "args": {"SERVICE": service, "PORT": str(port)}}, service
    # The one-shot bootstrap has every service installed: it applies each one's migrations as its owner role.
    assert containers["db-init"]["build"]["context"] == "."
    assert containers["db-init"]["build"]["args"]["SERVICE"] == "all"
    assert containers["db-init"]["command"] == ["spm-admin", "bootstrap"]


def test_the_dockerfile_installs_one_service_from_the_lock_file() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.1[1-9]\.\d+-slim-bookworm\b", text, re.MULTILINE)
    assert re.search(r"^COPY pyproject\.toml uv\.lock ", text, re.MULTILINE)
    syncs = [line for line in text.splitlines() if line.startswith("RUN uv sync")]
    assert syncs, "no uv sync"
    for line in syncs:
        assert "--frozen" in line and "--no-dev" in line, line
        assert '--package "spm-${SERVICE}"' in line and "--all-packages" in line, line
    # Installed, not linked to the build stage's source tree, so the final image needs only the environment.
    assert "--no-editable" in syncs[-1]
    # Only the chosen service's code goes in: the image gets the environment uv installed, nothing else.
    copies = [line for line in text.splitlines() if line.startswith("COPY --from")]
    assert copies == ["COPY --from=build /app/.venv /app/.venv"]
    user = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert user and user[-1].split(":")[0] not in ("root", "0"), "the service must not run as root"
    assert re.search(r"^EXPOSE \$\{PORT\}$", text, re.MULTILINE)
    assert 'exec \\"spm-${SPM_SERVICE}\\"' in text, "PID 1 is the service's console script"
    for service in WITH_SCHEMA:
        pyproject = (ROOT / "services" / service / "pyproject.toml").read_text(encoding="utf-8")
        assert f"spm-{service} = " in pyproject, "the CMD runs the service's console script"


def test_the_docker_build_context_leaves_out_local_state() -> None:
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for entry in (".git", "**/.venv", ".env", "**/__pycache__"):
        assert entry in ignored, entry
    assert "uv.lock" not in ignored and "libs" not in ignored and "services" not in ignored


def test_services_bind_all_interfaces_and_reach_postgres_as_their_own_role(
    containers: dict[str, dict[str, Any]],
) -> None:
    for service in WITH_SCHEMA:
        env = environment(containers[service])
        assert env["SPM_HTTP_HOST"] == "0.0.0.0", service  # noqa: S104 (inside a container, on purpose)
        url = env[f"SPM_{service.upper()}_DATABASE_URL"]
        assert url.startswith(f"postgresql://spm_{service}:${{SPM_{service.upper()}_DB_PASSWORD"), service
        assert url.endswith("@postgres:5432/spm"), service
        # Least privilege: no admin password, no other service's password, no admin database URL.
        used = {reference.name for value in env.values() for reference in references(value)}
        assert not used & ADMIN_SECRETS, service
        assert not {f"SPM_{other.upper()}_DB_PASSWORD" for other in WITH_SCHEMA if other != service} & used, service
        assert "SPM_DATABASE_URL" not in env, service
        assert env["SPM_SMTP_HOST"].endswith("mailpit}")
        # Its own RabbitMQ user, never the administrator's.
        amqp = env[f"SPM_{service.upper()}_AMQP_URL"]
        assert amqp.startswith(f"amqp://spm_{service}:${{SPM_{service.upper()}_AMQP_PASSWORD:-"), service
        assert amqp.endswith("@rabbitmq:5672/") and "SPM_AMQP_URL" not in env, service
        assert not {f"SPM_{other.upper()}_AMQP_PASSWORD" for other in WITH_SCHEMA if other != service} & used, service
    init = environment(containers["db-init"])
    for who in USERS:
        assert f"SPM_{who.upper()}_AMQP_PASSWORD" in init, who
    for service in WITH_SCHEMA:
        assert f"SPM_{service.upper()}_DB_PASSWORD" in init


def test_every_variable_compose_reads_is_documented(env_example: dict[str, str]) -> None:
    missing = sorted(set(compose_variables()) - set(env_example))
    assert not missing, f"documented nowhere in .env.example: {missing}"


def test_every_setting_of_the_code_is_documented(env_example: dict[str, str]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for variable in [*settings_variables(), "SPM_TEST_DATABASE_URL", "SPM_TEST_AMQP_URL"]:
        assert variable in env_example, f"{variable} is read by the code but not in .env.example"
        assert f"`{variable}`" in readme, f"{variable} is missing from README.md's configuration table"


def test_compose_defaults_are_the_code_defaults() -> None:
    code = settings_variables()
    # Inside compose, mail goes to the Mailpit container rather than to this machine, and its Postgres asks
    # every role for a password (development-only ones without a .env).
    own_defaults = {
        "SPM_SMTP_HOST",
        *(f"SPM_{s.upper()}_DB_PASSWORD" for s in WITH_SCHEMA),
        *(f"SPM_{who.upper()}_AMQP_PASSWORD" for who in USERS),
    }
    for variable, defaults in compose_variables().items():
        if variable not in code or variable in own_defaults:
            continue
        expected = code[variable]
        if isinstance(expected, SecretStr):
            expected = expected.get_secret_value()
        for default in defaults:
            if expected is None or expected == []:
                # Compose cannot leave a variable out: `${VAR:-}` passes "". That is the code's "unset" (None,
                # or an empty list such as SPM_TRUSTED_PROXIES) only
                # because every class that reads the variable takes an empty value as unset.
                assert default == "", variable
                for cls in readers_of(variable):
                    assert cls.model_config.get("env_ignore_empty") is True, f"{cls.__module__} reads {variable}"
            else:
                assert default == str(expected), variable


@pytest.mark.parametrize("name", READERS)
def test_compose_without_a_env_file_starts_in_development(
    containers: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    for variable in [v for v in os.environ if v.startswith("SPM_")]:
        monkeypatch.delenv(variable)
    for variable, value in resolved_environment(name, {}).items():
        monkeypatch.setenv(variable, value)
    assert load(READERS[name]).environment == "development"


@pytest.mark.parametrize("name", READERS)
def test_compose_development_passwords_are_refused_in_production(
    containers: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    # A .env that sets SPM_ENVIRONMENT=production and nothing else: every container, db-init too, refuses.
    for variable in [v for v in os.environ if v.startswith("SPM_")]:
        monkeypatch.delenv(variable)
    for variable, value in resolved_environment(name, {"SPM_ENVIRONMENT": "production"}).items():
        monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exited:
        load(READERS[name])
    assert exited.value.code != 0
    assert "dev-only" not in capsys.readouterr().err


def filled_in(env_example: dict[str, str], **changes: str) -> dict[str, str]:
    """.env.example as a person fills it in: each placeholder replaced by a random 40-character secret."""
    return fill_placeholders({**env_example, **changes}, PLACEHOLDER)


@pytest.mark.parametrize("name", READERS)
def test_the_filled_in_example_starts_in_development(
    containers: dict[str, dict[str, Any]], env_example: dict[str, str], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    for variable in [v for v in os.environ if v.startswith("SPM_")]:
        monkeypatch.delenv(variable)
    for variable, value in resolved_environment(name, filled_in(env_example)).items():
        monkeypatch.setenv(variable, value)
    assert load(READERS[name]).environment == "development"


@pytest.mark.parametrize("name", READERS)
def test_in_production_the_filled_in_example_needs_https_links_and_smtp_over_tls(
    containers: dict[str, dict[str, Any]],
    env_example: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    for variable in [v for v in os.environ if v.startswith("SPM_")]:
        monkeypatch.delenv(variable)
    dotenv = filled_in(env_example, SPM_ENVIRONMENT="production")
    for variable, value in resolved_environment(name, dotenv).items():
        monkeypatch.setenv(variable, value)
    if name != "notifier":
        assert load(READERS[name]).environment == "production"
        return
    # The example's mail goes to compose's Mailpit, in clear, and its links to this machine over http.
    with pytest.raises(SystemExit):
        load(READERS[name])
    named = sorted(re.findall(r"^  (SPM_\w+): ", capsys.readouterr().err, re.MULTILINE))
    assert named == ["SPM_NOTIFIER_PUBLIC_URL", "SPM_SMTP_SECURITY"]


def test_the_example_holds_placeholders_not_secrets(env_example: dict[str, str]) -> None:
    for variable, value in env_example.items():
        if re.search(r"PASSWORD|SECRET|TOKEN", variable):
            assert value == "" or value.startswith(PLACEHOLDER), f"{variable} looks like a real secret"
        for password in re.findall(r"://[^:/@\s]+:([^@\s]*)@", value):
            assert password == "guest" or password.startswith(PLACEHOLDER), f"{variable} holds a password"
        # Nor anything that looks like a generated key (a long run of letters and digits, as base64 or hex).
        for run in re.findall(r"[A-Za-z0-9+/=_-]{20,}", value):
            assert not (re.search(r"\d", run) and re.search(r"[A-Za-z]", run)), f"{variable} looks like a key"


def test_compose_dev_defaults_are_never_placeholders() -> None:
    # Without a .env the stack must start: a default holding the placeholder would be refused.
    for variable, defaults in compose_variables().items():
        for default in defaults:
            assert PLACEHOLDER not in default, variable
