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
import os
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

# Loosely typed here: an event's data or a trail entry, JSON of no fixed shape (an event type no model of ours
# declares included), walked by isinstance, or a row of mixed column types.
from typing import Any

import orjson
import rfc8785
from asyncpg import Record
from spm_common import allowlist, cards
from spm_common.addresses import normalise_address
from spm_common.db import Connection
from spm_common.envelope import CloudEvent
from spm_common.redaction import EMAIL_RE, IPV4_RE, IPV6_CANDIDATE_RE, PERSONAL_KEYS, is_ipv6

from audit import store
from audit.events import OPERATOR_ACTION, TRAIL_FIELDS
from audit.signing import Checkpoint, Signer

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
# client addresses. `context` is a notification's template context (reply text, license keys); `attachments`
# its files (a privacy access request's personal-data.json) and `export` a service's answer to one: what a
# person asked to see must not stay in a trail that can never forget it.
PERSONAL_FIELDS = (PERSONAL_KEYS - EMAIL_FIELDS) | {
    "context",
    "attachments",
    "export",
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
MAX_DEPTH = 30
MAX_SAFE_INTEGER = 2**53 - 1  # RFC 8785 numbers are IEEE doubles: larger integers travel as strings

PayloadReducer = Callable[[dict[str, Any]], dict[str, Any]]
# How an address becomes its reference: a person's own key (`SubjectKeys.ref`), or, given as bytes, the one
# key of the legacy scheme (`subject_ref`).
Refs = Callable[[str], str]
KeyOrRefs = bytes | Refs


def subject_ref(email: str, key: bytes) -> str:
    """The pseudonymous reference of a person: HMAC-SHA256 of the address in the one spelling of every service
    (`normalise_address`: NFC, trimmed, lower case, which this module applied before it moved to spm_common,
    so no reference recorded earlier changes) under `key` (the person's own key; for entries recorded before
    migration 0006, the one audit secret: their "legacy" reference)."""
    return hmac.new(key, normalise_address(email).encode(), hashlib.sha256).hexdigest()


def _ref(email: str, key: KeyOrRefs) -> str:
    return subject_ref(email, key) if isinstance(key, bytes) else key(email)


def key_lookup(email: str, secret: bytes) -> bytes:
    """Where a person's key is found: a keyed hash of the normalised address under the audit secret, in a
    domain of its own (never equal to the legacy reference, so the key table does not point at old entries)."""
    return hmac.digest(secret, b"spm-audit-subject-key\x00" + normalise_address(email).encode(), "sha256")


class SubjectKeys:
    """The keys of the people one batch of events concerns, loaded in one query; `ref` makes a reference with
    the person's own key, and creates that key (random, 32 bytes) for a person seen for the first time. Erasure
    deletes a person's key row (crypto-shredding): their entries stay, unchanged, but nothing links their
    references to an address any more."""

    def __init__(self, secret: bytes, known: dict[bytes, bytes]) -> None:
        self._secret = secret
        self.known = known
        self.new: dict[bytes, bytes] = {}
        self._refs: dict[str, str] = {}

    def ref(self, email: str) -> str:
        normalised = normalise_address(email)
        made = self._refs.get(normalised)
        if made is None:
            lookup = key_lookup(normalised, self._secret)
            key = self.known.get(lookup) or self.new.get(lookup)
            if key is None:
                key = self.new[lookup] = os.urandom(32)
            made = self._refs[normalised] = hmac.digest(key, normalised.encode(), "sha256").hex()
        return made


# An address around an "@": up to 64 characters of local part before it, a domain after it (EMAIL_RE's parts).
_LOCAL_BEFORE = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]{1,64}\Z")
_DOMAIN_AFTER = re.compile(r"[\w-]+(?:\.[\w-]+)+")


def addresses_in(events: Iterable[CloudEvent]) -> set[str]:
    """The addresses a batch of events likely names (in e-mail fields and in text: both are in the JSON text),
    so their keys are loaded at once. Found from each "@" outwards: EMAIL_RE over the whole text cost more than
    the rest of making the entry. One it misses is found while the entries are made (see `append`)."""
    found: set[str] = set()
    for event in events:
        text = orjson.dumps(event.data).decode()
        at = text.find("@")
        while at != -1:
            local = _LOCAL_BEFORE.search(text, max(0, at - 64), at)
            domain = _DOMAIN_AFTER.match(text, at + 1)
            if local and domain:
                found.add(normalise_address(f"{local.group(0)}@{domain.group(0)}"))
            at = text.find("@", at + 1)
    return found


def _ipv6(match: re.Match[str]) -> str:
    return REMOVED if is_ipv6(match.group(0)) else match.group(0)


def scrub_text(text: str, key: KeyOrRefs) -> str:
    """Free text that may hide personal data: addresses become references, cards are masked to their
    last four digits, license keys and IP addresses are removed. A UUID or a hex digest is left as it is."""
    if len(text) < 6 or not SCRUB_CANDIDATE_RE.search(text) or IDENTIFIER_RE.fullmatch(text):
        return text  # no address fits in fewer than 6 characters
    return scrub_patterns(text, key)


def scrub_patterns(text: str, key: KeyOrRefs) -> str:
    """`scrub_text`'s work, on any text."""
    if "@" in text:
        text = EMAIL_RE.sub(lambda m: "ref:" + _ref(m.group(0), key), text)
    if DIGITS_RE.search(text):
        text = cards.mask_text(text)[0]  # the consumer's scrubber has masked them already; kept as a backstop
        text = IPV4_RE.sub(REMOVED, text)
    if "-" in text:
        text = LICENSE_KEY_RE.sub(REMOVED, text)
    if ":" in text:
        text = IPV6_CANDIDATE_RE.sub(_ipv6, text)
    return text


def pseudonymise(value: Any, key: KeyOrRefs, depth: int = 0) -> Any:
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
                out[f"{name}_ref"] = _ref(v, key) if isinstance(v, str) and v else None
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


def declared_fields(event_type: str, data: Any) -> dict[str, Any]:
    """What the trail may keep of an event's data: the fields its payload models declare (`TRAIL_FIELDS`),
    at every level; nothing of an event type no service declares. Whatever else came along (a shop's note, a
    card number under a name the scrubber does not know) never enters the append-only table."""
    tree = TRAIL_FIELDS.get(event_type)
    if tree is None or not isinstance(data, dict):
        return {}
    kept: dict[str, Any] = allowlist.keep(data, tree)
    return kept


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


def entry_hash(entry: Mapping[str, Any] | Record) -> str:
    """SHA-256 over the canonical JSON of every field of the entry but the hash itself."""
    fields = {name: entry[name] for name in FIELDS}
    if isinstance(fields["recorded_at"], datetime):
        fields["recorded_at"] = timestamp(fields["recorded_at"])
    return hashlib.sha256(flat_canonical(fields)).hexdigest()


def make_entry(
    event: CloudEvent,
    seq: int,
    prev_hash: str,
    key: KeyOrRefs,
    recorded_at: datetime,
    reducer: PayloadReducer | None = None,
) -> dict[str, Any]:
    email = subject_email(event)
    # The allow-list first, for every type: a reducer narrows what is declared further, never widens it (a
    # privacy answer's reducer drops one field and would keep an undeclared one).
    data = declared_fields(event.type, event.data)
    if reducer:
        data = reducer(data)
    entry: dict[str, Any] = {
        "seq": seq,
        "event_id": scrub_text(event.id, key),
        "event_type": event.type,
        "source": scrub_text(event.source, key),
        "event_time": timestamp(event.time) if event.time else None,
        "purpose": event.purpose,
        "subject_ref": _ref(email, key) if email else None,
        "payload": orjson.dumps(pseudonymise(data, key), option=orjson.OPT_SORT_KEYS).decode(),
        "prev_hash": prev_hash,
        "recorded_at": recorded_at,
    }
    entry["hash"] = entry_hash(entry)
    return entry


async def append(
    conn: Connection,
    events: Sequence[CloudEvent],
    secret: bytes,
    reducers: Mapping[str, PayloadReducer] | None = None,
) -> list[dict[str, Any]]:
    """Append a batch of events, in order, after the head of the chain, each person named in it referred to
    with their own key (`SubjectKeys`; `secret` finds the keys). The head's row lock serialises appenders (two
    replicas included), so the chain can neither fork nor skip a number, and two appenders never create a key
    for the same person at once."""
    if not events:
        return []
    first, head, now = await store.lock_head(conn)
    keys = SubjectKeys(secret, await store.subject_keys(conn, [key_lookup(a, secret) for a in addresses_in(events)]))
    while True:
        seq, prev, entries = first, head, []
        for event in events:
            seq += 1
            entry = make_entry(event, seq, prev, keys.ref, now, (reducers or {}).get(event.type))
            prev = entry["hash"]
            entries.append(entry)
        existing = await store.add_subject_keys(conn, keys.new)
        if not existing:
            break
        # A person `addresses_in` missed (an address spelt oddly in the JSON) whose key exists already: their
        # references were made with a new key, which must not be. Made again with the stored one.
        keys = SubjectKeys(secret, {**keys.known, **keys.new, **existing})
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
    signed_checkpoints: int | None = None  # how many signed checkpoints kept elsewhere held, when given any

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "checked": self.checked,
            "full": self.full,
            "head": {"seq": self.head_seq, "hash": self.head_hash},
        }
        if self.signed_checkpoints is not None:
            out["signed_checkpoints"] = self.signed_checkpoints
        if not self.ok:
            out["first_broken"] = {"seq": self.broken_seq, "problem": self.problem}
        return out


def check_entry(row: Mapping[str, Any] | Record, prev_seq: int, prev_hash: str) -> str | None:
    """Why `row` is not the entry that must follow (`prev_seq`, `prev_hash`), or None when it is."""
    if row["seq"] != prev_seq + 1:
        return "missing: the next entry is not in the trail"
    if row["prev_hash"] != prev_hash:
        return "out of place: does not follow the previous entry"
    if entry_hash(row) != row["hash"]:
        return "altered: its hash does not match its content"
    return None


async def verify(
    conn: Connection, *, full: bool, batch_size: int = 2000, trusted: Collection[str] | None = None
) -> Verification:
    """Walk the chain from the last checkpoint (or from the start when `full`), batch by batch, in one
    consistent snapshot, and compare its end with the recorded head. With `trusted` public keys, the walk
    starts from the last checkpoint signed by one of them: a checkpoint someone added to the database after
    rewriting the chain cannot make the walk skip the rewrite."""
    checked = 0
    # A caller's transaction is used as it is (a nested one cannot change the isolation level).
    snapshot = (
        conn.transaction() if conn.is_in_transaction() else conn.transaction(isolation="repeatable_read", readonly=True)
    )
    async with snapshot:
        head_seq, head_hash = await store.head(conn)

        def result(broken: int | None = None, problem: str | None = None) -> Verification:
            return Verification(broken is None, checked, full, head_seq, head_hash, broken, problem)

        if full:
            checkpoint = None
        elif trusted is not None:
            checkpoint = await store.last_trusted_checkpoint(conn, trusted)
        else:
            checkpoint = await store.last_checkpoint(conn)
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


async def verify_checkpoints(
    conn: Connection, checkpoints: Sequence[Checkpoint], trusted: Iterable[str], *, full: bool
) -> Verification:
    """`verify`, then every signed checkpoint kept elsewhere, oldest first, in the same snapshot: its signature
    holds under one of the `trusted` public keys, the chain reaches its sequence, and the entry there has its
    hash. So a tail cut off, or entries rewritten and re-chained, before the newest checkpoint are found even
    when the checkpoints in the database went with them."""
    trusted = set(trusted)
    snapshot = (
        conn.transaction() if conn.is_in_transaction() else conn.transaction(isolation="repeatable_read", readonly=True)
    )
    async with snapshot:
        outcome = await verify(conn, full=full, trusted=trusted)
        if not outcome.ok:
            return outcome
        held = 0

        def broken(seq: int, problem: str) -> Verification:
            return replace(outcome, ok=False, broken_seq=seq, problem=problem, signed_checkpoints=held)

        for kept in sorted(checkpoints, key=lambda c: c.seq):
            if not kept.signed_by(trusted):
                return broken(kept.seq, f"forged: the checkpoint at {kept.seq} is not signed by a trusted key")
            if kept.seq > outcome.head_seq:
                return broken(
                    outcome.head_seq + 1,
                    f"missing: the trail ends at {outcome.head_seq}, before the signed checkpoint at {kept.seq}",
                )
            row = await store.entry_at(conn, kept.seq)
            if row is None:
                return broken(kept.seq, f"missing: the entry of the signed checkpoint at {kept.seq}")
            if row["hash"] != kept.hash or entry_hash(row) != kept.hash:
                return broken(kept.seq, f"altered: differs from the signed checkpoint at {kept.seq}")
            held += 1
    return replace(outcome, signed_checkpoints=held)


async def checkpoint(conn: Connection, signer: Signer, trusted: Collection[str] = ()) -> Verification:
    """Verify from the last checkpoint signed by the signer's key (or one of `trusted`) and, if the chain holds,
    record its head as a new signed checkpoint."""
    keys = {signer.public_key, *trusted}
    outcome = await verify(conn, full=False, trusted=keys)
    if outcome.ok and outcome.head_seq > 0:
        last = await store.last_trusted_checkpoint(conn, keys)
        if last is None or last[0] < outcome.head_seq:
            signed = signer.sign(outcome.head_seq, outcome.head_hash, timestamp(datetime.now(UTC)))
            await store.add_checkpoint(conn, signed)
    return outcome
