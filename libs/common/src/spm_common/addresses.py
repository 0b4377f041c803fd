"""E-mail addresses: the one rule by which every service compares them, and the cheap syntax check.

`normalise_address` is the rule. The cheap check runs before email-validator (~0.2-0.3 ms an address, more
than the rest of recording a request or an order): plain ASCII addresses, nearly all of them, are accepted
by the pattern alone; it accepts a subset of what email-validator accepts, unchanged, so anything else (IDNA,
quoting, odd labels) goes to email-validator.
"""

from __future__ import annotations

import re
import unicodedata

# A domain label may not have "--" in its third and fourth places unless it is Punycode ("xn--", IDNA 2008):
# email-validator refuses "ab--cd" and checks "xn--" labels itself, so neither is plain.
PLAIN_ADDRESS = re.compile(
    r"[a-z0-9_%+-]+(?:\.[a-z0-9_%+-]+)*@(?:(?![a-z0-9]{2}--)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}",
    re.ASCII | re.IGNORECASE,
)
SPECIAL_USE_DOMAINS = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def is_plain_address(text: str) -> bool:
    """True when email-validator would certainly accept `text` as it is; False means: ask email-validator."""
    return (
        len(text) <= 254
        and PLAIN_ADDRESS.fullmatch(text) is not None
        and len(text.partition("@")[0]) <= 64
        and text.rsplit(".", 1)[-1].lower() not in SPECIAL_USE_DOMAINS
    )


def normalise_address(text: str) -> str:
    """The one spelling in which every service compares an address, keys a record by it, hashes or
    pseudonymises it: Unicode NFC, surrounding white space removed, and the whole address in lower case
    (Python's `str.lower`).

    Why each step: NFC, because one address typed on two keyboards can arrive composed or decomposed
    ("ế" as one code point or three) and must be one person; trimming, because forms and copy-paste add
    spaces nobody means. The domain is case-insensitive by definition (RFC 5321 section 2.4). The local
    part may in theory be case-sensitive, but practically every provider treats it case-insensitively, and
    a person who writes "Ada@" one day and "ada@" the next is one person: a privacy request must find every
    record of theirs, and an unsubscribe or a bounce must hold for every spelling. Not `casefold`, which
    would also merge addresses that differ in more than case ("ß" and "ss"); and `str.lower` is what the
    services applied before this function was shared, so no stored key or pseudonym changes. Its one oddity
    for addresses: a capital "Σ" becomes "ς" only at a word's end, so "ΟΔΥΣ.a@" and "οδυς.a@" stay two.

    This is for comparing, never for sending or showing: a service that keeps an address to write to or to
    show an operator keeps it as the person typed it (contact), beside this form as its key. Syntax is
    checked where an address enters the system (email-validator, which also writes an IDN domain in
    Unicode and drops needless quotes); this function takes any string and never fails, so an answer to a
    privacy request can apply it to whatever it is given."""
    if text.isascii():
        # The common case, without the Unicode tables (NFC leaves ASCII as it is).
        return text.strip().lower()
    return unicodedata.normalize("NFC", text).strip().lower()
