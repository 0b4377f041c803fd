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
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise, repeat
from operator import itemgetter
from typing import Any

import orjson

MARKER = "spmscrubbed"  # no "card" in the name, or it would be scrubbed itself
MASK = "*"

# ---- Reading text as a card thief would.
#
# Every character is read through its NFKC form: a full-width "４", a mathematical "𝟒", a superscript "⁴" or an
# Arabic-Indic "٤" is the digit 4, a full-width "－" is "-". Whitespace (U+2009, U+202F, newlines...),
# punctuation, symbols, format and combining characters are separators; letters and other numbers ("½") end
# a run. The reading maps each character to one character, so a position in it is the same position in the
# text, and only the card's digits change when it is masked (into "*"); the rest stays as it was written.


class _Reading(dict[int, int]):
    """`str.translate` table: a non-ASCII code point to the ASCII digit it reads as, to the ASCII punctuation
    it is a form of, to " " (any other separator), or to itself (a letter, or a number that is no digit).
    Filled as code points come, and bounded."""

    def __missing__(self, code: int) -> int:
        char = chr(code)
        normal = unicodedata.normalize("NFKC", char)
        value = unicodedata.decimal(normal, None) if len(normal) == 1 else None
        if value is not None:
            read = 48 + value
        elif unicodedata.category(char)[0] in "LN":
            read = code
        elif len(normal) == 1 and normal.isascii():
            read = ord(normal)  # a letter would have been "L" above: this is punctuation or a space
        else:
            read = 32
        if len(self) < 20_000:  # hostile text cycling through every code point does not grow it forever
            self[code] = read
        return read


_READING = _Reading({code: code for code in range(128)})


def read_digits(text: str) -> str:
    """`text` with every digit an ASCII digit and every non-ASCII separator an ASCII one, position for
    position."""
    return text if text.isascii() else text.translate(_READING)


# Between two digits of a number: up to three separators (in the reading, any ASCII character that is not a
# letter or a digit): "4111 - 1111", "4111\n1111", "4111. 1111". But a comma or semicolon followed by a space
# ends a number: that is how lists are written ("0912 345 678, 0987 654 321"), and no card number is.
_SEPARATOR = r"(?:(?![,;]\s)[\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f])"
_DIGIT_RUN = re.compile(rf"[0-9](?:{_SEPARATOR}{{0,3}}[0-9])*")
# A run as above of at least 13 digits: text without one has nothing `mask_text` would mask (one search in C
# instead of the walk over every run).
_LONG_DIGIT_RUN = re.compile(rf"[0-9](?:{_SEPARATOR}{{0,3}}[0-9]){{12}}")
_SHORTEST, _LONGEST = 13, 19
_DIGIT = re.compile(r"[0-9]")
_ASCII_DIGITS = b"0123456789"
# A run this long is no identifier anyone needs; masking it whole bounds the work on hostile input.
_MASK_WHOLE_RUN_OVER = 64
# Identifiers, which no one writes a card number inside, and times, whose digit groups can line up like a card
# number's once any punctuation separates digits. Their spans are never scanned:
# - a UUID (event ids, references);
# - a hex digest: a token of 32 or more hex digits in one case, with a letter among them (a recipient or
#   subject reference, a chain hash). One SHA-256 digest in 67 holds a Luhn-valid window of 13-19 decimal
#   digits in a row; masking it broke the reference in the events, the audit trail and the logs that carry it
#   (BENCHMARKS.md, "Card scrubber");
# - an ISO 8601 date and time with a space or "T" ("2026-12-05 21:40:07.830137+00:00" is 20 digits).
# The log redactor keeps the identifiers whole too (spm_common.redaction).
UUID_PATTERN = r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}"
HEX_DIGEST_PATTERN = r"(?=[0-9]*[a-fA-F])(?:[0-9a-f]{32,}|[0-9A-F]{32,})"
_NOT_A_NUMBER = re.compile(
    rf"(?<![0-9A-Za-z])(?:{UUID_PATTERN}|{HEX_DIGEST_PATTERN})(?![0-9A-Za-z])"
    r"|(?<![0-9])[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]{1,9})?)?"
    r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?(?![0-9])"
)
# The cheap first look for a digest (a third of the cost on text without one); the others hold a "-".
_HEX_RUN = re.compile(r"[0-9a-fA-F]{32}")

# ---- Field names.
#
# A name is read through NFKC, then as its ASCII letters and digits, squeezed ("cvvCode", "CVV_code" and
# "Cvvcode" are "cvvcode") and in words ("cvv", "code"). It names card data when the squeezed name holds one of
# `_CARD_INFIXES` (but "discard"), is one of `_CARD_NAMES`, or has one of them as a word or `_CARD_PHRASES` as
# two words in a row. Short codes that occur inside ordinary words ("pan" in "company", "cid" in "decide",
# "exp" in "expected") count only as words of their own. Deliberately not card fields: "expires", "expired",
# "expires_at" (when a link, token or lease runs out: the project's own times are named so), "cc" alone (an
# e-mail's copy), "tracking", "verification_code" (a one-time code sent by e-mail or SMS), "span",
# "pancake", "company", "cidr". A test holds every field name of the project's payload models to this.
_CARD_INFIXES = (
    "card",
    "cvv",
    "cvc",
    "cvn",
    "ccv",
    "csc",
    "expiry",
    "expiration",
    "securitycode",
    "verificationvalue",
    "validthru",
    "validthrough",
    "goodthru",
    "trackdata",
)
_CARD_NAMES = frozenset(
    {"pan", "cid", "cvd", "cav", "cav2", "exp", "expdate", "expmonth", "expyear", "ccexp", "ccnum", "ccnumber"}
    | {"ccno", "track1", "track2", "pannumber", "panno"}
)
_CARD_PHRASES = frozenset(
    {
        ("security", "code"),
        ("verification", "value"),
        ("valid", "thru"),
        ("valid", "through"),
        ("good", "thru"),
        ("track", "1"),
        ("track", "2"),
        ("track", "data"),
        ("cc", "num"),
        ("cc", "number"),
        ("cc", "no"),
        ("cc", "exp"),
        ("pan", "number"),
    }
)
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")

# ---- The fast path's test, on raw UTF-8 bytes (`might_hold_card_data`): this runs on every message, so no
# regular expression and no decoding of ASCII. Digits: 13 in a row once every byte a separator may be made of
# is deleted (any ASCII punctuation or space, any UTF-8 continuation byte), with every other non-ASCII
# character counted as a digit (it may be one: "４"); so any number that `mask_text` would look at goes the
# slow way, and more besides.
_DIGIT_OR_OTHER = bytes(48 if 48 <= b <= 57 or b >= 0xC0 else 120 for b in range(256))
_SEPARATOR_BYTES = bytes(
    b for b in range(256) if (b < 128 and not (48 <= b <= 57 or 65 <= b <= 90 or 97 <= b <= 122)) or 0x80 <= b < 0xC0
)
_SHORTEST_DIGITS = b"0" * _SHORTEST
_JSON_WHITESPACE = b" \t\n\r"
_AFTER = itemgetter(2)


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
    """Whether a field of this name holds card data whatever its value looks like (see `_CARD_INFIXES`)."""
    name = (key if key.isascii() else unicodedata.normalize("NFKC", key)).encode("ascii", "ignore").decode()
    squeezed = "".join(ch for ch in name.lower() if ch.isalnum())
    if squeezed in _CARD_NAMES:
        return True
    for infix in _CARD_INFIXES:
        if infix in squeezed and not (infix == "card" and squeezed.count("card") == squeezed.count("discard")):
            return True
    words = [word.lower() for word in _WORD.findall(name)]
    return any(word in _CARD_NAMES for word in words) or any(pair in _CARD_PHRASES for pair in pairwise(words))


def luhn_valid(digits: list[int]) -> bool:
    """The Luhn check of card numbers (ISO/IEC 7812), the system's only one."""
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
    if len(text) < _SHORTEST:
        return text, 0
    if text.isascii():
        reading = text
    else:
        # Fewer than 13 characters that may read as a digit (ASCII digits and any non-ASCII character): no
        # card number, and no reading to make (Vietnamese names and addresses, mostly).
        ascii_part = text.encode("ascii", "ignore")
        if len(text) - len(ascii_part.translate(None, _ASCII_DIGITS)) < _SHORTEST:
            return text, 0
        reading = text.translate(_READING)
    if not _LONG_DIGIT_RUN.search(reading):
        return text, 0
    masked_runs = 0
    pieces: list[str] = []
    last = 0
    if "-" in reading or _HEX_RUN.search(reading):
        reading = _NOT_A_NUMBER.sub(_unreadable, reading)
    for match in _DIGIT_RUN.finditer(reading):
        run = match.group()
        positions = [i for i, ch in enumerate(run) if "0" <= ch <= "9"]
        if len(positions) < _SHORTEST:
            continue
        hidden = _card_digits(run, positions)
        if not hidden:
            continue
        masked_runs += 1
        chars = list(text[match.start() : match.end()])
        for i in hidden:
            chars[i] = MASK
        pieces.append(text[last : match.start()])
        pieces.append("".join(chars))
        last = match.end()
    if not masked_runs:
        return text, 0
    pieces.append(text[last:])
    return "".join(pieces), masked_runs


def _unreadable(match: re.Match[str]) -> str:
    """A span that is never scanned, as letters of the same length (positions stay positions)."""
    return "x" * len(match.group())


def _card_digits(run: str, positions: list[int]) -> set[int]:
    """Indexes in `run` of the digits to hide: all but the last four of every Luhn-valid window. Any window
    of what stays visible was a window of the original run and was not Luhn-valid, so one pass suffices."""
    if len(positions) > _MASK_WHOLE_RUN_OVER:
        return set(positions[:-4])
    values = [int(run[i]) for i in positions]
    hidden: set[int] = set()
    count = len(values)
    for start in range(count - _SHORTEST + 1):
        if not values[start]:
            continue  # no card number starts with 0 (ISO/IEC 7812 gives that major industry to no card issuer)
        for length in range(_SHORTEST, min(_LONGEST, count - start) + 1):
            if luhn_valid(values[start : start + length]):
                hidden.update(positions[start : start + length - 4])
    return hidden


def might_hold_card_data(raw: bytes) -> bool:
    """False only when `raw` (JSON text) certainly holds no card number and no card field: the fast path."""
    if b"\\" in raw:  # an escape could hide a digit, a separator, a quote or a letter of a name
        return True
    if not raw.isascii():
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            return True
        # Text that NFKC leaves as it is has no compatibility characters: no full-width or mathematical
        # letters a name could be spelled in. (Vietnamese in NFC is such text.)
        if not unicodedata.is_normalized("NFKC", text):
            return True
    if b'"card_data_removed":' in raw:  # order.recorded's own flag, in every order's event: no card data
        raw = raw.replace(b'"card_data_removed":false', b"").replace(b'"card_data_removed":true', b"")
    if _SHORTEST_DIGITS in raw.translate(_DIGIT_OR_OTHER, _SEPARATOR_BYTES):
        return True
    # Every key, without parsing: in JSON without escapes a quote cannot occur inside a string, so `":` ends
    # a key and nothing else, and the key is what follows the quote before it. Whitespace between a key and
    # its colon (legal, but no serialiser writes it) would hide one: such a body goes the slow way.
    pieces = raw.split(b'":')
    if len(pieces) - 1 != raw.translate(None, _JSON_WHITESPACE).count(b'":'):
        return True
    pieces.pop()
    # The part of each piece after its last quote, in C (map, no Python loop): a tenth of the message's cost.
    return _names_hold_a_card_field(frozenset(map(_AFTER, map(bytes.rpartition, pieces, repeat(b'"')))))


@lru_cache(maxsize=1024)  # events of one type have the same keys: one look-up per message
def _names_hold_a_card_field(names: frozenset[bytes]) -> bool:
    return any(is_card_field(name.decode()) for name in names)


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
    """A field path fit for an event operators read: no digits at all (in any script), and bounded."""
    return _DIGIT.sub("#", read_digits(path))[:200]


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
