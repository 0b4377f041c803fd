"""The rules without I/O: who may receive what, tokens, what an SMTP failure means, backoff."""

from __future__ import annotations

import aiosmtplib
import pytest
from email_validator import EmailNotValidError, validate_email
from notifier.deliveries import _address_problem, _outcome, backoff_seconds
from notifier.policy import TEMPLATES, Publishers, RecipientFacts, check_request, refusal, requester_refusal
from notifier.smtp import classify
from notifier.tokens import InvalidToken, make_token, read_token, recipient_ref
from notifier_helpers import SAMPLE_CONTEXTS
from spm_common.envelope import CloudEvent, new_event
from spm_common.notifications import NOTIFICATION_FAILED, NOTIFICATION_SENT, NotificationOutcome

KEY = b"test-key"


def test_contact_only_address_gets_answers_and_nothing_else() -> None:
    stranger = RecipientFacts()
    assert refusal("answer-message", stranger) is None
    assert refusal("fulfil-order", stranger) is None
    for purpose in ("product-news", "free-upgrade", "license-recovery"):
        assert "purchasers only" in (refusal(purpose, stranger) or "")


def test_an_operators_test_send_reaches_a_non_purchaser_but_not_an_unsubscribed_one() -> None:
    stranger = RecipientFacts()
    assert refusal("free-upgrade", stranger, "test:release:SPM-DICT-5.2.0") is None
    assert refusal("product-news", stranger, "test:announcement:2026-12") is None
    assert "purchasers only" in (refusal("free-upgrade", stranger, "release:SPM-DICT-5.2.0") or "")
    left = RecipientFacts(unsubscribed=frozenset({"upgrades"}))
    assert "unsubscribed" in (refusal("free-upgrade", left, "test:release:SPM-DICT-5.2.0") or "")


def test_unsubscribe_and_bounce_stop_marketing_only() -> None:
    buyer = RecipientFacts(purchaser=True, suppressed=True, unsubscribed=frozenset({"upgrades", "news"}))
    assert "unsubscribed from upgrades" in (refusal("free-upgrade", buyer) or "")
    assert "unsubscribed from news" in (refusal("product-news", buyer) or "")
    for purpose in ("license-recovery", "fulfil-order", "answer-message"):
        assert refusal(purpose, buyer) is None
    assert "hard bounce" in (refusal("product-news", RecipientFacts(purchaser=True, suppressed=True)) or "")
    news_only = RecipientFacts(purchaser=True, unsubscribed=frozenset({"news"}))
    assert refusal("free-upgrade", news_only) is None


def test_requests_must_match_template_purpose_and_context() -> None:
    assert check_request("product-news", "product-news", SAMPLE_CONTEXTS["product-news"]) is None
    assert "not for purpose" in (check_request("product-news", "answer-message", SAMPLE_CONTEXTS["product-news"]) or "")
    assert "unknown template" in (check_request("newsletter", "product-news", {}) or "")
    problem = check_request("order-confirmation", "fulfil-order", {"order_id": "x@example.com"})
    assert problem is not None and "items" in problem and "x@example.com" not in problem
    bad_link = dict(SAMPLE_CONTEXTS["product-news"], url="javascript:alert(1)")
    assert "url" in (check_request("product-news", "product-news", bad_link) or "")


def test_token_round_trip() -> None:
    token = make_token("An.Nguyen@example.vn", "upgrades", KEY)
    assert read_token(token, KEY) == ("An.Nguyen@example.vn", "upgrades")
    assert "@" not in token and "An.Nguyen" not in token


def test_token_cannot_be_moved_to_another_address_or_category_or_forged() -> None:
    import base64

    token = make_token("an@example.vn", "upgrades", KEY)
    head, _, mac = token.split(".")
    other = base64.urlsafe_b64encode(b"victim@example.vn").rstrip(b"=").decode()
    for forged in (
        f"{head}.{other}.{mac}",
        f"1n.{token.split('.')[1]}.{mac}",
        make_token("an@example.vn", "upgrades", b"another-key"),
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        "garbage",
        "1u.%%%.%%%",
    ):
        with pytest.raises(InvalidToken):
            read_token(forged, KEY)


def test_recipient_ref_ignores_case() -> None:
    assert recipient_ref("An@Example.vn ", KEY) == recipient_ref("an@example.vn", KEY)


@pytest.mark.parametrize(
    ("exc", "verdict"),
    [
        (
            aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no such user x@example.com", "x")]),
            "bounced",
        ),
        (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(451, "greylisted", "x")]), "retry"),
        (aiosmtplib.SMTPDataError(554, "content rejected"), "failed"),
        (aiosmtplib.SMTPDataError(452, "insufficient storage"), "retry"),
        (aiosmtplib.SMTPConnectError("refused"), "retry"),
        (aiosmtplib.SMTPServerDisconnected("gone"), "retry"),
        (aiosmtplib.SMTPTimeoutError("slow"), "retry"),
        (ConnectionRefusedError(111, "refused"), "retry"),
        (aiosmtplib.SMTPAuthenticationError(535, "bad credentials"), "retry"),
    ],
)
def test_smtp_failures_are_classified(exc: BaseException, verdict: str) -> None:
    result = classify(exc)
    assert result.verdict == verdict
    assert "x@example.com" not in (result.error or "")


def test_bounce_keeps_the_servers_reply() -> None:
    refused = aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "5.1.1 no such user", "x")])
    assert classify(refused).error == "550 5.1.1 no such user"


def test_backoff_grows_with_jitter_and_a_ceiling() -> None:
    samples = [backoff_seconds(n, 10, 300) for n in (1, 2, 3, 4) for _ in range(50)]
    assert all(5 <= s <= 10 for s in samples[:50])
    assert all(20 <= s <= 40 for s in samples[100:150])
    assert len(set(samples[:50])) > 1
    assert all(150 <= backoff_seconds(30, 10, 300) <= 300 for _ in range(20))


@pytest.mark.parametrize(
    "address",
    [
        "buyer@example.vn",
        "Jane.Doe+orders@Mail.Example.com",
        "a_b%c-d@sub-domain.example.org",
        "x" * 65 + "@example.com",
        "user@xn--bcher-kva.example",
        "user@example.onion",
        '"quoted local"@example.com',
        "nguyễn@example.vn",
        "no-at-sign.example.com",
        "two..dots@example.com",
        ".leading@example.com",
        "user@localhost",
        "user@example.test",
        "user@-bad-.example.com",
        "user@example",
        "user@exa_mple.com",
        "user@example.com\r\nBcc: other@example.com",
    ],
)
def test_address_check_agrees_with_email_validator(address: str) -> None:
    # Plain addresses are checked by a pattern, the rest by email-validator: the verdict is the same.
    try:
        validate_email(address, check_deliverability=False, allow_smtputf8=False, allow_display_name=False)
        expected = None
    except EmailNotValidError:
        expected = "recipient address is not a deliverable e-mail address"
    assert _address_problem(address) == expected


@pytest.mark.parametrize("error", [None, "550 5.1.1 no such user"])
@pytest.mark.parametrize("reference", [None, "order:7"])
def test_outcome_events_are_what_new_event_makes_of_a_notification_outcome(
    error: str | None, reference: str | None
) -> None:
    row = _outcome("urn:spm:notifier", "request-1", reference, "fulfil-order", "order-confirmation", error, "corr-1")
    stored = CloudEvent.parse(row.body)
    made = new_event(
        NOTIFICATION_FAILED if error else NOTIFICATION_SENT,
        "urn:spm:notifier",
        NotificationOutcome(
            request_event_id="request-1",
            reference=reference,
            purpose="fulfil-order",
            template="order-confirmation",
            status="failed" if error else "sent",
            error=error,
        ),
        purpose="fulfil-order",
        correlation_id="corr-1",
    )
    assert (row.id, row.type) == (stored.id, made.type)
    assert row.body == made.model_copy(update={"id": row.id, "time": stored.time}).to_json()


# Who may ask for which mail, as the issue and CONTRACT sections 6 and 7 have it: the contact service answers
# messages and mails each privacy request's confirmation link, acknowledgement and answers; the orders service
# fulfils, recovers keys, announces upgrades and news. No one else asks for anything.
ALLOWED = {
    "urn:spm:contact": {"answer-message", "privacy-request"},
    "urn:spm:orders": {"fulfil-order", "license-recovery", "free-upgrade", "product-news"},
}
ASKERS = (
    *ALLOWED,
    "urn:spm:notifier",
    "urn:spm:audit",
    "urn:spm:console",
    "urn:spm:shop",
    "https://shop.example/orders",
    "urn:spm:releases",
    "urn:spm:logs",
    "urn:spm:contact ",
    "URN:SPM:ORDERS",
    "",
)


@pytest.mark.parametrize("source", ASKERS)
def test_only_the_allowed_source_and_purpose_pairs_are_taken(source: str) -> None:
    purposes = {spec.purpose for spec in TEMPLATES.values()}
    assert purposes == set().union(*ALLOWED.values()), "a purpose no one may ask for, or one unlisted here"
    for purpose in (*sorted(purposes), "other"):
        refused = requester_refusal(source, purpose)
        if purpose in ALLOWED.get(source, set()):
            assert refused is None, (source, purpose)
        else:
            assert refused == f"source {source!r} may not request {purpose!r} mail", (source, purpose)


@pytest.mark.parametrize(
    ("login", "production", "source", "publisher", "taken"),
    [
        # Each service's own user, as spm-admin bootstrap makes them (and under a test prefix).
        ("spm_notifier", True, "urn:spm:orders", "spm_orders", True),
        ("spm_notifier", True, "urn:spm:contact", "spm_contact", True),
        ("t1_ab_notifier", False, "urn:spm:orders", "t1_ab_orders", True),
        # Another service's user writing the source, or no publisher the broker vouches for.
        ("spm_notifier", True, "urn:spm:orders", "spm_contact", False),
        ("spm_notifier", False, "urn:spm:orders", "spm_contact", False),
        ("spm_notifier", True, "urn:spm:orders", None, False),
        ("spm_notifier", True, "urn:spm:orders", "t1_ab_orders", False),
        ("spm_notifier", True, "urn:spm:orders", "spm_notifier", False),
        ("spm_notifier", True, "https://shop.example", "spm_shop", False),
        # A shared login (development, the tests): only in development, and only that login.
        ("guest", False, "urn:spm:orders", "guest", True),
        ("guest", False, "urn:spm:orders", None, False),
        ("guest", False, "urn:spm:orders", "spm_contact", False),
        ("guest", True, "urn:spm:orders", "guest", False),
        ("spm", True, "urn:spm:orders", "spm", False),
    ],
)
def test_a_request_is_believed_only_from_its_sources_own_rabbitmq_user(
    login: str, production: bool, source: str, publisher: str | None, taken: bool
) -> None:
    reason = Publishers(login, production=production).refusal(source, publisher)
    assert (reason is None) == taken
    if reason is not None:
        assert repr(source) in reason
        assert publisher is None or repr(publisher) in reason
