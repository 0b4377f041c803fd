"""Rules of the console without servers: cookie signatures, where a form may send the browser back to, every
text in both languages, cookies Secure in production."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from console import i18n
from console.api import TEMPLATES, safe_next
from console.sessions import Signer
from console.settings import Settings


def test_a_cookie_the_console_did_not_sign_is_refused() -> None:
    signer = Signer(b"k" * 32)
    value = signer.sign("token")
    assert signer.unsign(value) == "token"
    for forged in ("token", value + "x", "x" + value, value.replace("token", "tokem"), "", None, "a.b.c"):
        assert signer.unsign(forged) is None
    assert Signer(b"other-key" * 4).unsign(value) is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/inbox?state=closed", "/inbox?state=closed"),
        ("/orders/1", "/orders/1"),
        ("//evil.example/", "/inbox"),
        ("https://evil.example/", "/inbox"),
        ("/\\evil.example", "/inbox"),
        ("", "/inbox"),
        ("javascript:alert(1)", "/inbox"),
    ],
)
def test_a_form_sends_the_browser_back_to_this_console_only(given: str, expected: str) -> None:
    assert safe_next(given) == expected


def test_every_text_the_templates_use_exists_in_both_languages() -> None:
    used = set()
    for template in Path(TEMPLATES).glob("*.html"):
        used |= set(re.findall(r"""t\(["']([a-z_]+)["']\s*[,)]""", template.read_text(encoding="utf-8")))
    assert used, "no text found in the templates"
    assert not used - set(i18n.TEXTS), f"texts missing from i18n.TEXTS: {sorted(used - set(i18n.TEXTS))}"
    # Texts named from a value: every value the services send has its text.
    for prefix, values in (
        ("status_", ("new", "answered", "closed")),
        ("delivery_", ("queued", "sent", "failed")),
        ("role_", ("support", "admin")),
    ):
        assert {prefix + v for v in values} <= set(i18n.TEXTS), prefix
    for key, (vi, en) in i18n.TEXTS.items():
        assert vi.strip() and en.strip(), key


def test_cookies_are_secure_in_production_only() -> None:
    assert Settings(environment="development").secure_cookies is False
    assert Settings.model_construct(environment="production").secure_cookies is True
