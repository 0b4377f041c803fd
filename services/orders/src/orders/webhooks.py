"""The order webhook's signature: `X-SPM-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`, where each v1
is HMAC-SHA256 of "<t>.<raw body>" under SPM_WEBHOOK_SECRET. Several v1 values are accepted so the sender
can sign with the old and the new secret while the secret is rotated; `t` must be within the tolerance,
in the past or the future; every comparison is constant-time."""

from __future__ import annotations

import hashlib
import hmac
import re

MAX_SIGNATURES = 8
# ASCII digits only: str.isdigit() also accepts "²", which int() then refuses (a 500 instead of the 401).
TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def header(secret: str | list[str], timestamp: int, body: bytes) -> str:
    """The header a sender would send (tests, benchmarks, the operator tool)."""
    secrets_ = [secret] if isinstance(secret, str) else secret
    return ",".join([f"t={timestamp}", *(f"v1={sign(s, timestamp, body)}" for s in secrets_)])


def verify(secret: str | None, signature: str | None, body: bytes, now: float, tolerance: int) -> bool:
    if not secret or not signature or len(signature) > 2000:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in signature.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and TIMESTAMP_RE.fullmatch(value):
            timestamp = int(value)
        elif name == "v1" and len(candidates) < MAX_SIGNATURES:
            candidates.append(value.strip().lower())
    if timestamp is None or not candidates or abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).encode()
    matched = False
    for candidate in candidates:  # all compared, whatever matched first
        matched |= hmac.compare_digest(candidate.encode("ascii", "replace"), expected)
    return matched
