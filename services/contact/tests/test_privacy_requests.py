"""Privacy requests end to end: the person's request, its confirmation by e-mail, the services' answers, the one
final e-mail, and what the operators see; with the real notifier, broker, database and SMTP server.

The services' answers are published here as the orders, notifier and audit services would publish them (those
services are not running); contact's and the notifier's own may arrive too, and the first answer of each
service counts, so the assertions on exact content are about orders and audit.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import pytest
from contact import privacy
from contact.settings import Settings
from contact_helpers import Contact, eventually, form, new_address, outbox_events, publish, random_ip, started
from notifier.app import create as create_notifier
from notifier.settings import Settings as NotifierSettings
from pydantic import ValidationError
from spm_common.envelope import new_event
from spm_common.privacy import (
    ANSWERING_SERVICES,
    PRIVACY_REQUEST_COMPLETED,
    PRIVACY_REQUEST_CONFIRMED,
    PrivacyRequestCompleted,
)
from spm_common.testing.smtp import Received, SmtpServer
from spm_common.testing.world import World, new_world, running

QUIET_SECONDS = 1.5
# Generous: the machine running the tests may be busy, and each wait ends as soon as its condition holds.
WAIT = 30.0
LINK = re.compile(r"https?://\S+/v1/privacy-requests/confirm\?token=(\S+)")
HTML = {"Accept": "text/html,application/xhtml+xml"}


@pytest.fixture(scope="module")
async def world(smtp: SmtpServer) -> AsyncIterator[World]:
    """A world of this module's own, where only contact and the notifier answer requests for real: the tests
    play the other services, and know which answers are still awaited whatever else the session runs."""
    instance = new_world()
    instance.smtp_port = smtp.port
    await instance.create()
    try:
        yield instance
    finally:
        await instance.destroy()


@pytest.fixture(scope="module")
async def system(world: World) -> AsyncIterator[Contact]:
    async with started(world) as contact, running(create_notifier(world.settings(NotifierSettings))):
        yield contact


def text_of(mail: Received) -> str:
    return str(mail.message.get_body(("plain",)).get_content())


async def request_link(system: Contact, smtp: SmtpServer, kind: str = "access", locale: str = "vi") -> tuple[str, str]:
    """A request for a new address; returns the address and the token of the link e-mailed to it."""
    address = new_address("subject")
    async with system.client() as client:
        response = await client.post("/v1/privacy-requests", json={"email": address, "kind": kind, "locale": locale})
    assert response.status_code == 202
    [mail] = await smtp.wait_to(address, timeout=WAIT)
    match = LINK.search(text_of(mail))
    assert match, "the e-mail holds the confirmation link"
    return address, match.group(1)


async def confirmed(
    system: Contact, smtp: SmtpServer, kind: str = "access", locale: str = "vi"
) -> tuple[str, uuid.UUID]:
    address, token = await request_link(system, smtp, kind, locale)
    async with system.client() as client:
        response = await client.post(f"/v1/privacy-requests/confirm?token={token}", headers=HTML)
    assert response.status_code == 200
    return address, privacy.read_token(token, privacy.token_key(system.settings), datetime.now(UTC))


def answer(request_id: uuid.UUID, service: str, kind: str = "access", **fields: object) -> object:
    payload = PrivacyRequestCompleted(
        request_id=request_id,
        service=service,  # type: ignore[arg-type]
        kind=kind,  # type: ignore[arg-type]
        summary=str(fields.get("summary", f"{service}: 1 record found.")),
        counts=fields.get("counts", {"records": 1}),  # type: ignore[arg-type]
        export=fields.get("export", {"records": [{"service": service}]}) if kind == "access" else None,
        completed_at=datetime.now(UTC),
    )
    return new_event(PRIVACY_REQUEST_COMPLETED, f"urn:spm:{service}", payload)


# --- rules --------------------------------------------------------------------------------------------------


def test_working_days_skip_weekends_and_holidays() -> None:
    friday_noon = datetime(2026, 12, 4, 5, 0, tzinfo=UTC)  # 12:00 in Vietnam
    assert privacy.add_working_days(friday_noon, 2, ()) == datetime(2026, 12, 8, 5, 0, tzinfo=UTC)  # Tuesday
    holiday = (date(2026, 12, 7),)  # that Monday
    assert privacy.add_working_days(friday_noon, 2, holiday) == datetime(2026, 12, 9, 5, 0, tzinfo=UTC)
    # Late on Friday evening UTC is already Saturday in Vietnam: Monday and Tuesday count.
    saturday_early = privacy.add_working_days(datetime(2026, 12, 4, 18, 0, tzinfo=UTC), 2, ())
    assert saturday_early.astimezone(privacy.LOCAL_TIME).date() == date(2026, 12, 8)


def test_a_token_confirms_only_its_own_request_until_it_expires() -> None:
    key, other_key = b"k" * 32, b"o" * 32
    request_id = uuid.uuid4()
    now = datetime.now(UTC)
    token = privacy.make_token(request_id, now + timedelta(hours=1), key)
    assert privacy.read_token(token, key, now) == request_id
    with pytest.raises(privacy.ExpiredToken):
        privacy.read_token(token, key, now + timedelta(hours=2))
    forged = [
        privacy.make_token(request_id, now + timedelta(hours=1), other_key),
        privacy.make_token(request_id, now + timedelta(hours=1), key, purpose="xx1"),
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        "not-a-token",
        "pr1..",
        "1u.abc.def",
    ]
    for bad in forged:
        with pytest.raises(privacy.BadToken):
            privacy.read_token(bad, key, now)


# --- the person's path ----------------------------------------------------------------------------------------


async def test_a_request_is_confirmed_by_e_mail_and_then_goes_to_every_service(
    system: Contact, smtp: SmtpServer, world: World
) -> None:
    address, token = await request_link(system, smtp, "erasure", "vi")
    [mail] = smtp.to(address)
    assert mail.message["Subject"] == "Xác nhận yêu cầu xóa dữ liệu cá nhân của bạn"
    request_id = privacy.read_token(token, privacy.token_key(system.settings), datetime.now(UTC))

    async with system.client() as client:
        page = await client.get(f"/v1/privacy-requests/confirm?token={token}", headers=HTML)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none': no script at all
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "<script" not in page.text and "onclick" not in page.text
        assert '<html lang="vi">' in page.text
        assert "Xác nhận yêu cầu xóa dữ liệu cá nhân" in page.text  # Vietnamese first, the person's language
        assert "Confirm your request to erase your personal data" in page.text  # and English
        assert f'<form method="post" action="?token={token}">' in page.text
        assert address not in page.text

        # Looking at the page (as a mail scanner following the link would) confirms nothing.
        assert all(
            e.data["request_id"] != str(request_id) for e in await outbox_events(world, PRIVACY_REQUEST_CONFIRMED)
        )
        async with system.operator as operator:
            before = (await operator.get(f"/v1/privacy-requests/{request_id}")).json()
        assert before["status"] == "unconfirmed" and before["confirmed_at"] is None

        confirm = await client.post(
            f"/v1/privacy-requests/confirm?token={token}",
            headers={**HTML, "Content-Type": "application/x-www-form-urlencoded"},
            content=b"",
        )
        assert confirm.status_code == 200
        assert "Đã xác nhận" in confirm.text and "Confirmed" in confirm.text

        [event] = [
            e for e in await outbox_events(world, PRIVACY_REQUEST_CONFIRMED) if e.data["request_id"] == str(request_id)
        ]
        assert event.data["kind"] == "erasure" and event.data["email"] == address and event.data["locale"] == "vi"

        # Single use: the same link again changes nothing.
        again = await client.post(f"/v1/privacy-requests/confirm?token={token}")
        assert again.status_code == 409 and again.json() == {"detail": "the confirmation link was used already"}
        assert (await client.get(f"/v1/privacy-requests/confirm?token={token}", headers=HTML)).status_code == 409
    # Still one confirmation. (Contact answers the erasure for its own data too, and that deletes its published
    # events naming the address, this one included: so at most one, and the request confirmed once.)
    confirmations = [
        e for e in await outbox_events(world, PRIVACY_REQUEST_CONFIRMED) if e.data["request_id"] == str(request_id)
    ]
    assert len(confirmations) <= 1
    async with system.operator as operator:
        after = (await operator.get(f"/v1/privacy-requests/{request_id}")).json()
    assert after["confirmed_at"] is not None and after["status"] != "unconfirmed"

    async with system.operator as operator:

        async def acknowledged() -> dict[str, object] | None:
            view = (await operator.get(f"/v1/privacy-requests/{request_id}")).json()
            return view if view["acknowledged_at"] else None

        view = await eventually(acknowledged, timeout=WAIT, what="the confirmation e-mail reported sent")
    assert view["status"] == "in-progress" and view["kind"] == "erasure" and view["email"] == address
    received = datetime.fromisoformat(str(view["received_at"]))
    assert datetime.fromisoformat(str(view["due_at"])) == received + timedelta(days=15)
    assert datetime.fromisoformat(str(view["ack_due_at"])) >= received + timedelta(days=2)
    assert view["waiting_for"] == list(ANSWERING_SERVICES) or set(view["waiting_for"]) <= set(ANSWERING_SERVICES)
    assert view["late"] is False


async def test_the_answer_is_the_same_whether_the_address_is_known_or_not(system: Contact, smtp: SmtpServer) -> None:
    known, unknown = new_address("known"), new_address("unknown")
    async with system.client() as client:
        assert (await client.post("/v1/messages", json=form(email=known))).status_code == 202
        first = await client.post("/v1/privacy-requests", json={"email": known, "kind": "access"})
        second = await client.post("/v1/privacy-requests", json={"email": unknown, "kind": "access"})
        invalid = await client.post("/v1/privacy-requests", json={"email": "not an address", "kind": "access"})
        wrong_kind = await client.post("/v1/privacy-requests", json={"email": unknown, "kind": "delete"})
    assert (first.status_code, first.content) == (second.status_code, second.content)
    assert first.status_code == 202
    assert invalid.status_code == 422 and "not an address" not in invalid.text
    assert wrong_kind.status_code == 422
    # Both get the link (nothing is looked up), in English without a locale or Accept-Language.
    [to_known] = [m for m in await smtp.wait_to(known, count=2, timeout=WAIT) if "confirm" in text_of(m).lower()]
    [to_unknown] = await smtp.wait_to(unknown, timeout=WAIT)
    assert to_known.message["Subject"] == to_unknown.message["Subject"] == "Confirm your request for your personal data"


async def test_requests_are_limited_per_address_and_per_client(system: Contact, smtp: SmtpServer) -> None:
    address = new_address("limited")
    per_address = system.settings.privacy_rate_per_address
    async with system.client() as client:
        for _ in range(per_address):
            # Each from another client: the address's own limit is what stops the next.
            async with system.client(random_ip()) as other:
                assert (
                    await other.post("/v1/privacy-requests", json={"email": address, "kind": "access"})
                ).status_code == 202
        refused = await client.post("/v1/privacy-requests", json={"email": address.upper(), "kind": "erasure"})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    await smtp.wait_to(address, count=per_address, timeout=WAIT)
    await asyncio.sleep(QUIET_SECONDS)
    assert len(smtp.to(address)) == per_address

    ip = random_ip()
    async with system.client(ip) as client:
        statuses = [
            (
                await client.post("/v1/privacy-requests", json={"email": new_address("burst"), "kind": "access"})
            ).status_code
            for _ in range(system.settings.privacy_rate_per_client + 1)
        ]
    assert statuses == [202] * system.settings.privacy_rate_per_client + [429]


async def test_a_bad_link_is_refused_and_changes_nothing(system: Contact, smtp: SmtpServer, world: World) -> None:
    _, token = await request_link(system, smtp)
    request_id = privacy.read_token(token, privacy.token_key(system.settings), datetime.now(UTC))
    key = privacy.token_key(system.settings)
    soon = datetime.now(UTC) + timedelta(hours=1)
    cases = {
        "garbled": ("x" * 30, 400),
        "forged": (token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB"), 400),
        "another kind of token": (privacy.make_token(request_id, soon, key, purpose="pr2"), 400),
        "another key": (privacy.make_token(request_id, soon, b"x" * 32), 400),
        "expired": (privacy.make_token(request_id, datetime.now(UTC) - timedelta(seconds=1), key), 410),
        "unknown request": (privacy.make_token(uuid.uuid4(), soon, key), 404),
    }
    async with system.client() as client:
        for name, (bad, code) in cases.items():
            for method in ("GET", "POST"):
                response = await client.request(method, f"/v1/privacy-requests/confirm?token={bad}")
                assert response.status_code == code, (name, method)
                assert isinstance(response.json()["detail"], str)
            page = await client.post(f"/v1/privacy-requests/confirm?token={bad}", headers=HTML)
            assert page.status_code == code and page.headers["content-type"].startswith("text/html"), name
        missing = await client.get("/v1/privacy-requests/confirm")
        assert missing.status_code == 422
    async with system.operator as operator:
        view = (await operator.get(f"/v1/privacy-requests/{request_id}")).json()
    assert view["status"] == "unconfirmed" and view["confirmed_at"] is None
    assert all(e.data["request_id"] != str(request_id) for e in await outbox_events(world, PRIVACY_REQUEST_CONFIRMED))


# --- the answers and the final e-mail -------------------------------------------------------------------------


async def test_when_every_service_has_answered_one_e_mail_brings_the_personal_data(
    system: Contact, smtp: SmtpServer, world: World
) -> None:
    address, request_id = await confirmed(system, smtp, "access", "en")
    orders_export = {"orders": [{"order_id": "FS-2026-000123", "name": "Test Person", "total": "49.00"}]}
    audit_export = {"entries": 2}
    answers = {
        "orders": answer(request_id, "orders", export=orders_export, counts={"orders": 1}, summary="1 order found."),
        "audit": answer(request_id, "audit", export=audit_export, counts={"entries": 2}),
        "notifier": answer(request_id, "notifier"),
        "contact": answer(request_id, "contact"),
    }
    # Three answer, one of them twice (a redelivery) and once more under a new id (it answered again): no e-mail.
    await publish(world, answers["orders"])  # type: ignore[arg-type]
    await publish(world, answers["orders"])  # type: ignore[arg-type]
    await publish(world, answer(request_id, "orders", export={"orders": []}))  # type: ignore[arg-type]
    await publish(world, answers["audit"])  # type: ignore[arg-type]
    async with system.operator as operator:

        async def two_answered() -> dict[str, object] | None:
            view = (await operator.get(f"/v1/privacy-requests/{request_id}")).json()
            return view if {"orders", "audit"} <= {a["service"] for a in view["answered"]} else None

        view = await eventually(two_answered, timeout=WAIT, what="two answers recorded")
        # The contact and notifier services running in this world answer for real too, so the request may
        # already be complete; either way, what it waits for is what has not answered.
        assert view["status"] in ("in-progress", "completed")
        assert set(view["waiting_for"]) == set(ANSWERING_SERVICES) - {a["service"] for a in view["answered"]}
        assert "export" not in json.dumps(view["answered"])

    await publish(world, answers["notifier"])  # type: ignore[arg-type]
    await publish(world, answers["contact"])  # type: ignore[arg-type]
    mails = await smtp.wait_to(address, count=2, timeout=WAIT)
    await asyncio.sleep(QUIET_SECONDS)
    assert len(smtp.to(address)) == 2
    final = mails[-1].message
    assert final["Subject"] == "Your personal data at SPM Group"
    assert final.get_content_type() == "multipart/mixed"
    [attachment] = list(final.iter_attachments())
    assert attachment.get_filename() == "personal-data.json"
    assert attachment.get_content_type() == "application/json"
    document = json.loads(attachment.get_payload(decode=True))
    assert set(document["services"]) == set(ANSWERING_SERVICES)  # one section per service
    assert document["services"]["orders"]["data"] == orders_export  # the first answer, not the later one
    assert document["services"]["audit"]["data"] == audit_export
    assert document["request_id"] == str(request_id) and document["email"] == address
    body = str(final.get_body(("plain",)).get_content())
    assert "Orders and licenses: 1 order found. (orders: 1)" in body
    assert "personal-data.json" in body

    async with system.operator as operator:

        async def completed() -> dict[str, object] | None:
            view = (await operator.get(f"/v1/privacy-requests/{request_id}")).json()
            return view if view["final_mail"] == "sent" else None

        view = await eventually(completed, timeout=WAIT, what="the final e-mail reported sent")
    assert view["status"] == "completed" and view["email"] is None and view["completed_at"]
    assert view["waiting_for"] == [] and len(view["answered"]) == 4

    # Nothing of the person stays: no address, no export, and (after the sweep) no outbox copy of either.
    runtime = system.app.state.runtime

    async def swept() -> bool:
        await privacy.sweep(runtime.pool)
        conn = await world.admin()
        try:
            copies = await conn.fetchval(
                "SELECT count(*) FROM contact.outbox WHERE position(convert_to($1, 'UTF8') in body) > 0", address
            )
        finally:
            await conn.close()
        return copies == 0

    await eventually(swept, timeout=WAIT, what="the request's published events deleted")
    conn = await world.admin()
    try:
        assert await conn.fetchval("SELECT email FROM contact.privacy_requests WHERE id = $1", request_id) is None
        exports = await conn.fetch("SELECT export FROM contact.privacy_answers WHERE request_id = $1", request_id)
        assert len(exports) == 4 and all(row["export"] is None for row in exports)
    finally:
        await conn.close()


async def test_an_erasure_ends_with_one_e_mail_of_what_was_erased_and_kept(
    system: Contact, smtp: SmtpServer, world: World
) -> None:
    address, request_id = await confirmed(system, smtp, "erasure", "vi")
    kept = "Orders: 1 order anonymised; its amounts and date are kept for 10 years (accounting law)."
    for service in ANSWERING_SERVICES:
        summary = kept if service == "orders" else f"{service}: erased."
        await publish(world, answer(request_id, service, kind="erasure", summary=summary))  # type: ignore[arg-type]
    mails = await smtp.wait_to(address, count=2, timeout=WAIT)
    await asyncio.sleep(QUIET_SECONDS)
    assert len(smtp.to(address)) == 2
    final = mails[-1].message
    assert final["Subject"] == "Dữ liệu cá nhân của bạn tại SPM Group đã được xóa"
    assert list(final.iter_attachments()) == []
    body = str(final.get_body(("plain",)).get_content())
    assert f"Đơn hàng và giấy phép: {kept}" in body


# --- the operators ----------------------------------------------------------------------------------------------


async def test_one_extension_with_a_reason_is_e_mailed_and_moves_the_deadline(
    system: Contact, smtp: SmtpServer
) -> None:
    address, request_id = await confirmed(system, smtp, "access", "en")
    async with system.operator as operator:
        before = (await operator.get(f"/v1/privacy-requests/{request_id}")).json()
        reason = "The order archive is being restored from backup; we need it to answer fully."
        extended = await operator.post(f"/v1/privacy-requests/{request_id}/extension", json={"reason": reason})
        assert extended.status_code == 200
        view = extended.json()
        assert view["extension_reason"] == reason and view["extended_at"]
        due = datetime.fromisoformat(view["due_at"])
        assert due == datetime.fromisoformat(before["due_at"]) + timedelta(days=15)

        again = await operator.post(f"/v1/privacy-requests/{request_id}/extension", json={"reason": "again"})
        assert again.status_code == 409
        assert (
            await operator.post(f"/v1/privacy-requests/{uuid.uuid4()}/extension", json={"reason": "x"})
        ).status_code == 404
        assert (
            await operator.post(f"/v1/privacy-requests/{request_id}/extension", json={"reason": "  "})
        ).status_code == 422
    mails = await smtp.wait_to(address, count=2, timeout=WAIT)
    notice = mails[-1]
    assert notice.message["Subject"] == "Your personal data request will take longer"
    text = text_of(notice)
    assert reason in text and privacy.local_date(due) in text
    await asyncio.sleep(QUIET_SECONDS)
    assert len(smtp.to(address)) == 2


async def test_operators_see_every_request_and_which_are_late(system: Contact, smtp: SmtpServer, world: World) -> None:
    _, slow = await confirmed(system, smtp, "access", "vi")
    _, fresh = await confirmed(system, smtp, "erasure", "en")
    _, token = await request_link(system, smtp)
    unconfirmed = privacy.read_token(token, privacy.token_key(system.settings), datetime.now(UTC))
    await publish(world, answer(slow, "orders"))  # type: ignore[arg-type]
    # Ten of its fifteen days have gone by.
    conn = await world.admin()
    try:
        await conn.execute(
            "UPDATE contact.privacy_requests SET received_at = received_at - interval '10 days',"
            " due_at = due_at - interval '10 days' WHERE id = $1",
            slow,
        )
    finally:
        await conn.close()
    async with system.operator as operator:

        async def late_view() -> dict[str, object] | None:
            view = (await operator.get(f"/v1/privacy-requests/{slow}")).json()
            return view if any(a["service"] == "orders" for a in view["answered"]) else None

        view = await eventually(late_view, timeout=WAIT, what="the orders answer recorded")
        assert view["late"] is True and view["overdue"] is False
        assert "orders" not in view["waiting_for"] and view["waiting_for"]
        assert (await operator.get(f"/v1/privacy-requests/{fresh}")).json()["late"] is False

        in_progress = (await operator.get("/v1/privacy-requests", params={"status": "in-progress"})).json()["items"]
        ids = {item["id"] for item in in_progress}
        assert {str(slow), str(fresh)} <= ids and str(unconfirmed) not in ids
        late = (await operator.get("/v1/privacy-requests", params={"late": "true"})).json()["items"]
        assert str(slow) in {item["id"] for item in late} and str(fresh) not in {item["id"] for item in late}
        everything = (await operator.get("/v1/privacy-requests")).json()["items"]
        assert str(unconfirmed) in {item["id"] for item in everything}
        assert (await operator.get(f"/v1/privacy-requests/{uuid.uuid4()}")).status_code == 404
        assert (await operator.get("/v1/privacy-requests", params={"status": "lost"})).status_code == 422

        metrics = (await operator.get("/metrics")).text
        [gauge] = [line for line in metrics.splitlines() if line.startswith("spm_contact_privacy_requests_late ")]
        assert float(gauge.split()[1]) >= 1
    async with system.client() as anonymous:
        assert (await anonymous.get("/v1/privacy-requests")).status_code == 401
        assert (await anonymous.get(f"/v1/privacy-requests/{slow}")).status_code == 401
        assert (await anonymous.post(f"/v1/privacy-requests/{slow}/extension", json={"reason": "x"})).status_code == 401


def test_holidays_come_from_one_comma_separated_setting() -> None:
    settings = Settings(privacy_holidays="2026-12-07, 2026-12-08")  # type: ignore[arg-type]
    assert settings.holidays == {date(2026, 12, 7), date(2026, 12, 8)}
    friday_noon = datetime(2026, 12, 4, 5, 0, tzinfo=UTC)
    assert privacy.deadlines(friday_noon, settings).ack_due_at == datetime(2026, 12, 10, 5, 0, tzinfo=UTC)
    assert Settings(privacy_holidays="").holidays == frozenset()  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Settings(privacy_holidays="2026-13-01")  # type: ignore[arg-type]


async def test_personal_data_too_large_to_attach_is_offered_another_way(
    system: Contact, smtp: SmtpServer, world: World
) -> None:
    address, request_id = await confirmed(system, smtp, "access", "en")
    big = {"messages": ["x" * 1000] * 5200}  # over the 5 MB an e-mail's attachments may hold, within an event
    for service in ANSWERING_SERVICES:
        await publish(world, answer(request_id, service, export=big if service == "orders" else None))  # type: ignore[arg-type]
    mails = await smtp.wait_to(address, count=2, timeout=WAIT)
    final = mails[-1].message
    assert final["Subject"] == "Your personal data at SPM Group"
    assert list(final.iter_attachments()) == []
    assert "too large to attach" in str(final.get_body(("plain",)).get_content())


async def test_a_request_never_confirmed_is_deleted_once_its_link_expired(
    system: Contact, smtp: SmtpServer, world: World
) -> None:
    address, token = await request_link(system, smtp)
    request_id = privacy.read_token(token, privacy.token_key(system.settings), datetime.now(UTC))
    conn = await world.admin()
    try:
        await conn.execute(
            "UPDATE contact.privacy_requests SET token_expires_at = now() - interval '1 second' WHERE id = $1",
            request_id,
        )

        async def gone() -> bool:
            await privacy.sweep(system.app.state.runtime.pool)
            copies = await conn.fetchval(
                "SELECT count(*) FROM contact.outbox WHERE position(convert_to($1, 'UTF8') in body) > 0", address
            )
            return copies == 0

        await eventually(gone, timeout=WAIT, what="the expired request and its e-mail's event deleted")
        assert await conn.fetchval("SELECT count(*) FROM contact.privacy_requests WHERE id = $1", request_id) == 0
    finally:
        await conn.close()
    async with system.client() as client:
        # (Its token still runs, only the table's expiry was moved: the request is simply gone.)
        assert (await client.post(f"/v1/privacy-requests/confirm?token={token}")).status_code == 404
