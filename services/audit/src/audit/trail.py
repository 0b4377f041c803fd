"""The audit trail's rules: pseudonymise an event, chain it to the previous entry, check the chain."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson
from spm_common.envelope import CloudEvent

GENESIS = "0" * 64
# Fields that are personal data: e-mail addresses become references, the rest is removed.
EMAIL_FIELDS = frozenset({"email", "e_mail"})
PERSONAL_FIELDS = frozenset(
    {
        "name",
        "full_name",
        "phone",
        "address",
        "line1",
        "line2",
        "street",
        "city",
        "region",
        "postal_code",
        "message",
        "body",
        "text",
        "subject",
        "license_key",
        "license_keys",
        "keys",
        "key",
        "context",
        "client_ip",
        "ip",
        "user_agent",
    }
)
REMOVED = "[removed]"


def subject_ref(email: str, key: bytes) -> str:
    return hmac.new(key, email.strip().lower().encode(), hashlib.sha256).hexdigest()


def pseudonymise(value: Any, key: bytes, depth: int = 0) -> Any:
    if depth > 30:
        return REMOVED
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            lowered = str(k).lower()
            if lowered in EMAIL_FIELDS and isinstance(v, str):
                out[f"{k}_ref"] = subject_ref(v, key)
            elif lowered in PERSONAL_FIELDS:
                out[k] = REMOVED if v not in (None, "") else v
            else:
                out[k] = pseudonymise(v, key, depth + 1)
        return out
    if isinstance(value, list):
        return [pseudonymise(v, key, depth + 1) for v in value]
    return value


def find_email(value: Any, depth: int = 0) -> str | None:
    """The address of the person an event concerns: the first `email` field, breadth first."""
    if depth > 5 or not isinstance(value, dict):
        return None
    for k, v in value.items():
        if str(k).lower() in EMAIL_FIELDS and isinstance(v, str):
            return v
    for v in value.values():
        found = find_email(v, depth + 1)
        if found:
            return found
    return None


def canonical(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of every field of the entry but the hash itself."""
    fields = {
        k: entry[k]
        for k in (
            "seq",
            "event_id",
            "event_type",
            "source",
            "event_time",
            "purpose",
            "subject_ref",
            "payload",
            "prev_hash",
        )
    }
    return hashlib.sha256(canonical(fields)).hexdigest()


def make_entry(event: CloudEvent, seq: int, prev_hash: str, key: bytes) -> dict[str, Any]:
    email = find_email(event.data)
    entry = {
        "seq": seq,
        "event_id": event.id,
        "event_type": event.type,
        "source": event.source,
        "event_time": event.time.isoformat() if event.time else None,
        "purpose": event.purpose,
        "subject_ref": subject_ref(email, key) if email else None,
        "payload": canonical(pseudonymise(event.data, key)).decode(),
        "prev_hash": prev_hash,
    }
    entry["hash"] = entry_hash(entry)
    return entry
