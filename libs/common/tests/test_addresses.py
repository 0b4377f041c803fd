"""The cheap address check never accepts what email-validator refuses, nor what it would spell otherwise."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st
from spm_common.addresses import is_plain_address


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
