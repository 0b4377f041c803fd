"""Card data removal: card fields are dropped and every Luhn-valid run of 13-19 digits is masked to its
last four digits, before anything is written, logged, published or dead-lettered (CONTRACT sections 3, 5).

`scrub` cleans a decoded JSON value; `scrub_body` cleans raw bytes (a CloudEvent or anything else) and is
the consumer's hook (`Runtime(scrub=scrub_body)`), so the inbox, logs, retry and dead-letter queues never
see card data. Every service whose queue may receive events from outside (orders; audit, which binds every
event type) passes it. A scrubbed CloudEvent carries what was removed in the `MARKER` extension attribute,
so a handler can report it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

MARKER = "spmscrubbed"  # no "card" in the name, or it would be scrubbed itself
MASK = "*"
# Field names (lower case, letters and digits only) that hold card data whatever their value looks like.
CARD_FIELDS = frozenset(
    {
        "pan",
        "cvv",
        "cvv2",
        "cvc",
        "cvc2",
        "ccv",
        "ccnumber",
        "ccnum",
        "creditcard",
        "securitycode",
        "expiry",
        "expirydate",
        "expdate",
        "expmonth",
        "expyear",
        "track1",
        "track2",
        "trackdata",
    }
)
# Digits with at most two separators between consecutive ones: "4111 1111-1111 1111", "4111.1111...".
_DIGIT_RUN = re.compile(r"[0-9](?:[ \t\u00a0\-\u2010-\u2015.]{0,2}[0-9])*")
# A run as above of at least 13 digits: text without one has nothing `mask_text` would mask (one search in C
# instead of the walk over every run).
_LONG_DIGIT_RUN = re.compile(r"[0-9](?:[ \t\u00a0\-\u2010-\u2015.]{0,2}[0-9]){12}")
# The fast path's test, on raw UTF-8 bytes: 13 digits in a row once every byte a separator may be made of is
# deleted (so any run of 13 digits with separators between goes the slow way, and more besides); and key
# names that might be card fields. A JSON body with neither (and no backslash escape that could hide either)
# has nothing to remove: it is not even parsed. Both are a `bytes.translate` and substring searches, no
# regular expression: this runs on every message.
_SEPARATOR_BYTES = b" \t-.\xc2\xa0\xe2\x80\x90\x91\x92\x93\x94\x95"
_DIGIT_OR_OTHER = bytes(48 if 48 <= b <= 57 else 120 for b in range(256))  # "0" for a digit, "x" for the rest
# Key names are compared by their ASCII letters and digits only (`is_card_field`), so the words are looked
# for in the body squeezed the same way: "C_V_V" and "c\u00e9ard" cannot slip through.
_NOT_ALNUM = bytes(b for b in range(256) if not (48 <= b <= 57 or 97 <= b <= 122))
_SHORTEST, _LONGEST = 13, 19
_SHORTEST_DIGITS = b"0" * _SHORTEST
# A run this long is no identifier anyone needs; masking it whole bounds the work on hostile input.
_MASK_WHOLE_RUN_OVER = 64
_DIGIT = re.compile(r"[0-9]")
# A UUID is an identifier, not a card number written with dashes, though its digit groups can line up like
# one: its span is never scanned, so event ids and references survive intact.
_UUID = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}(?![0-9A-Za-z])")


@dataclass
class Findings:
    """What was removed: the paths of dropped fields (digits replaced by '#') and how many numbers were masked."""

    fields: set[str] = field(default_factory=set)
    masked: int = 0

    def __bool__(self) -> bool:
        return bool(self.fields) or self.masked > 0

    def merge(self, other: Findings) -> None:
        self.fields |= other.fields
        self.masked += other.masked

    def as_marker(self) -> dict[str, Any]:
        return {"fields": sorted(self.fields), "masked": self.masked}


@lru_cache(maxsize=4096)  # the same few key names come in every event
def is_card_field(key: str) -> bool:
    # ASCII letters and digits only, as `might_hold_card_data` sees them in the raw bytes.
    name = "".join(ch for ch in key.encode("ascii", "ignore").decode().lower() if ch.isalnum())
    return "card" in name or name in CARD_FIELDS


def luhn_valid(digits: list[int]) -> bool:
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def mask_text(text: str) -> tuple[str, int]:
    """`text` with every Luhn-valid 13-19 digit window of every digit run masked but for its last four
    digits (separators kept); and how many runs were masked."""
    if len(text) < _SHORTEST or not _LONG_DIGIT_RUN.search(text):
        return text, 0
    masked_runs = 0
    pieces: list[str] = []
    last = 0
    scanned = _UUID.sub(lambda m: "_" * len(m.group()), text) if "-" in text else text
    for match in _DIGIT_RUN.finditer(scanned):
        run = match.group()
        positions = [i for i, ch in enumerate(run) if "0" <= ch <= "9"]
        if len(positions) < _SHORTEST:
            continue
        hidden = _card_digits(run, positions)
        if not hidden:
            continue
        masked_runs += 1
        chars = list(run)
        for i in hidden:
            chars[i] = MASK
        pieces.append(text[last : match.start()])
        pieces.append("".join(chars))
        last = match.end()
    if not masked_runs:
        return text, 0
    pieces.append(text[last:])
    return "".join(pieces), masked_runs


def _card_digits(run: str, positions: list[int]) -> set[int]:
    """Indexes in `run` of the digits to hide: all but the last four of every Luhn-valid window. Any window
    of what stays visible was a window of the original run and was not Luhn-valid, so one pass suffices."""
    if len(positions) > _MASK_WHOLE_RUN_OVER:
        return set(positions[:-4])
    values = [int(run[i]) for i in positions]
    hidden: set[int] = set()
    count = len(values)
    for start in range(count - _SHORTEST + 1):
        for length in range(_SHORTEST, min(_LONGEST, count - start) + 1):
            if luhn_valid(values[start : start + length]):
                hidden.update(positions[start : start + length - 4])
    return hidden


def might_hold_card_data(raw: bytes) -> bool:
    """False only when `raw` (JSON text) certainly holds no card number and no card field: the fast path."""
    if b"\\" in raw:
        return True
    if b'"card_data_removed":' in raw:  # order.recorded's own flag, in every order's event: no card data
        raw = raw.replace(b'"card_data_removed":false', b"").replace(b'"card_data_removed":true', b"")
    s = raw.lower().translate(None, _NOT_ALNUM)
    # The card words, spelled out: a generator over a tuple of them cost more than the nine searches.
    if (
        b"card" in s
        or b"cvv" in s
        or b"cvc" in s
        or b"ccv" in s
        or b"ccnum" in s
        or b"pan" in s
        or b"security" in s
        or b"exp" in s
        or b"track" in s
    ):
        return True
    return _SHORTEST_DIGITS in raw.translate(_DIGIT_OR_OTHER, _SEPARATOR_BYTES)


def scrub(value: Any, path: str = "", findings: Findings | None = None) -> tuple[Any, Findings]:
    """A copy of a decoded JSON value without card fields and with card numbers masked (the value itself
    when there is nothing to remove)."""
    findings = findings if findings is not None else Findings()
    try:
        clean = not might_hold_card_data(orjson.dumps(value))
    except TypeError:  # not plain JSON (a number too big for orjson): walk it
        clean = False
    return (value if clean else _scrub(value, path, findings, 0)), findings


def _walk(value: Any) -> tuple[Any, Findings]:
    """`scrub` without its fast path, for a value already known to need the walk."""
    findings = Findings()
    return _scrub(value, "", findings, 0), findings


def _scrub(value: Any, path: str, findings: Findings, depth: int) -> Any:
    if isinstance(value, str):
        text, count = mask_text(value)
        findings.masked += count
        return text
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):  # a tuple: no union object built per call
        text, count = mask_text(repr(value))
        if count:
            findings.masked += count
            return text
        return value
    if depth > 64:  # deeper than any order: keep nothing of it
        findings.fields.add(_path_name(path) or "$")
        return None
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name, count = mask_text(str(key))
            findings.masked += count
            child = f"{path}.{name}" if path else name
            # A flag such as `card_data_removed: true` says something about card data but cannot hold any.
            if is_card_field(name) and not (isinstance(item, bool) or item is None):
                findings.fields.add(_path_name(child))
                continue
            out[name] = _scrub(item, child, findings, depth + 1)
        return out
    if isinstance(value, list):
        return [_scrub(item, f"{path}[]", findings, depth + 1) for item in value]
    return value


def _path_name(path: str) -> str:
    """A field path fit for an event operators read: no digits at all, and bounded."""
    return _DIGIT.sub("#", path)[:200]


def scrub_body(body: bytes) -> bytes:
    """The consumer's hook: a JSON document is scrubbed (and marked if anything was removed); anything
    else is masked as text. Returns `body` itself when there was nothing to remove."""
    if not might_hold_card_data(body):
        return body
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "surrogateescape")
        masked, count = mask_text(text)
        return masked.encode("utf-8", "surrogateescape") if count else body
    cleaned, findings = _walk(document)  # might_hold_card_data said yes already
    if not findings:
        return body
    if isinstance(cleaned, dict):
        cleaned[MARKER] = _merged_marker(cleaned.get(MARKER), findings)
    return orjson.dumps(cleaned)


def _merged_marker(previous: Any, findings: Findings) -> dict[str, Any]:
    """A message scrubbed twice (a dead letter replayed) keeps what the first pass found."""
    merged = Findings(set(findings.fields), findings.masked)
    earlier = marker_findings(previous)
    if earlier:
        merged.merge(earlier)
    return merged.as_marker()


def marker_findings(marker: Any) -> Findings | None:
    """What a CloudEvent's marker says was removed, or None; it came from outside, so it is checked."""
    if not isinstance(marker, dict):
        return None
    fields, masked = marker.get("fields"), marker.get("masked")
    if not isinstance(fields, list) or not isinstance(masked, int) or isinstance(masked, bool):
        return None
    names = {_path_name(str(name)) for name in fields[:50] if isinstance(name, str)}
    return Findings(names, max(0, min(masked, 1_000_000)))
