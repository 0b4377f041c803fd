"""Removes personal data and card numbers from anything that may reach a log line or an error report."""

from __future__ import annotations

import ipaddress
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
# An address percent-encoded once or more, as it appears in URLs and query strings: "%40" or "%2540" for
# the "@", other characters possibly encoded too (alice%2Btag%40example.com). Its local part stops at what
# delimits a URL's parts ("/", "?", "=", "&"), which an encoded address holds only encoded.
ENCODED_EMAIL_RE = re.compile(r"[\w.!#$'*+^`{|}~%-]+%(?:25)*40[\w-]+(?:\.[\w-]+)+")
# 13-19 digits, optionally separated by single spaces or dashes: card-number shaped.
CARD_RE = re.compile(r"(?<![\d])(?:\d[ -]?){12,18}\d(?![\d])")
# A card's security code named as such ("cvv 123", "CVC: 1234", "card_cvv=123", "CID 1234", "verification
# value: 123"), by the names `spm_common.cards` recognises in field names: the digits go, the word stays.
CVV_RE = re.compile(
    r"(?<![a-z])((?:cvv2?|cvc2?|cvn2?|csc|cid|security[ _-]?code|verification[ _-]?(?:value|code))(?![a-z])"
    r"[\s\"':=#]{0,4})\d{3,4}(?!\d)",
    re.IGNORECASE,
)
# International or local phone shapes: 8+ digits with common separators.
PHONE_RE = re.compile(r"(?<![\w])\+?\(?\d[\d ().-]{6,}\d(?![\w])")
# An SMTP reply code with its enhanced status code (RFC 3463), "550 5.1.1": the reason a delivery failed, which
# PHONE_RE's shape would otherwise take for a phone number.
SMTP_STATUS_RE = re.compile(r"[2-5]\d\d [2-5]\.\d{1,3}\.\d{1,3}")
IPV4_RE = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
# What may be an IPv6 address (with a zone: fe80::1%eth0); `is_ipv6` decides, so that times (04:00:00),
# ratios and C++ names stay as they are.
IPV6_CANDIDATE_RE = re.compile(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:%\w+)?(?![\w:])")


# Identifiers a log line carries that are no one's data, whose digit groups the shapes below would take for a
# phone or card number: a UUID (event, order and delivery ids; one in eleven has a group of digits PHONE_RE
# took) and a hex digest of 32 or more (recipient and subject references, chain hashes). Their spans are kept
# as they are; the text around them is redacted as any other.
IDENTIFIER_RE = re.compile(rf"(?<![0-9A-Za-z])({cards.UUID_PATTERN}|{cards.HEX_DIGEST_PATTERN})(?![0-9A-Za-z])")
# The cheap first look: 8 hex digits in a row, which both start with.
_MAYBE_IDENTIFIER = re.compile(r"[0-9a-fA-F]{8}")

# Every shape above needs an "@" or at least two digits: text without (most log messages, route templates
# such as /v1/messages) is returned as it is, after one scan instead of several substitutions.
_MAYBE_PERSONAL = re.compile(r"@|\d\D*\d")
# Cheap first looks (patterns that start with a character class, which the regex engine skips to) before
# the costlier ones above: the word of a security code; two colons or a colon between hex digits.
_MAYBE_CVV = re.compile(r"[cCsSvV](?:[vV][vVcCnN]|[sS][cC]|[iI][dD]|[eE][cC][uU][rR]|[eE][rR][iI][fF])")
_MAYBE_IPV6 = re.compile(r"[0-9A-Fa-f:]:[0-9A-Fa-f:]")


def is_ipv6(candidate: str) -> bool:
    try:
        ipaddress.IPv6Address(candidate.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _redact_phone(match: re.Match[str]) -> str:
    return match.group(0) if SMTP_STATUS_RE.fullmatch(match.group(0)) else REDACTED


def _redact_ipv6(match: re.Match[str]) -> str:
    return REDACTED if is_ipv6(match.group(0)) else match.group(0)


def redact_text(text: str) -> str:
    if not _MAYBE_PERSONAL.search(text):
        # Digits the pattern does not know (superscripts) can still spell a card number.
        return text if text.isascii() else cards.mask_text(text)[0]
    # Addresses first, on the whole text: a UUID may be the local part of one (reply+<uuid>@example.com).
    if "%" in text:
        text = ENCODED_EMAIL_RE.sub(REDACTED, text)
    if "@" in text:
        text = EMAIL_RE.sub(REDACTED, text)
    if _MAYBE_IDENTIFIER.search(text):
        pieces = IDENTIFIER_RE.split(text)  # identifiers at the odd indexes
        if len(pieces) > 1:
            return "".join(piece if i % 2 else _redact_shapes(piece) for i, piece in enumerate(pieces))
    return _redact_shapes(text)


def _redact_shapes(text: str) -> str:
    """`text` (addresses already gone) without card numbers, security codes, IP addresses and phone numbers."""
    text = CARD_RE.sub(REDACTED, text)
    # The shapes CARD_RE does not cover (runs of separators, line breaks, thin spaces, full-width digits),
    # masked as the scrubber masks them everywhere else.
    text = cards.mask_text(text)[0]
    if _MAYBE_CVV.search(text):
        text = CVV_RE.sub(rf"\1{REDACTED}", text)
    text = IPV4_RE.sub(REDACTED, text)
    text = PHONE_RE.sub(_redact_phone, text)
    # Last: no shape above can take part of an IPv6 address (none spans a ":"), and an IPv4-mapped one
    # (::ffff:192.0.2.1) has lost its IPv4 part by now.
    if ":" in text and _MAYBE_IPV6.search(text):
        text = IPV6_CANDIDATE_RE.sub(_redact_ipv6, text)
    return text


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
