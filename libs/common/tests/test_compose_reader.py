"""The compose reader the deployment tests rely on resolves variables as `docker compose` does."""

from __future__ import annotations

import pytest
from spm_common.testing.compose import ComposeError, image_of, interpolate, parse_dotenv, references


def test_interpolation_follows_compose() -> None:
    env = {"SET": "value", "EMPTY": ""}
    cases = {
        "${SET}": "value",
        "${UNSET}": "",
        "$SET/x": "value/x",
        "${SET:-d}|${EMPTY:-d}|${UNSET:-d}": "value|d|d",
        "${SET-d}|${EMPTY-d}|${UNSET-d}": "value||d",
        "${SET:+alt}|${EMPTY:+alt}|${EMPTY+alt}|${UNSET+alt}": "alt||alt|",
        "$$": "$",
        "$${SET}": "${SET}",
        "a:${SET:-x}@host": "a:value@host",
    }
    for text, expected in cases.items():
        assert interpolate(text, env) == expected, text
    with pytest.raises(ComposeError):
        interpolate("${EMPTY:?needed}", env)
    assert interpolate("${EMPTY?needed}", env) == ""
    assert [(r.name, r.default) for r in references("$$ ${A:-1} ${B} $C ${D-}")] == [
        ("A", "1"),
        ("B", None),
        ("C", None),
        ("D", ""),
    ]


def test_dotenv_quotes_comments_and_interpolation() -> None:
    text = """
# a comment
export PLAIN=one two  # trailing comment
DOUBLE="SPM Group <no-reply@example.com>"
SINGLE='${PLAIN} stays'
USES=${PLAIN}-x
EMPTY=
ESCAPED="a\\"b"
"""
    assert parse_dotenv(text) == {
        "PLAIN": "one two",
        "DOUBLE": "SPM Group <no-reply@example.com>",
        "SINGLE": "${PLAIN} stays",
        "USES": "one two-x",
        "EMPTY": "",
        "ESCAPED": 'a"b',
    }


def test_the_final_stage_of_a_dockerfile() -> None:
    dockerfile = """ARG SERVICE
FROM base AS build
ENV BUILD_ONLY=1
FROM base
ARG SERVICE
ENV PATH="/app/.venv/bin:$PATH" \\
    SPM_SERVICE=${SERVICE}
CMD ["sh", "-c", "exec spm-${SPM_SERVICE}"]
"""
    image = image_of(dockerfile, {"SERVICE": "orders"}, {"PATH": "/usr/bin"})
    assert image.env == {"PATH": "/app/.venv/bin:/usr/bin", "SPM_SERVICE": "orders"}
    assert image.cmd == ["sh", "-c", "exec spm-${SPM_SERVICE}"] and image.entrypoint == []
