"""Card data removal, license keys and webhook signatures as plain rules (no servers)."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata

import card_shapes
import orjson
from audit.events import TRAIL_FIELDS
from contact import intake
from email_validator import EmailNotValidError, validate_email
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from orders import licenses, webhooks
from orders.events import normalise_email
from pydantic import BaseModel
from spm_common import allowlist, cards, envelope, notifications

PANS = ["4111111111111111", "4242424242424242", "5555555555554444", "378282246310005", "4222222222222"]


def digits_of(text: str) -> str:
    """Digit runs with their separators removed, as a scanner would read them."""
    return re.sub(r"(?<=\d)[ \t\u00a0\-.]{1,2}(?=\d)", "", text)


def test_every_shape_of_a_card_number_is_masked_to_its_last_four_digits() -> None:
    cases = {
        "4111 1111 1111 1111": "**** **** **** 1111",
        "4111-1111-1111-1111": "****-****-****-1111",
        "4242424242424242": "************4242",
        "Amex 3782 822463 10005 please": "Amex **** ****** *0005 please",
        "card:5555555555554444;exp=12/27": "card:************4444;exp=12/27",
    }
    for given_text, expected in cases.items():
        assert cards.mask_text(given_text) == (expected, 1), given_text
    # Digits right after a card number form longer runs; every Luhn-valid window of them goes, even if
    # that hides more than the card (here "1111111111111225" is Luhn-valid too).
    masked, count = cards.mask_text("4111111111111111 1225 123")
    assert count == 1 and "4111111111111111" not in digits_of(masked) and masked.endswith("***5 123")


def test_numbers_that_are_not_cards_stay() -> None:
    for text in ("+84 912 345 678", "1234567812345678", "FS-2026-000123", "2026-11-29T03:59:12Z", "49.00"):
        assert cards.mask_text(text) == (text, 0)


def test_uuids_are_identifiers_not_card_numbers() -> None:
    for text in ("12345678-1234-5678-9012-345678901234", "order:e4debf96-1241-5678-9012-345630983f91 ok"):
        assert cards.mask_text(text) == (text, 0)
    assert cards.mask_text("12345678-1234-5678-9012-345678901234 4111111111111111")[1] == 1


def luhn_windows(digest: str) -> int:
    """How many 13-19 digit windows of `digest`'s decimal runs pass Luhn (read apart from the scrubber)."""
    found = 0
    for run in re.findall(r"[0-9]{13,}", digest):
        for start in range(len(run) - 12):
            for end in range(start + 13, min(start + 19, len(run)) + 1):
                body = run[start : end - 1]
                found += run[start] != "0" and card_shapes.luhn_check_digit(body) == run[end - 1]
    return found


def test_hex_digests_are_references_not_card_numbers() -> None:
    # Recipient and subject references, chain hashes: one SHA-256 digest in 67 holds a Luhn-valid window of
    # decimal digits, which was masked, breaking the reference wherever it went (events, audit trail, logs).
    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2_000)]
    digests += [hashlib.md5(str(i).encode()).hexdigest() for i in range(2_000)]  # noqa: S324 - a test corpus
    assert sum(luhn_windows(d) > 0 for d in digests) > 10
    for digest in digests:
        for text in (digest, digest.upper(), f"ref {digest}.", {"recipient_ref": digest}):
            assert cards.scrub(text)[0] == text
    # Not a digest: too short, letters of both cases, or letters past "f". A card in it is masked.
    for text in ("deadbeef4111111111111111deadbee", "deadbeef4111111111111111DEADBEEF", "4111111111111111" + "g" * 20):
        assert cards.mask_text(text)[1] == 1, text


def test_a_card_inside_a_longer_digit_run_is_masked_too() -> None:
    masked, count = cards.mask_text("0004111111111111111000")
    assert count == 1 and "4111111111111111" not in digits_of(masked)
    masked, _ = cards.mask_text("9" * 200)
    assert masked.endswith("9999") and masked.count("9") == 4


def test_card_fields_are_dropped_and_reported_without_digits() -> None:
    data = {
        "order_id": "A-1",
        "card_number": "4111111111111111",
        "CVV": "123",
        "payment": {"method": "card", "Card": {"number": "4242424242424242", "expiry": "12/27"}},
        "items": [{"sku": "X", "pan": "5555555555554444", "cardExpiry": "1227"}],
        "note": 4111111111111111,
        "4242424242424242": "as a key",
    }
    cleaned, found = cards.scrub(data)
    assert cleaned == {
        "order_id": "A-1",
        "payment": {"method": "card"},
        "items": [{"sku": "X"}],
        "note": "************1111",
        "************4242": "as a key",
    }
    assert found.fields == {"card_number", "CVV", "payment.Card", "items[].pan", "items[].cardExpiry"}
    assert found.masked == 2
    assert not any(ch.isdigit() for name in found.fields for ch in name)


def test_flags_about_card_data_are_kept() -> None:
    """`order.recorded` says whether card data was removed; a true, false or null value holds no card data."""
    data = {"order_id": "A-1", "card_data_removed": True, "card_on_file": False, "cardholder": None}
    assert cards.scrub(data) == (data, cards.Findings())
    assert not cards.might_hold_card_data(orjson.dumps({"order_id": "A-1", "card_data_removed": False}))
    cleaned, found = cards.scrub({"card_data_removed": "4111111111111111"})
    assert cleaned == {}
    assert found.fields == {"card_data_removed"}


def test_the_consumer_hook_marks_what_it_removed_and_leaves_clean_bodies_alone() -> None:
    clean = orjson.dumps({"id": "1", "data": {"order_id": "FS-1"}})
    assert cards.scrub_body(clean) is clean
    body = cards.scrub_body(orjson.dumps({"id": "1", "subject": "4111111111111111", "data": {"cvc": "123"}}))
    document = orjson.loads(body)
    assert document["subject"] == "************1111"
    assert document[cards.MARKER] == {"fields": ["data.cvc"], "masked": 1}
    assert cards.scrub_body(b"not json 4111 1111 1111 1111") == b"not json **** **** **** 1111"
    again = orjson.loads(cards.scrub_body(orjson.dumps({**document, "x": "4242424242424242"})))
    assert again[cards.MARKER] == {"fields": ["data.cvc"], "masked": 2}


def test_a_marker_from_outside_is_checked() -> None:
    assert cards.marker_findings({"fields": ["a"], "masked": 1}) == cards.Findings({"a"}, 1)
    assert cards.marker_findings({"fields": ["pan4111"], "masked": True}) is None
    assert cards.marker_findings("fields") is None
    assert cards.marker_findings({"fields": ["x4111111111111111"], "masked": 0}).fields == {"x################"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@st.composite
def with_a_card(draw: st.DrawFn) -> object:
    pan = draw(st.sampled_from(PANS))
    separator = draw(st.sampled_from(["", " ", "-"]))
    shaped = separator.join(pan[i : i + 4] for i in range(0, len(pan), 4))
    text = draw(st.text(max_size=8)) + shaped + draw(st.text(max_size=8))
    value: object = int(pan) if draw(st.booleans()) and not separator else text
    holder = draw(json_values)
    key = draw(st.text(max_size=8))
    return {"x": [holder, {key: value}]} if draw(st.booleans()) else {text: holder}


@settings(max_examples=1000, deadline=None)
@given(with_a_card())
def test_no_card_number_survives_scrubbing(document: object) -> None:
    cleaned, found = cards.scrub(document)
    text = digits_of(json.dumps(cleaned, ensure_ascii=False))  # json: orjson refuses ints over 64 bits
    assert not any(pan in text for pan in PANS)
    assert found  # a field dropped, or a number masked


def test_license_keys_are_readable_and_distinct() -> None:
    keys = licenses.new_keys(20_000)
    assert len(set(keys)) == len(keys)
    assert all(licenses.KEY_PATTERN.match(k) and len(k) == 29 for k in keys)
    assert not set("".join(keys)) & set("01IO")
    assert licenses.hint("7KQ2M-XW4PD-9TRHC-B3NVA-L6ZEY") == "*****-*****-*****-*****-L6ZEY"


def test_signature_rules() -> None:
    body, now = b'{"order_id":"A"}', 1_800_000_000
    good = webhooks.header("s", now, body)
    assert webhooks.verify("s", good, body, now, 300)
    assert webhooks.verify("s", good, body, now + 300, 300) and not webhooks.verify("s", good, body, now + 301, 300)
    assert not webhooks.verify("s", good, body + b" ", now, 300)
    assert not webhooks.verify(None, good, body, now, 300) and not webhooks.verify("", good, body, now, 300)
    assert not webhooks.verify("s", f"v1={webhooks.sign('s', now, body)}", body, now, 300)  # no timestamp
    assert not webhooks.verify("s", f"t={now}", body, now, 300)
    assert webhooks.verify(
        "s", webhooks.header(["old", "s"], now, body).upper().replace("T=", "t=").replace("V1", "v1"), body, now, 300
    )


@settings(max_examples=500, deadline=None)
@given(st.emails() | st.from_regex(r"[A-Za-z0-9._%+-]{1,12}@[A-Za-z0-9.-]{1,12}\.[A-Za-z0-9]{1,5}", fullmatch=True))
@example("0@00--0.AA")  # found by CI: "--" in a label's third and fourth places is refused unless Punycode
def test_the_fast_address_check_agrees_with_email_validator(address: str) -> None:
    def slow(text: str) -> str | None:
        try:
            return validate_email(text, check_deliverability=False).normalized.lower()
        except EmailNotValidError:
            return None

    def fast(text: str) -> str | None:
        try:
            return normalise_email(text)
        except ValueError:
            return None

    assert fast(address) == slow(address)


@settings(max_examples=500, deadline=None)
@given(json_values | with_a_card())
def test_the_fast_path_skips_only_documents_with_nothing_to_remove(document: object) -> None:
    walked, found = cards.Findings(), cards.Findings()
    assert cards.scrub(document, findings=found)[0] == cards._scrub(document, "", walked, 0)
    assert (found.fields, found.masked) == (walked.fields, walked.masked)


def _mask_text_without_the_precheck(text: str) -> tuple[str, int]:
    """`cards.mask_text` with its one-search pre-check taken out: the walk over every digit run."""
    original = cards._LONG_DIGIT_RUN
    cards._LONG_DIGIT_RUN = re.compile(r"")  # matches anywhere: the walk always runs
    try:
        return cards.mask_text(text)
    finally:
        cards._LONG_DIGIT_RUN = original


digit_heavy_text = st.text(alphabet=st.sampled_from("0123456789 -.\t\u00a0\u2012abcdef"), max_size=60)


@settings(max_examples=500, deadline=None)
@given(digit_heavy_text | st.text(max_size=40) | st.sampled_from(PANS).map(lambda pan: f"card {pan} ok"))
def test_the_precheck_of_mask_text_skips_only_text_with_nothing_to_mask(text: str) -> None:
    assert cards.mask_text(text) == _mask_text_without_the_precheck(text)


def test_card_field_names_are_recognised_however_often_asked() -> None:
    for _ in range(3):  # the answer is cached: the same for every call
        assert cards.is_card_field("Card_Number") and cards.is_card_field("c_v_v")
        assert not cards.is_card_field("order_id")


# ---- Issue 16: the shapes that had slipped through, and names found by pattern.


def test_the_shapes_that_slipped_through_are_masked() -> None:
    for name, (grouping, separator, form) in card_shapes.NAMED_SHAPES.items():
        for pan in PANS:
            written = card_shapes.write(pan, grouping, separator, form)
            masked, count = cards.mask_text(f"charge {written} please")
            assert count == 1 and not card_shapes.survives(pan, masked), (name, masked)
            assert masked.startswith("charge ") and masked.endswith(" please")
    assert cards.mask_text("4111 - 1111 - 1111 - 1111") == ("**** - **** - **** - 1111", 1)
    assert cards.mask_text("4111\n1111\n1111\n1111") == ("****\n****\n****\n1111", 1)
    assert cards.mask_text("4111\u20091111\u202f1111\u20091111") == ("****\u2009****\u202f****\u20091111", 1)
    assert cards.mask_text("４１１１ １１１１ １１１１ １１１１") == ("**** **** **** １１１１", 1)
    assert cards.mask_text("4111:1111:1111:1111")[1] == 1
    assert cards.mask_text("4111,1111,1111,1111")[1] == 1
    # A comma or semicolon and a space end a number: a list of phone numbers is not one long number.
    for text in ("0912 345 678, 0987 654 321, 0903 123 456", "+84 912 345 678; +84 987 654 321"):
        assert cards.mask_text(text) == (text, 0)
    # Four separators in a row end a number: these are two numbers of eight digits, neither a card.
    assert cards.mask_text("4111 1111 -  1111 1111")[1] == 0


def test_times_and_identifiers_stay_though_punctuation_now_separates_digits() -> None:
    for text in (
        "2026-12-05 21:40:07.830137+00:00",
        "placed 2026-11-29T03:59:12Z, 2026-11-29 03:59:12",
        "0000-00-00 00:00:00",
        "4f744313-3954-4702-99db-90ec0659de20",
        "+84 912 345 678",
        "FS-2026-000123",
        "0000000000000000",  # Luhn-valid, but no card number starts with 0
    ):
        assert cards.mask_text(text) == (text, 0), text


# What else is in the dicts and lists around a card (drawn cheaply: the depth matters, not the variety).
FILLERS = [None, 7, "x", "2026-12-05 21:40:07.830137+00:00", "+84 912 345 678", {"a": [1, 2]}, ["FS-2026-000123"]]
KEYS = ["data", "payment", "notes", "ghi chú", "ｄａｔａ", "x1", "", "items"]


@st.composite
def nested_cards(draw: st.DrawFn) -> tuple[str, object]:
    """A test card number, written in any shape, inside any string, at any depth of dicts and lists (or
    as a key, or as a plain integer)."""
    pan, written = draw(card_shapes.written_cards())
    where = draw(st.sampled_from(["value", "key", "integer"]))
    text = draw(card_shapes.surrounding_text) + written + draw(card_shapes.surrounding_text)
    assume(not card_shapes.makes_a_hex_digest(text))
    value: object = {text: draw(json_values)} if where == "key" else text
    if where == "integer" and written.isascii() and written.isdigit():
        value = int(written)
    for wrap, filler, key in draw(
        st.lists(st.tuples(st.booleans(), st.sampled_from(FILLERS), st.sampled_from(KEYS)), max_size=12)
    ):
        value = [filler, value] if wrap else {"filler": filler, key: value}
    return pan, value


@settings(max_examples=300, deadline=None)
@given(nested_cards())
def test_no_digit_run_of_a_card_survives_anywhere(case: tuple[str, object]) -> None:
    pan, document = case
    cleaned, found = cards.scrub(document)
    assert found.masked >= 1
    leaks = [text for text in card_shapes.strings_in(cleaned) if card_shapes.survives(pan, text)]
    assert leaks == []
    # The consumer's hook on the raw bytes of the same document inside an event.
    body = json.dumps({"specversion": "1.0", "id": "e", "data": document}, ensure_ascii=False).encode()
    scrubbed = json.loads(cards.scrub_body(body))
    assert [text for text in card_shapes.strings_in(scrubbed) if card_shapes.survives(pan, text)] == []


# Card fields as shops and payment forms name them, in every spelling a JSON key gets.
CARD_NAMES = [
    "cvv", "cvv2", "cvv_code", "cvc", "cvc2", "cvn", "csc", "cid", "card_cid", "security_code", "securityCode",
    "verification_value", "card_verification_value", "exp", "exp_month", "exp_year", "expiry", "expiry_date",
    "expiration", "expiration_date", "expirationDate", "card_expiry", "cc_exp", "valid_thru", "validThrough",
    "good_thru", "track1", "track2", "track_data", "pan", "PAN", "pan_number", "card_number", "cardNumber",
    "creditCard", "cc_number", "ccnum",
]  # fmt: skip
# Names that merely look alike, and must keep their values.
LOOKALIKES = [
    "expected", "expected_total", "pancake", "company", "company_name", "span", "japan", "cidr", "decided",
    "expires_at", "expired", "export", "expand", "tracking_number", "cc", "bcc", "verification_code", "valid",
    "validated_at", "security_level", "discarded", "panel", "expense", "incident_id", "acid",
]  # fmt: skip


def spellings(name: str) -> list[str]:
    words = [w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+", name)]
    camel = words[0] + "".join(w.title() for w in words[1:])
    return [name, "_".join(words), "-".join(words), " ".join(words), camel, "_".join(words).upper(), camel.title()]


def test_card_fields_are_found_by_pattern_in_every_spelling() -> None:
    for name in CARD_NAMES:
        for spelling in [*spellings(name), unicodedata.normalize("NFKC", name).translate(FULL_WIDTH)]:
            assert cards.is_card_field(spelling), spelling
            cleaned, found = cards.scrub({spelling: "123", "order_id": "A-1"})
            assert cleaned == {"order_id": "A-1"} and len(found.fields) == 1
    for name in LOOKALIKES:
        for spelling in spellings(name):
            assert not cards.is_card_field(spelling), spelling
            assert cards.scrub({spelling: "12/27"}) == ({spelling: "12/27"}, cards.Findings())


FULL_WIDTH = {code: code - 0x21 + 0xFF01 for code in range(0x21, 0x7F)}


def project_field_names() -> set[str]:
    """Every field of every payload model this project declares: events (published and consumed), the
    contact form, the shared notification request, the page view."""
    names: set[str] = set()

    def walk(tree: dict[str, object]) -> None:
        for name, subtree in tree.items():
            names.add(name)
            if isinstance(subtree, dict):
                walk(subtree)

    for tree in TRAIL_FIELDS.values():
        walk(tree)
    for module in (intake, envelope, notifications):
        for model in vars(module).values():
            if isinstance(model, type) and issubclass(model, BaseModel) and model is not BaseModel:
                walk(allowlist.fields_of(model))
    return names


def test_none_of_the_projects_own_field_names_is_taken_for_card_data() -> None:
    names = project_field_names()
    assert {"order_id", "placed_at", "purchaser", "line1", "request_event_id", "marketing_consent"} <= names
    # `card_data_removed` names card data but holds a flag: the scrubber keeps it (see the test above).
    assert sorted(n for n in names if cards.is_card_field(n)) == ["card_data_removed"]


card_named_documents = st.dictionaries(
    st.sampled_from(CARD_NAMES + LOOKALIKES).flatmap(lambda n: st.sampled_from(spellings(n))),
    st.none() | st.booleans() | st.text(max_size=6),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(nested_cards().map(lambda case: case[1]) | card_named_documents)
def test_the_fast_path_skips_no_card_in_the_new_shapes(document: object) -> None:
    walked, found = cards.Findings(), cards.Findings()
    assert cards.scrub(document, findings=found)[0] == cards._scrub(document, "", walked, 0)
    assert (found.fields, found.masked) == (walked.fields, walked.masked)


unicode_digit_text = st.text(
    alphabet=st.sampled_from([*"0123456789", *"０１２３４５６７８９٤٥", *card_shapes.SEPARATORS, ":", "a", "é"]),
    max_size=60,
)


@settings(max_examples=500, deadline=None)
@given(unicode_digit_text)
def test_the_precheck_of_mask_text_holds_for_unicode_digits_and_separators(text: str) -> None:
    assert cards.mask_text(text) == _mask_text_without_the_precheck(text)


def test_headers_are_scrubbed_at_any_depth_names_too() -> None:
    """A delivery's headers go on with it into the retry and dead-letter queues: their names, and the values of
    the tables and arrays they nest, are scrubbed like the body."""
    from types import SimpleNamespace

    from spm_common.consumer import _delivery

    card = "4111\u20091111\n1111 - 1111"
    headers = {
        "x-delivery-count": 0,
        "x-card": card,
        f"x-{card}": 1,
        "x-meta": {"ref": card, "refs": [card, {"deeper": card.encode()}], "number": 4111111111111111},
        "x-death": [{"count": 1, "queue": "spm.events.orders.retry", "routing-keys": ["order.placed"]}],
    }
    raw = SimpleNamespace(
        body=b"{}", headers=headers, content_type="application/json", message_id="m", correlation_id="c", type="t"
    )
    scrubbed = _delivery(raw, cards.scrub_body).headers  # raw: the fields _delivery reads
    assert not card_shapes.survives("4111111111111111", card_shapes.unescaped(repr(scrubbed)))
    assert scrubbed["x-delivery-count"] == 0 and scrubbed["x-death"] == headers["x-death"]
