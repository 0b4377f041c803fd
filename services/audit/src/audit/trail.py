"""The audit trail's rules: pseudonymise an event, chain it to the previous entry, walk the chain to prove it.

An entry's hash is SHA-256 over the RFC 8785 (JSON Canonicalization Scheme) form of every field of the
entry but the hash itself, the previous entry's hash included; the first entry follows `GENESIS`. The
entry is a flat object of ASCII keys and string, integer or null values, for which orjson with sorted keys
writes exactly the RFC 8785 bytes (a test holds it to the `rfc8785` package), at a fraction of the cost.
The payload is one of those strings: the pseudonymised data as JSON with sorted keys.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import rfc8785
from spm_common.db import Connection
from spm_common.envelope import CloudEvent
from spm_common.redaction import CARD_RE, EMAIL_RE, IPV4_RE, PERSONAL_KEYS

from audit import store
from audit.events import OPERATOR_ACTION

GENESIS = "0" * 64
REMOVED = "[removed]"
# The fields the hash covers, in the entries table's column order.
FIELDS = (
    "seq",
    "event_id",
    "event_type",
    "source",
    "event_time",
    "purpose",
    "subject_ref",
    "payload",
    "prev_hash",
    "recorded_at",
)
COLUMNS = (*FIELDS, "hash")

EMAIL_FIELDS = frozenset({"email", "e_mail", "email_address"})
# Removed wherever they appear, whatever their shape: names, addresses, phones, message text, keys, cards,
# client addresses. `context` is a notification's template context (reply text, license keys).
PERSONAL_FIELDS = (PERSONAL_KEYS - EMAIL_FIELDS) | {
    "context",
    "reply_body",
    "client_address",
    "remote_address",
    "ip_address",
    "user_agent",
    "card",
    "card_cvv",
    "security_code",
}
# Personal when they hold text ("to": "Name <address>"), but walked into when they hold a structure, so the
# address inside becomes a reference rather than disappearing.
CONTAINER_FIELDS = frozenset({"purchaser", "recipient", "sender", "to", "rcpt"})
LICENSE_KEY_RE = re.compile(r"(?<![A-Za-z0-9-])[A-Z0-9]{4,8}(?:-[A-Z0-9]{4,8}){3,7}(?![A-Za-z0-9-])")
# Times (ISO 8601), which no pattern below would change (under 13 digits in a row, one dot, no "::"): events
# are full of them.
TIME_PATTERN = r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2})?)?"
# Left as they are: identifiers, not personal data, whose digits can look like a Luhn-valid card number by
# chance; and times.
IDENTIFIER_RE = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}|[0-9a-fA-F]{32,}|" + TIME_PATTERN)
DIGITS_RE = re.compile(r"\d")
# Every shape scrub_text looks for holds one of these: "@" (an address), a digit (a card, an IPv4 address),
# "-" (a license key), ":" (an IPv6 address). Most names and values hold none and are left as they are.
SCRUB_CANDIDATE_RE = re.compile(r"[@\d:-]")
IPV6_CANDIDATE_RE = re.compile(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:%\w+)?(?![\w:])")
MAX_DEPTH = 30
MAX_SAFE_INTEGER = 2**53 - 1  # RFC 8785 numbers are IEEE doubles: larger integers travel as strings

PayloadReducer = Callable[[dict[str, Any]], dict[str, Any]]


def normalise_email(email: str) -> str:
    return unicodedata.normalize("NFC", email).strip().lower()


def subject_ref(email: str, key: bytes) -> str:
    """The pseudonymous reference of a person: HMAC-SHA256 of the normalised address under the audit key."""
    return hmac.new(key, normalise_email(email).encode(), hashlib.sha256).hexdigest()


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _mask_card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "*" * (len(digits) - 4) + digits[-4:] if _luhn(digits) else match.group(0)


def _ipv6(match: re.Match[str]) -> str:
    try:
        ipaddress.IPv6Address(match.group(0).split("%", 1)[0])
    except ValueError:
        return match.group(0)
    return REMOVED


def scrub_text(text: str, key: bytes) -> str:
    """Free text that may hide personal data: addresses become references, cards are masked to their
    last four digits, license keys and IP addresses are removed. A UUID or a hex digest is left as it is."""
    if len(text) < 6 or not SCRUB_CANDIDATE_RE.search(text) or IDENTIFIER_RE.fullmatch(text):
        return text  # no address fits in fewer than 6 characters
    return scrub_patterns(text, key)


def scrub_patterns(text: str, key: bytes) -> str:
    """`scrub_text`'s work, on any text."""
    if "@" in text:
        text = EMAIL_RE.sub(lambda m: "ref:" + subject_ref(m.group(0), key), text)
    if DIGITS_RE.search(text):
        text = CARD_RE.sub(_mask_card, text)
        text = IPV4_RE.sub(REMOVED, text)
    if "-" in text:
        text = LICENSE_KEY_RE.sub(REMOVED, text)
    if ":" in text:
        text = IPV6_CANDIDATE_RE.sub(_ipv6, text)
    return text


def pseudonymise(value: Any, key: bytes, depth: int = 0) -> Any:
    """A copy of an event's data fit for the trail: e-mail fields become `<field>_ref` references, personal
    fields are removed, and every string is scrubbed."""
    if depth > MAX_DEPTH:
        return REMOVED
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            name = str(k)
            lowered = name.lower()
            if lowered in EMAIL_FIELDS:
                out[f"{name}_ref"] = subject_ref(v, key) if isinstance(v, str) and v else None
            elif lowered in CONTAINER_FIELDS and isinstance(v, dict | list):
                out[name] = pseudonymise(v, key, depth + 1)
            elif lowered in PERSONAL_FIELDS:
                out[name] = REMOVED if v not in (None, "", [], {}) else v
            elif isinstance(v, str):  # the usual leaf, without a call for it
                out[scrub_text(name, key)] = scrub_text(v, key)
            else:
                out[scrub_text(name, key)] = pseudonymise(v, key, depth + 1)
        return out
    if isinstance(value, list):
        return [pseudonymise(v, key, depth + 1) for v in value]
    if isinstance(value, str):
        return scrub_text(value, key)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if abs(value) <= MAX_SAFE_INTEGER else scrub_text(str(value), key)
    return scrub_text(str(value), key)


def find_email(value: Any, depth: int = 0) -> str | None:
    """The address of the person an event concerns: the first e-mail field, breadth first."""
    if depth > 5 or not isinstance(value, dict):
        return None
    for k, v in value.items():
        if str(k).lower() in EMAIL_FIELDS and isinstance(v, str) and v:
            return v
    for v in value.values():
        found = find_email(v, depth + 1)
        if found:
            return found
    return None


def subject_email(event: CloudEvent) -> str | None:
    """The address of the person an event concerns. An operator's action concerns the person its target
    names (`orders.search:<address>`: an address follows a colon or a space there), not the operator."""
    if event.type == OPERATOR_ACTION and isinstance(event.data, dict):
        match = EMAIL_RE.search(str(event.data.get("target", "")))
        return match.group(0) if match else None
    return find_email(event.data)


def canonical(document: Any) -> bytes:
    """RFC 8785 canonical JSON of any document."""
    return rfc8785.dumps(document)


def flat_canonical(fields: Mapping[str, str | int | None]) -> bytes:
    """RFC 8785 canonical JSON of a flat object with ASCII keys and string, integer (|n| < 2**53) or null
    values: for these, orjson's sorted output is byte for byte the same."""
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def timestamp(moment: datetime) -> str:
    """The one text form of a time in the trail (UTC, microseconds), so a stored time hashes the same."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 over the canonical JSON of every field of the entry but the hash itself."""
    fields = {name: entry[name] for name in FIELDS}
    if isinstance(fields["recorded_at"], datetime):
        fields["recorded_at"] = timestamp(fields["recorded_at"])
    return hashlib.sha256(flat_canonical(fields)).hexdigest()


def make_entry(
    event: CloudEvent,
    seq: int,
    prev_hash: str,
    key: bytes,
    recorded_at: datetime,
    reducer: PayloadReducer | None = None,
) -> dict[str, Any]:
    email = subject_email(event)
    data = reducer(event.data) if reducer else event.data
    entry: dict[str, Any] = {
        "seq": seq,
        "event_id": scrub_text(event.id, key),
        "event_type": event.type,
        "source": scrub_text(event.source, key),
        "event_time": timestamp(event.time) if event.time else None,
        "purpose": event.purpose,
        "subject_ref": subject_ref(email, key) if email else None,
        "payload": orjson.dumps(pseudonymise(data, key), option=orjson.OPT_SORT_KEYS).decode(),
        "prev_hash": prev_hash,
        "recorded_at": recorded_at,
    }
    entry["hash"] = entry_hash(entry)
    return entry


async def append(
    conn: Connection,
    events: Sequence[CloudEvent],
    key: bytes,
    reducers: Mapping[str, PayloadReducer] | None = None,
) -> list[dict[str, Any]]:
    """Append a batch of events, in order, after the head of the chain. The head's row lock serialises
    appenders (two replicas included), so the chain can neither fork nor skip a number."""
    if not events:
        return []
    seq, head, now = await store.lock_head(conn)
    entries = []
    for event in events:
        seq += 1
        entry = make_entry(event, seq, head, key, now, (reducers or {}).get(event.type))
        head = entry["hash"]
        entries.append(entry)
    await store.append(conn, [tuple(e[c] for c in COLUMNS) for e in entries], COLUMNS)
    return entries


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    full: bool
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    problem: str | None = None

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "checked": self.checked,
            "full": self.full,
            "head": {"seq": self.head_seq, "hash": self.head_hash},
        }
        if not self.ok:
            out["first_broken"] = {"seq": self.broken_seq, "problem": self.problem}
        return out


def check_entry(row: Mapping[str, Any], prev_seq: int, prev_hash: str) -> str | None:
    """Why `row` is not the entry that must follow (`prev_seq`, `prev_hash`), or None when it is."""
    if row["seq"] != prev_seq + 1:
        return "missing: the next entry is not in the trail"
    if row["prev_hash"] != prev_hash:
        return "out of place: does not follow the previous entry"
    if entry_hash(row) != row["hash"]:
        return "altered: its hash does not match its content"
    return None


async def verify(conn: Connection, *, full: bool, batch_size: int = 2000) -> Verification:
    """Walk the chain from the last checkpoint (or from the start when `full`), batch by batch, in one
    consistent snapshot, and compare its end with the recorded head."""
    checked = 0
    # A caller's transaction is used as it is (a nested one cannot change the isolation level).
    snapshot = (
        conn.transaction() if conn.is_in_transaction() else conn.transaction(isolation="repeatable_read", readonly=True)
    )
    async with snapshot:
        head_seq, head_hash = await store.head(conn)

        def result(broken: int | None = None, problem: str | None = None) -> Verification:
            return Verification(broken is None, checked, full, head_seq, head_hash, broken, problem)

        checkpoint = None if full else await store.last_checkpoint(conn)
        prev_seq, prev_hash = 0, GENESIS
        if checkpoint is not None:
            prev_seq, prev_hash = checkpoint
            if prev_seq > head_seq:
                return result(head_seq + 1, "missing: the trail ends before the last checkpoint")
            row = await store.entry_at(conn, prev_seq)
            if row is None:
                return result(prev_seq, "missing: the checkpointed entry is not in the trail")
            if row["hash"] != prev_hash or entry_hash(row) != prev_hash:
                return result(prev_seq, "altered: differs from the hash recorded at the checkpoint")
            checked += 1
        while True:
            rows = await store.entries_after(conn, prev_seq, batch_size)
            if not rows:
                break
            checkpoints = await store.checkpoints_between(conn, rows[0]["seq"], rows[-1]["seq"]) if full else {}
            for row in rows:
                if row["seq"] > head_seq:
                    return result(row["seq"], "inserted: an entry beyond the head of the chain")
                problem = check_entry(row, prev_seq, prev_hash)
                if problem is None and checkpoints.get(row["seq"], row["hash"]) != row["hash"]:
                    problem = "altered: differs from the hash recorded at a checkpoint"
                if problem is not None:
                    return result(prev_seq + 1 if problem.startswith("missing") else row["seq"], problem)
                prev_seq, prev_hash = row["seq"], row["hash"]
                checked += 1
        if prev_seq < head_seq:
            return result(prev_seq + 1, "missing: the trail ends before the head of the chain")
        if prev_hash != head_hash:
            return result(prev_seq, "altered: the last entry differs from the head of the chain")
        return result()


async def checkpoint(conn: Connection) -> Verification:
    """Verify from the last checkpoint and, if the chain holds, record its head as the new checkpoint."""
    outcome = await verify(conn, full=False)
    if outcome.ok and outcome.head_seq > 0:
        last = await store.last_checkpoint(conn)
        if last is None or last[0] < outcome.head_seq:
            await store.add_checkpoint(conn, outcome.head_seq, outcome.head_hash)
    return outcome
