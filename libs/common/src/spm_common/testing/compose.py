"""docker-compose.yml and the Dockerfile read as Docker reads them, for tests on a machine without a Docker engine.

`Compose(root, shell)` resolves every container's configuration the way `docker compose` does: YAML anchors and
merge keys, then `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR:+alternative}`, `$VAR` and
`$$` against the shell's variables over those of a `.env` file (the shell wins). `image_of` reads what a built
image adds: the final stage's ENV, CMD and ENTRYPOINT, with its build arguments.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# `$$` (a literal `$`), `${NAME}`, `${NAME<op>word}` with op one of `:-` `-` `:?` `?` `:+` `+`, and `$NAME`.
INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<word>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class ComposeError(ValueError):
    """What `docker compose` itself would refuse (a `${VAR:?message}` unset, an unsupported form)."""


@dataclass(frozen=True)
class Reference:
    """One `${NAME...}` or `$NAME` in a value: the variable, its operator (None for a plain reference) and word."""

    name: str
    op: str | None
    word: str

    @property
    def default(self) -> str | None:
        """The value used when the variable is unset (`-`) or also when empty (`:-`), else None."""
        return self.word if self.op in ("-", ":-") else None


def references(text: str) -> Iterator[Reference]:
    for match in INTERPOLATION.finditer(text):
        if match["escaped"]:
            continue
        if match["bare"]:
            yield Reference(match["bare"], None, "")
        else:
            yield Reference(match["name"], match["op"], match["word"] or "")


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["name"] or match["bare"]
        op, word = match["op"], match["word"] or ""
        is_set, value = name in variables, variables.get(name, "")
        if op is None:
            return value  # compose warns about an unset variable and uses ""
        if op == ":-":
            return value if value else word
        if op == "-":
            return value if is_set else word
        if op in (":?", "?"):
            if not (value if op == ":?" else is_set):
                raise ComposeError(f"required variable {name} is missing a value: {word}")
            return value
        if op == ":+":
            return word if value else ""
        return word if is_set else ""  # "+"

    return INTERPOLATION.sub(replace, text)


def _interpolate_all(node: Any, variables: Mapping[str, str]) -> Any:
    """Every string value of the document; keys are names, never interpolated."""
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, dict):
        return {key: _interpolate_all(value, variables) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate_all(value, variables) for value in node]
    return node


def parse_dotenv(text: str, shell: Mapping[str, str] | None = None) -> dict[str, str]:
    """A `.env` file as compose reads it: `KEY=value` lines, `#` comments, `export ` allowed; single quotes are
    literal, double quotes take `\\n`-style escapes; unquoted and double-quoted values are interpolated (against
    the shell, then the lines above); an unquoted value ends at ` #`."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", key):
            raise ComposeError(f".env line {number}: expected KEY=value")
        rest = rest.strip()
        scope = {**values, **(shell or {})}
        if rest.startswith("'"):
            end = rest.find("'", 1)
            if end < 0:
                raise ComposeError(f".env line {number}: unterminated quote")
            values[key] = rest[1:end]
        elif rest.startswith('"'):
            match = re.match(r'"((?:[^"\\]|\\.)*)"', rest)
            if not match:
                raise ComposeError(f".env line {number}: unterminated quote")
            unescaped = re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m[1], m[1]), match[1])
            values[key] = interpolate(unescaped, scope)
        else:
            values[key] = interpolate(re.split(r"\s+#", rest, maxsplit=1)[0].strip(), scope)
    return values


def environment_of(container: Mapping[str, Any], shell: Mapping[str, str]) -> dict[str, str]:
    """A container's `environment` (mapping or list form) after interpolation; `KEY` alone takes the shell's."""
    if container.get("env_file"):
        raise ComposeError("env_file is not read here; list the variables under environment")
    entries = container.get("environment") or {}
    if isinstance(entries, list):
        pairs = [(entry.partition("=")[0], entry.partition("=")[2] if "=" in entry else None) for entry in entries]
    else:
        pairs = list(entries.items())
    env: dict[str, str] = {}
    for key, value in pairs:
        if value is None:
            if key in shell:
                env[key] = shell[key]
        elif isinstance(value, bool):
            env[key] = "true" if value else "false"
        else:
            env[key] = str(value)
    return env


def command_words(value: str | list[str] | None) -> list[str] | None:
    if value is None:
        return None
    return shlex.split(value) if isinstance(value, str) else [str(word) for word in value]


@dataclass
class Image:
    """What a Dockerfile's final stage gives a container: its environment, entry point and command."""

    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)


def image_of(dockerfile: str, build_args: Mapping[str, str], base_env: Mapping[str, str]) -> Image:
    """The final stage of `dockerfile` built with `build_args`, over a base image whose environment is `base_env`."""
    instructions = re.sub(r"\\\n", " ", "\n".join(line for line in dockerfile.splitlines() if not line.startswith("#")))
    global_args: dict[str, str] = {}
    image = Image()
    args: dict[str, str] = {}
    in_stage = False
    for line in instructions.splitlines():
        instruction, _, rest = line.strip().partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "FROM":
            in_stage = True
            image = Image(env=dict(base_env))
            args = {}
        elif instruction == "ARG":
            name, has_default, default = rest.partition("=")
            value = build_args.get(name, global_args.get(name, default if has_default else ""))
            (args if in_stage else global_args)[name] = value
        elif instruction == "ENV" and in_stage:
            words = shlex.split(rest)
            pairs = [w.partition("=") for w in words] if "=" in words[0] else [(words[0], "=", " ".join(words[1:]))]
            for name, _, value in pairs:
                image.env[name] = interpolate(value, {**image.env, **args})
        elif instruction in ("CMD", "ENTRYPOINT") and in_stage:
            words = json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
            if instruction == "CMD":
                image.cmd = words
            else:
                image.entrypoint = words
                image.cmd = []  # as Docker does: a new ENTRYPOINT resets an inherited CMD
    return image


class Compose:
    """docker-compose.yml in `root`, resolved against `shell` (the variables of the shell compose runs in) over
    `dotenv` (the `.env` file's, if any)."""

    def __init__(self, root: Path, shell: Mapping[str, str], dotenv: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.raw: dict[str, Any] = yaml.safe_load((root / "docker-compose.yml").read_text(encoding="utf-8"))
        self.variables = {**(dotenv or {}), **shell}
        self.document: dict[str, Any] = _interpolate_all(self.raw, self.variables)

    @property
    def containers(self) -> dict[str, dict[str, Any]]:
        services = self.document["services"]
        assert isinstance(services, dict)
        return services

    def environment(self, name: str) -> dict[str, str]:
        return environment_of(self.containers[name], self.variables)

    def image(self, name: str, base_env: Mapping[str, str]) -> Image:
        build = self.containers[name]["build"]
        context = self.root / build.get("context", ".")
        dockerfile = (context / build.get("dockerfile", "Dockerfile")).read_text(encoding="utf-8")
        args = {str(key): str(value) for key, value in (build.get("args") or {}).items()}
        return image_of(dockerfile, args, base_env)

    def command(self, name: str, image: Image) -> list[str]:
        """What the container runs: its ENTRYPOINT (compose's `entrypoint` or the image's) with compose's
        `command`, or the image's CMD where compose gives none."""
        container = self.containers[name]
        entrypoint = command_words(container.get("entrypoint"))
        command = command_words(container.get("command"))
        if entrypoint is not None:
            return entrypoint + (command or [])
        return image.entrypoint + (command if command is not None else image.cmd)


# How a person fills in a placeholder of .env.example, where the comment above it asks for more than a random
# string: the audit's checkpoint key is an Ed25519 private key (`spm-audit-admin checkpoints new-key`).
_FILLERS: dict[str, Any] = {"SPM_AUDIT_CHECKPOINT_KEY": lambda: base64.b64encode(secrets.token_bytes(32)).decode()}


def filled_in(example: Mapping[str, str], placeholder: str) -> dict[str, str]:
    """.env.example as an operator fills it in: each value holding `placeholder` replaced by a new random
    secret of 40 characters (or what its variable needs)."""
    return {
        key: _FILLERS.get(key, lambda: secrets.token_urlsafe(30))() if placeholder in value else value
        for key, value in example.items()
    }
