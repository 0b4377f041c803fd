"""The cheap address check never accepts what email-validator refuses, nor what it would spell otherwise; the
one rule addresses are compared in."""

from __future__ import annotations

import unicodedata

from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st
from spm_common.addresses import is_plain_address, normalise_address


def accepted_as_is(text: str) -> bool:
    """Accepted, and spelled the same but for case (email-validator lower-cases the domain)."""
    try:
        return validate_email(text, check_deliverability=False).normalized.lower() == text.lower()
    except EmailNotValidError:
        return False


@settings(max_examples=2000, deadline=None)
@given(st.emails() | st.from_regex(r"[A-Za-z0-9._%+-]{1,12}@[A-Za-z0-9.-]{1,12}\.[A-Za-z0-9]{1,5}", fullmatch=True))
@example("0@00--0.AA")  # "--" in a label's third and fourth places: refused unless Punycode
@example("a@xn--c.com")  # Punycode that is not valid IDNA
@example("buyer@shop.test")  # special-use domain
def test_a_plain_address_is_one_email_validator_accepts_unchanged(address: str) -> None:
    if is_plain_address(address):
        assert accepted_as_is(address)


def test_ordinary_addresses_are_plain() -> None:
    for address in ("nguyen.van.thu@example.vn", "A.Buyer+spm@Mail.Example.com", "x@a--b.example.com"):
        assert is_plain_address(address)
    for address in ("ab@cd--ef.com", "a@xn--bcher-kva.example", "a@b.local", "a..b@example.com", "a@example"):
        assert not is_plain_address(address)


def test_one_rule_compares_addresses_nfc_trimmed_and_lower_case() -> None:
    """Every service keys, hashes and compares addresses in this one spelling (docs/architecture.md)."""
    assert normalise_address("  Ada.Lovelace@Example.COM ") == "ada.lovelace@example.com"
    assert normalise_address("E\u0301cole@example.com") == "\u00e9cole@example.com"
    assert normalise_address("ΟΔΥΣΣΕΥΣ@example.com") == "οδυσσευς@example.com"
    # Not casefold: "ß" stays, so two addresses that differ in more than case stay two.
    assert normalise_address("STRAẞE@example.com") != normalise_address("STRASSE@example.com")
    assert normalise_address("Ada@example.com") == normalise_address("ADA@EXAMPLE.COM")


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=40) | st.emails())
def test_the_ascii_shortcut_spells_every_address_as_the_rule_does(text: str) -> None:
    assert normalise_address(text) == unicodedata.normalize("NFC", text).strip().lower()
