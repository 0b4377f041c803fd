"""Signed checkpoints: (sequence, head hash, time) signed with an Ed25519 key that is not in the database.

A checkpoint only in the database proves nothing against someone who can write to the database: they can
rewrite the chain and its checkpoints alike. Signed with SPM_AUDIT_CHECKPOINT_KEY, which lives in the
service's environment, a checkpoint cannot be made up; exported to a file kept elsewhere, it cannot be
taken away either. `verify --checkpoints FILE` then proves the trail still holds every exported head.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# What is signed names what it is, so no other message signed with the key can pass for a checkpoint.
PURPOSE = "spm-audit-checkpoint/1"
FILE_FORMAT = "spm-audit-checkpoints/1"
KEY_BYTES = 32


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str, length: int) -> bytes:
    """Standard base64 of exactly `length` bytes, or ValueError."""
    try:
        data = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"not base64 of {length} bytes") from None
    if len(data) != length:
        raise ValueError(f"not base64 of {length} bytes")
    return data


def public_key_of(private_key_b64: str) -> str:
    """The base64 raw public key of a base64 raw private key."""
    private = Ed25519PrivateKey.from_private_bytes(unb64(private_key_b64, KEY_BYTES))
    return b64(private.public_key().public_bytes_raw())


def new_private_key() -> str:
    return b64(Ed25519PrivateKey.generate().private_bytes_raw())


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed head of the chain: the entry `seq` had the hash `hash` at `time`."""

    seq: int
    hash: str
    time: str  # trail.timestamp of when it was recorded
    public_key: str  # base64 raw Ed25519 public key that signed it
    signature: str  # base64 Ed25519 signature of `message()`

    def message(self) -> bytes:
        # RFC 8785 form of a flat object (orjson with sorted keys writes exactly those bytes, see trail.py).
        fields = {"purpose": PURPOSE, "seq": self.seq, "hash": self.hash, "time": self.time}
        return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)

    def signed_by(self, trusted: Iterable[str]) -> bool:
        """Whether the signature holds and was made by one of the `trusted` public keys."""
        if self.public_key not in set(trusted):
            return False
        try:
            public = Ed25519PublicKey.from_public_bytes(unb64(self.public_key, KEY_BYTES))
            public.verify(unb64(self.signature, 64), self.message())
        except (ValueError, InvalidSignature):
            return False
        return True


class Signer:
    """Signs checkpoints with the service's private key."""

    def __init__(self, private_key_b64: str) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(unb64(private_key_b64, KEY_BYTES))
        self.public_key = b64(self._key.public_key().public_bytes_raw())

    def sign(self, seq: int, head_hash: str, time: str) -> Checkpoint:
        unsigned = Checkpoint(seq, head_hash, time, self.public_key, "")
        return Checkpoint(seq, head_hash, time, self.public_key, b64(self._key.sign(unsigned.message())))


def dump_file(checkpoints: Sequence[Checkpoint], public_key: str) -> bytes:
    """The export file: the signing key's public half and every checkpoint, oldest first."""
    document = {
        "format": FILE_FORMAT,
        "public_key": public_key,
        "checkpoints": [asdict(c) for c in sorted(checkpoints, key=lambda c: c.seq)],
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def load_file(data: bytes) -> list[Checkpoint]:
    """The checkpoints of an export file, or ValueError naming what is wrong with it."""
    try:
        document: object = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ValueError("not a checkpoint file: not JSON") from None
    if not isinstance(document, dict) or document.get("format") != FILE_FORMAT:
        raise ValueError(f"not a checkpoint file: its format is not {FILE_FORMAT}")
    out = []
    for item in document.get("checkpoints") or []:
        try:
            out.append(
                Checkpoint(
                    int(item["seq"]),
                    str(item["hash"]),
                    str(item["time"]),
                    str(item["public_key"]),
                    str(item["signature"]),
                )
            )
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                "not a checkpoint file: a checkpoint lacks seq, hash, time, public_key or signature"
            ) from None
    return out
