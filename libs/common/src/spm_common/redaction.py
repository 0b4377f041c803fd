"""Removes personal data and card numbers from anything that may reach a log line or an error report."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from spm_common import cards

REDACTED = "[redacted]"

# Keys whose values are personal data whatever they look like (CONTRACT 5.7).
PERSONAL_KEYS = frozenset(
    {
        "name",
        "full_name",
        "first_name",
        "last_name",
        "email",
        "e_mail",
        "to",
        "recipient",
        "rcpt",
        "phone",
        "telephone",
        "mobile",
        "address",
        "line1",
        "line2",
        "street",
        "city",
        "region",
        "postal_code",
        "zip",
        "message",
        "body",
        "text",
        "subject",
        "purchaser",
        "sender",
        "license_key",
        "license_keys",
        "key",
        "keys",
        "client_ip",
        "ip",
        "remote_addr",
        "user_agent",
        "card_number",
        "pan",
        "cvv",
        "cvc",
        "card_expiry",
        "password",
        "token",
        "secret",
        "authorization",
    }
)

EMAIL_RE = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
# 13-19 digits, optionally separated by single spaces or dashes: card-number shaped.
CARD_RE = re.compile(r"(?<![\d])(?:\d[ -]?){12,18}\d(?![\d])")
# International or local phone shapes: 8+ digits with common separators.
PHONE_RE = re.compile(r"(?<![\w])\+?\(?\d[\d ().-]{6,}\d(?![\w])")
IPV4_RE = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")


# Every shape above needs an "@" or at least two digits: text without (most log messages, route templates
# such as /v1/messages) is returned as it is, after one scan instead of four substitutions.
_MAYBE_PERSONAL = re.compile(r"@|\d\D*\d")


def redact_text(text: str) -> str:
    if not _MAYBE_PERSONAL.search(text):
        # Digits the pattern does not know (superscripts) can still spell a card number.
        return text if text.isascii() else cards.mask_text(text)[0]
    text = EMAIL_RE.sub(REDACTED, text)
    text = CARD_RE.sub(REDACTED, text)
    # The shapes CARD_RE does not cover (runs of separators, line breaks, thin spaces, full-width digits),
    # masked as the scrubber masks them everywhere else.
    text = cards.mask_text(text)[0]
    text = IPV4_RE.sub(REDACTED, text)
    return PHONE_RE.sub(REDACTED, text)


def redact(value: Any, depth: int = 0) -> Any:
    """Deep copy of `value` with personal keys blanked and personal shapes in strings replaced."""
    if depth > 20:
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact_item(k, v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [redact(v, depth + 1) for v in value]
    return value


def redact_item(key: Any, value: Any, depth: int = 0) -> Any:
    """The value of `key` in a mapping, redacted: blanked if the key names personal data."""
    if str(key).lower() in PERSONAL_KEYS and value not in (None, ""):
        return REDACTED
    return redact(value, depth)


def describe_error(exc: BaseException) -> str:
    """A reason fit for a dead-letter header or a log line: the exception's class and its redacted text."""
    text = redact_text(_validation_summary(exc) if isinstance(exc, ValidationError) else str(exc))[:500]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _validation_summary(exc: ValidationError) -> str:
    """Where and why validation failed, without the `input_value=...` pydantic's own text echoes (names,
    addresses, whatever was sent)."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in errors]
    return f"{len(errors)} validation error(s) for {exc.title}: " + "; ".join(parts)
