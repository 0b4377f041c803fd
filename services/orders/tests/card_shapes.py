"""Test card numbers in every shape people and systems write them, and a reader that finds their digits again.

The reader is written apart from `spm_common.cards` on purpose (it reads digits with `unicodedata` alone), so
a test using it does not grade the scrubber with the scrubber's own eyes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

# Prefixes of the card schemes' test ranges (Visa 4, Mastercard 51-55 and 2221-2720, Amex 34/37, Discover 6011
# and 65, JCB 3528-3589, Diners 36/300-305, Maestro 6304, UnionPay 62): generated numbers are never real cards.
PREFIXES = ["4", "51", "55", "2221", "2720", "34", "37", "6011", "65", "3528", "3589", "36", "300", "6304", "62"]
# Digits as they can be typed or pasted: ASCII, full-width, mathematical bold, Arabic-Indic, Devanagari,
# superscript (NFKC makes each of them the ASCII digit).
DIGIT_FORMS = {
    "ascii": "0123456789",
    "full-width": "".join(chr(0xFF10 + d) for d in range(10)),
    "mathematical": "".join(chr(0x1D7CE + d) for d in range(10)),
    "arabic-indic": "".join(chr(0x0660 + d) for d in range(10)),
    "devanagari": "".join(chr(0x0966 + d) for d in range(10)),
    "superscript": "\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079",
}
# What can stand between two digits: whitespace of every kind, dashes, dots, slashes and other punctuation. Not a
# comma (nor a semicolon): followed by a space it ends a number, as in a list of phone numbers.
SEPARATORS = [
    " ", "\t", "\n", "\r", "\u00a0", "\u2007", "\u2009", "\u202f", "\u3000", "\u200b", "\u00ad",
    "-", "\u2010", "\u2013", "\u2014", "\u2212", "\uff0d", ".", "/", "_", "(", ")", "*", "|", "#", "+", "~", "'",
]  # fmt: skip
# The shapes the brief of issue 16 names, each as (grouping, separator, digit form).
NAMED_SHAPES = {
    "plain": ("none", "", "ascii"),
    "spaces": ("fours", " ", "ascii"),
    "dashes": ("fours", "-", "ascii"),
    "a run of separators": ("fours", " - ", "ascii"),
    "newlines": ("fours", "\n", "ascii"),
    "thin spaces": ("fours", "\u2009", "ascii"),
    "narrow no-break spaces": ("fours", "\u202f", "ascii"),
    "full-width": ("fours", " ", "full-width"),
    "full-width, no separators": ("none", "", "full-width"),
    "amex groups, dots": ("amex", ".", "ascii"),
}


def luhn_check_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


@st.composite
def pans(draw: st.DrawFn) -> str:
    """A Luhn-valid number of 13 to 19 digits in a test range."""
    prefix = draw(st.sampled_from(PREFIXES))
    length = draw(st.integers(13, 19))
    rest = draw(st.text("0123456789", min_size=length - len(prefix) - 1, max_size=length - len(prefix) - 1))
    body = prefix + rest
    return body + luhn_check_digit(body)


def groups(pan: str, grouping: str, sizes: list[int] | None = None) -> list[str]:
    if grouping == "none":
        return [pan]
    if grouping == "digits":
        return list(pan)
    if grouping == "amex":
        return [pan[:4], pan[4:10], pan[10:]]
    if grouping == "random" and sizes:
        out, i = [], 0
        for size in sizes:
            if i >= len(pan):
                break
            out.append(pan[i : i + size])
            i += size
        if i < len(pan):
            out.append(pan[i:])
        return out
    return [pan[i : i + 4] for i in range(0, len(pan), 4)]


def write(
    pan: str, grouping: str, separator: str | list[str], form: str | list[str], sizes: list[int] | None = None
) -> str:
    """`pan` grouped, with `separator` (one for every gap, or one each) and digits in `form` (one or each)."""
    parts = groups(pan, grouping, sizes)
    seps = separator if isinstance(separator, list) else [separator] * len(parts)
    out = []
    k = 0
    for i, part in enumerate(parts):
        if i:
            out.append(seps[(i - 1) % len(seps)] if seps else "")
        for ch in part:
            forms = form if isinstance(form, list) else [form]
            out.append(DIGIT_FORMS[forms[k % len(forms)]][int(ch)])
            k += 1
    return "".join(out)


@st.composite
def written_cards(draw: st.DrawFn) -> tuple[str, str]:
    """(the number, as written): a named shape, or any grouping with runs of one to three separators
    between groups and any mix of digit forms."""
    pan = draw(pans())
    if draw(st.booleans()):
        grouping, separator, form = NAMED_SHAPES[draw(st.sampled_from(sorted(NAMED_SHAPES)))]
        return pan, write(pan, grouping, separator, form)
    grouping = draw(st.sampled_from(["fours", "amex", "digits", "random", "none"]))
    sizes = draw(st.lists(st.integers(1, 7), min_size=1, max_size=19))
    gaps = draw(st.lists(st.lists(st.sampled_from(SEPARATORS), min_size=1, max_size=3).map("".join), min_size=1))
    forms = draw(st.lists(st.sampled_from(sorted(DIGIT_FORMS)), min_size=1, max_size=3))
    return pan, write(pan, grouping, gaps, forms, sizes)


# Text around a card: anything that does not read as a digit (so the reader below can tell what was the card).
def _not_a_digit(ch: str) -> bool:
    return _digit_of(ch) is None


surrounding_text = st.text(st.characters(codec="utf-8").filter(_not_a_digit), max_size=12)
# The scrubber's one deliberate exception: a token of 32 or more hex digits in one case is a digest (a
# reference, a chain hash), never read for card numbers. Text around a card must not make one of it.
_HEX_DIGEST = re.compile(r"[0-9a-f]{32,}|[0-9A-F]{32,}")


def makes_a_hex_digest(text: str) -> bool:
    return _HEX_DIGEST.search(text) is not None


def _digit_of(ch: str) -> str | None:
    normal = unicodedata.normalize("NFKC", ch)
    if len(normal) == 1 and normal.isdecimal():
        return str(unicodedata.decimal(normal))
    return None


def digit_runs(text: str) -> list[str]:
    """The digits of every run of digits in `text`, where a run goes on over up to three characters that are
    neither letters nor digits, read through NFKC as a person would read them."""
    reading = []
    for ch in text:
        digit = _digit_of(ch)
        if digit is not None:
            reading.append(digit)
        elif unicodedata.category(ch)[0] in "LN":
            reading.append("a")
        else:
            reading.append(" ")
    return [re.sub(r"\D", "", run) for run in re.findall(r"\d(?:[^a\d]{0,3}\d)*", "".join(reading))]


# An escape as JSON (`\n`, `\u2009`) and Python's repr (`\xa0`, `\U0001d7d2`) write it: a person reading a
# log line, a JSON column or a dead letter's headers reads the character, so the reader must too.
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|x([0-9a-fA-F]{2})|([nrtbf]))")
_CONTROL = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}


def unescaped(text: str) -> str:
    """`text` with every JSON or repr escape of a character replaced by the character, and again for text
    escaped twice (a JSON document inside a JSON string)."""

    def one(match: re.Match[str]) -> str:
        code = match.group(1) or match.group(2) or match.group(3)
        return chr(int(code, 16)) if code else _CONTROL[match.group(4)]

    for _ in range(3):
        if "\\" not in text:
            break
        text = _ESCAPE.sub(one, text.replace("\\\\", "\\"))
    return text


def survives(pan: str, text: str) -> bool:
    """Whether any of `pan`'s digits but the last four can still be read, as a run, in `text`."""
    return any(pan[:-4] in run for run in digit_runs(text))


def strings_in(value: Any) -> Iterator[str]:
    """Every key and value of a decoded JSON document, as text."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)
    elif value is not None:
        yield str(value)
