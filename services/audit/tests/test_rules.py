"""Unit tests of the audit service's rules: pseudonymisation, hashing, paths, referrers, bots, addresses."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import UTC, date, datetime

import orjson
import pytest
import rfc8785
from audit import pageviews, signing, trail
from audit.settings import DEVELOPMENT_CHECKPOINT_KEY, Settings
from hypothesis import given
from hypothesis import strategies as st
from spm_common.envelope import CloudEvent

KEY = b"k" * 32
ORDER = {
    "order_id": "FS-2026-000123",
    "currency": "USD",
    "total": "49.00",
    "purchaser": {
        "name": "Nguyễn Văn Thử",
        "email": "An.Thu@Example.VN",
        "phone": "+84 912 345 678",
        "address": {"line1": "12 Tràng Tiền", "city": "Hà Nội", "country": "VN"},
    },
    "items": [{"sku": "SPM-DICT-PRO", "product_name": "SPM Dictionary Pro", "quantity": 1}],
    "card_number": "4111 1111 1111 1111",
    "note": "paid with 4242-4242-4242-4242, key 7KQ2M-XW4PD-9TRHC-B3NVA-L6ZEY, from 203.0.113.9 / 2001:db8::7",
}


def test_pseudonymised_payload_keeps_no_personal_data() -> None:
    event = CloudEvent(id="e-1", type="order.placed", source="urn:test", data=ORDER)
    entry = trail.make_entry(event, 1, trail.GENESIS, KEY, datetime.now(UTC))
    text = entry["payload"]
    for secret in (
        "Nguyễn",
        "An.Thu",
        "example.vn",
        "912 345",
        "Tràng",
        "1111 1111",
        "4242-4242",
        "7KQ2M",
        "203.0.113",
    ):
        assert secret not in text
    assert "2001:db8" not in text
    payload = orjson.loads(text)
    assert payload["purchaser"]["email_ref"] == trail.subject_ref("an.thu@example.vn ", KEY)
    assert payload["purchaser"]["name"] == trail.REMOVED
    # Neither field is in order.placed's model: the trail keeps neither (the scrubber would have dropped one
    # and masked the other before; the allow-list holds whatever it misses).
    assert "card_number" not in payload and "note" not in payload
    assert "****-****-****-4242" in trail.scrub_text(ORDER["note"], KEY)
    assert payload["items"][0]["product_name"] == "SPM Dictionary Pro"
    assert payload["order_id"] == "FS-2026-000123"
    assert entry["subject_ref"] == trail.subject_ref("AN.THU@example.vn", KEY)


def test_only_the_fields_the_payload_models_declare_are_kept() -> None:
    data = {
        "order_id": "FS-2026-000124",
        "note": "secret stuff",
        "purchaser": {"email": "a@example.vn", "locale": "vi", "loyalty": {"tier": "gold"}, "address": {"x": 1}},
        "items": [{"sku": "SPM-DICT-PRO", "quantity": 1, "memo": "secret stuff"}, "not an item"],
    }
    kept = trail.declared_fields("order.placed", data)
    assert kept == {
        "order_id": "FS-2026-000124",
        "purchaser": {"email": "a@example.vn", "locale": "vi", "address": {}},
        "items": [{"sku": "SPM-DICT-PRO", "quantity": 1}, "not an item"],
    }
    assert trail.declared_fields("contact.message.received", {"message_id": "m", "body": "secret stuff"}) == {
        "message_id": "m"
    }
    assert trail.declared_fields("no.such.event", {"note": "secret stuff"}) == {}
    assert trail.declared_fields("order.placed", ["secret stuff"]) == {}
    # Each event type any service publishes or consumes has its list, nested models included.
    assert {"order.placed", "order.recorded", "notification.requested", "contact.message.received"} <= set(
        trail.TRAIL_FIELDS
    )
    assert trail.TRAIL_FIELDS["order.placed"]["purchaser"]["address"]["city"] is None


def test_subject_reference_depends_on_the_key() -> None:
    assert trail.subject_ref("a@example.com", KEY) != trail.subject_ref("a@example.com", b"other" * 8)


def test_every_field_is_covered_by_the_hash() -> None:
    event = CloudEvent(id="e-2", type="contact.message.received", source="urn:test", data={"message_id": "m"})
    entry = trail.make_entry(event, 7, "a" * 64, KEY, datetime(2026, 11, 29, 4, tzinfo=UTC))
    assert trail.check_entry(entry, 6, "a" * 64) is None
    for field in trail.FIELDS:
        changed = dict(entry)
        changed[field] = "x" if field != "seq" else 8
        assert trail.check_entry(changed, 6, "a" * 64) is not None, field


def test_canonical_json_is_rfc_8785() -> None:
    assert trail.canonical({"b": 1, "a": [1.0, "é"]}) == '{"a":[1,"é"],"b":1}'.encode()
    assert trail.flat_canonical({"b": "\u2028\x1f", "a": None}) == rfc8785.dumps({"b": "\u2028\x1f", "a": None})


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("https://spmgroup.vn/dict/?utm_source=x#top", "/dict"),
        ("/a//b/./c/../d/", "/a/b/d"),
        ("https://spmgroup.vn", "/"),
        ("/caf%C3%A9", "/café"),
        ("/users/an@example.vn/orders", "/users/[hidden]/orders"),
        ("/" + "x" * 1000, "/" + "x" * 511),
        ("javascript:alert(1)", None),
        ("ftp://example.com/file", None),
    ],
)
def test_paths_are_normalised(url: str, path: str | None) -> None:
    assert pageviews.normalise_path(url) == path


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("/u/alice%2540example.com", "/u/[hidden]"),  # "@" percent-encoded twice
        ("/u/alice%252540example.com/x", "/u/[hidden]/x"),  # and three times
        ("/u/alice%40example.com", "/u/[hidden]"),
        ("/pay/4111111111111111", "/pay/************1111"),
        ("/pay/4111-1111-1111-1111/done", "/pay/****-****-****-1111/done"),
        ("https://spmgroup.vn/pay/4111%25201111%25201111%25201111", "/pay/**** **** **** 1111"),
        ("/activate/7KQ2M-XW4PD-9TRHC-B3NVA-L6ZEY", "/activate/[hidden]"),
        ("/activate/7kq2m-xw4pd-9trhc-b3nva-l6zey", "/activate/[hidden]"),
        ("/blog/word-list-from-home-page", "/blog/word-list-from-home-page"),  # a slug of words stays
        ("/ip/2001:db8::7/ok", "/ip/[hidden]/ok"),
        ("/ip/2001%253Adb8%253A%253A7", "/ip/[hidden]"),
        ("/ip/203.0.113.9", "/ip/[hidden]"),
        ("/docs/v2:intro", "/docs/v2:intro"),
        ("/orders/0f8fad5b-d9cb-469f-a165-70867728950e", "/orders/0f8fad5b-d9cb-469f-a165-70867728950e"),
    ],
)
def test_paths_are_cleaned_of_personal_data_however_encoded(url: str, path: str) -> None:
    assert pageviews.normalise_path(url) == path
    assert pageviews.trail_payload({"url": url})["path"] == path


@given(st.from_regex(r"(?:/[A-Za-z0-9_~-]{1,12}){0,8}/?", fullmatch=True))
def test_a_plain_path_is_what_the_full_normalisation_makes_of_it(path: str) -> None:
    assert pageviews.normalise_path("https://spmgroup.vn" + path) == pageviews.normalise_fully(path)
    assert pageviews.normalise_path(path or "/") == pageviews.normalise_fully(path or "/")


@given(st.one_of(st.from_regex(trail.TIME_PATTERN, fullmatch=True), st.from_regex(r"[^@0-9:-]*", fullmatch=True)))
def test_what_scrub_text_skips_the_patterns_would_leave_alone(text: str) -> None:
    assert trail.scrub_text(text, KEY) == trail.scrub_patterns(text, KEY) == text


def test_referrer_host() -> None:
    assert pageviews.referrer_host("https://www.Google.com/search?q=me", "spmgroup.vn") == "www.google.com"
    assert pageviews.referrer_host("https://spmgroup.vn/dict", "spmgroup.vn") is None
    assert pageviews.referrer_host("http://192.0.2.1/x", None) is None
    assert pageviews.referrer_host("", None) is None


@pytest.mark.parametrize(
    ("agent", "bot"),
    [
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", True),
        ("Mozilla/5.0 (compatible; bingbot/2.0)", True),
        ("curl/8.5.0", True),
        ("python-httpx/0.28.1", True),
        ("", True),
        (None, True),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Safari/604.1", False),
    ],
)
def test_known_bots(agent: str | None, bot: bool) -> None:
    assert pageviews.is_bot(agent) is bot


async def test_salt_of_a_destroyed_day_is_refused() -> None:
    salts = pageviews.Salts(today=lambda: date(2026, 11, 29))
    assert await salts.for_day(None, date(2026, 11, 27)) is None  # type: ignore[arg-type]
    assert await salts.for_day(None, date(2026, 11, 30)) is None  # type: ignore[arg-type]


def test_the_visitor_hash_is_made_of_the_network_not_the_address() -> None:
    # Trying every IPv4 address against a day's hashes would give back at most a /24, of an IPv6 client a /48.
    now = datetime.now(UTC)
    addresses = ("203.0.113.7", "203.0.113.200", "2001:db8:1:2::1", "2001:db8:1:ffff::9", "203.0.114.7")
    views = [pageviews.raw_view("/", "/", None, ipaddress.ip_address(a), "UA", now) for a in addresses]
    assert [v.network for v in views if v] == [
        "203.0.113.0/24",
        "203.0.113.0/24",
        "2001:db8:1::/48",
        "2001:db8:1::/48",
        "203.0.114.0/24",
    ]


def test_visitor_hash_changes_with_the_salt() -> None:
    one = pageviews.visitor_hash(b"a" * 32, "203.0.113.7", "UA")
    assert one == pageviews.visitor_hash(b"a" * 32, "203.0.113.7", "UA")
    assert one != pageviews.visitor_hash(b"b" * 32, "203.0.113.7", "UA")
    assert one != pageviews.visitor_hash(b"a" * 32, "203.0.113.8", "UA")


def test_the_subject_key_and_trusted_proxies_are_read() -> None:
    # Production's refusal of the development-only secret is the shared settings' (spm_common's tests).
    assert Settings(audit_secret="s" * 40).subject_key() == b"s" * 40
    assert Settings(trusted_proxies="10.0.0.0/8, 192.0.2.1").trusted_proxies == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.1/32"),
    ]


def test_the_development_checkpoint_key_is_refused_in_production_and_a_bad_key_anywhere() -> None:
    with pytest.raises(ValueError, match="audit_checkpoint_key"):
        Settings(environment="production", audit_secret="s" * 40)
    for bad in ("not base64!", signing.b64(b"k" * 31), "change-me-audit-checkpoint-key"):
        with pytest.raises(ValueError, match="audit_checkpoint_key"):
            Settings(audit_checkpoint_key=bad)
    # In development the derived development key signs, and anyone can check with its public half.
    assert Settings().checkpoint_signer().public_key == signing.public_key_of(DEVELOPMENT_CHECKPOINT_KEY)


def test_a_checkpoint_signature_holds_only_for_what_was_signed_and_a_trusted_key() -> None:
    signer, stranger = signing.Signer(signing.new_private_key()), signing.Signer(signing.new_private_key())
    signed = signer.sign(42, "a" * 64, "2026-12-05T21:00:00.000000+00:00")
    assert signed.signed_by([signer.public_key])
    assert not signed.signed_by([stranger.public_key])  # a valid signature, by a key not trusted
    for forged in (
        replace(signed, seq=43),
        replace(signed, hash="b" * 64),
        replace(signed, time="2026-12-06T21:00:00.000000+00:00"),
        replace(signed, signature=signing.b64(b"\0" * 64)),
        replace(signed, signature="garbage"),
    ):
        assert not forged.signed_by([signer.public_key])
    # Someone who can write the database can sign with a key of their own, and record that key with it.
    theirs = stranger.sign(42, "a" * 64, signed.time)
    assert theirs.signed_by([stranger.public_key]) and not theirs.signed_by([signer.public_key])
    assert signing.load_file(signing.dump_file([signed], signer.public_key)) == [signed]
    with pytest.raises(ValueError, match="not a checkpoint file"):
        signing.load_file(b'{"checkpoints": []}')


def test_identifiers_are_not_taken_for_card_numbers() -> None:
    # 7443133954470299 is Luhn-valid: an unlucky UUID must stay whole.
    uuid_text = "4f744313-3954-4702-99db-90ec0659de20"
    assert trail.scrub_text(uuid_text, KEY) == uuid_text
    assert trail.scrub_text("a" * 8 + "4111111111111111" + "b" * 8, KEY).endswith("b" * 8)
    assert "1111" in trail.scrub_text("card 4111111111111111", KEY)
    assert "4111111111111111" not in trail.scrub_text("card 4111111111111111", KEY)


@given(
    st.fixed_dictionaries(
        {name: st.one_of(st.none(), st.text(), st.integers(-(2**53) + 1, 2**53 - 1)) for name in trail.FIELDS}
    )
)
def test_the_entry_hash_input_is_rfc_8785(fields: dict[str, object]) -> None:
    assert trail.flat_canonical(fields) == rfc8785.dumps(fields)  # type: ignore[arg-type]


def test_a_privacy_answer_and_its_e_mail_leave_no_personal_data_in_the_trail() -> None:
    personal = '{"orders": [{"name": "Nguyễn Văn Thử", "line1": "12 Tràng Tiền"}]}'
    events = [
        CloudEvent(
            id="e-3",
            type="notification.requested",
            source="urn:spm:contact",
            data={
                "purpose": "privacy-request",
                "recipient": {"email": "an@example.vn"},
                "context": {"answers": []},
                "attachments": [
                    {"filename": "personal-data.json", "content_type": "application/json", "content": personal}
                ],
            },
        ),
        CloudEvent(
            id="e-4",
            type="privacy.request.completed",
            source="urn:spm:orders",
            data={"request_id": "r", "service": "orders", "summary": "1 order", "export": orjson.loads(personal)},
        ),
    ]
    for event in events:
        payload = orjson.loads(trail.make_entry(event, 1, trail.GENESIS, KEY, datetime.now(UTC))["payload"])
        assert "Nguyễn" not in str(payload) and "Tràng" not in str(payload)
    assert (
        orjson.loads(trail.make_entry(events[1], 1, trail.GENESIS, KEY, datetime.now(UTC))["payload"])["summary"]
        == "1 order"
    )
