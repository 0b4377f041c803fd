"""Unsubscribe tokens and recipient references: HMAC-SHA256 under keys derived from SPM_NOTIFIER_SECRET.

A token names a category and an address and is signed over (version, category, the address's reference),
so it can neither be forged nor moved to another address or category. It carries the address itself
because the withdrawal of consent is announced with it (`notification.unsubscribed`), and the notifier
keeps no address book to look it up in.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac

from spm_common.addresses import normalise_address

from notifier.policy import CATEGORIES, Category

VERSION = "1"
_CATEGORY_CODE: dict[Category, str] = {"upgrades": "u", "news": "n"}
_CODE_CATEGORY = {v: k for k, v in _CATEGORY_CODE.items()}


class InvalidToken(ValueError):
    pass


def recipient_ref(email: str, key: bytes) -> str:
    """The pseudonymous reference of an address: the same for every spelling of it that `normalise_address`
    makes one (its case, its Unicode composition). (`hmac.digest`, OpenSSL's one-shot HMAC, costs a third of an
    `hmac.new` object; references are made for every request.)"""
    return hmac.digest(key, normalise_address(email).encode(), "sha256").hex()


@functools.lru_cache(maxsize=8)
def _token_key(key: bytes) -> bytes:
    # A key of its own, so a token's MAC can never be mistaken for (or reveal) a recipient reference.
    return hmac.digest(key, b"spm-notifier-unsubscribe-token", "sha256")


def _mac(category: Category, ref: str, key: bytes) -> bytes:
    message = f"v{VERSION}|{category}|{ref}".encode()
    return hmac.digest(_token_key(key), message, "sha256")


def make_token(email: str, category: Category, key: bytes) -> str:
    address = _b64(email.strip().encode())
    mac = _b64(_mac(category, recipient_ref(email, key), key))
    return f"{VERSION}{_CATEGORY_CODE[category]}.{address}.{mac}"


def read_token(token: str, key: bytes) -> tuple[str, Category]:
    """(address, category) of a token this service signed; InvalidToken for anything else."""
    try:
        head, address, mac = token.split(".")
        if len(head) != 2 or head[0] != VERSION or head[1] not in _CODE_CATEGORY:
            raise InvalidToken("unknown token version or category")
        category = _CODE_CATEGORY[head[1]]
        email = _unb64(address).decode()
        given = _unb64(mac)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidToken("malformed token") from exc
    if category not in CATEGORIES or not hmac.compare_digest(given, _mac(category, recipient_ref(email, key), key)):
        raise InvalidToken("token signature does not match")
    return email, category


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
