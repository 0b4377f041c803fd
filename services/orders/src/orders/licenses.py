"""License keys: unguessable (from `secrets`), printed as five groups of five characters from an alphabet
without look-alikes (no 0/O, 1/I), about 125 bits each. Never logged; only the notification request that
delivers a key carries it."""

from __future__ import annotations

import re
import secrets

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # 32 symbols: one per 5 bits, so a byte maps without bias
GROUPS, GROUP_SIZE = 5, 5
KEY_PATTERN = re.compile(r"^[A-Z0-9]{4,8}(-[A-Z0-9]{4,8})+$")


# Each random byte becomes the symbol of its low five bits, in one `bytes.translate` per key.
_SYMBOL_OF_BYTE = bytes(ord(ALPHABET[byte & 31]) for byte in range(256))


def new_key() -> str:
    chars = secrets.token_bytes(GROUPS * GROUP_SIZE).translate(_SYMBOL_OF_BYTE).decode("ascii")
    return "-".join([chars[i : i + GROUP_SIZE] for i in range(0, len(chars), GROUP_SIZE)])


def new_keys(count: int) -> list[str]:
    return [new_key() for _ in range(count)]


def hint(key: str) -> str:
    """What an operator may see of a key: its last group, enough to tell keys apart on the phone."""
    return "*****-" * (key.count("-")) + key.rsplit("-", 1)[-1]
