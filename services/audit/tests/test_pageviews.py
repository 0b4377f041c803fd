"""Page views and trends against the real Postgres and RabbitMQ: from the website (HTTP) and the log shipper
(events), stored without any address, counted per day, and nothing personal anywhere in the audit schema."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from audit import pageviews
from audit.app import create
from prometheus_client import REGISTRY
from spm_common.redaction import EMAIL_RE, IPV4_RE

from .conftest import audit_settings


async def wait_for_views(admin: asyncpg.Connection, pattern: str, count: int, timeout: float = 20) -> list[Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = await admin.fetch("SELECT * FROM audit.pageviews WHERE path LIKE $1 ORDER BY id", pattern)
        if len(rows) >= count:
            return rows
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{len(rows)} of {count} page views")
        await asyncio.sleep(0.05)


async def test_page_views_from_the_website(audit: httpx.AsyncClient, admin: asyncpg.Connection, kit: Any) -> None:
    tag = uuid.uuid4().hex[:8]

    async def view(
        url: str, address: str, agent: str = kit.browser, referrer: str | None = None, beacon: bool = False
    ) -> httpx.Response:
        # navigator.sendBeacon can send a string only as text/plain: the body is JSON all the same.
        content_type = "text/plain;charset=UTF-8" if beacon else "application/json"
        return await audit.post(
            "/v1/pageviews",
            content=orjson.dumps({"url": url, "referrer": referrer}),
            headers={"User-Agent": agent, "X-Forwarded-For": f"192.0.2.66, {address}", "Content-Type": content_type},
        )

    responses = [
        await view(
            f"https://spmgroup.vn/{tag}/dict/?q=an%40example.vn#top",
            "203.0.113.50",
            referrer="https://www.google.com/search?q=me",
        ),
        await view(f"https://spmgroup.vn/{tag}/buy", "203.0.113.50", referrer=f"https://spmgroup.vn/{tag}/dict"),
        await view(f"/{tag}/dict", "2001:db8::51", beacon=True),
        await view(f"/{tag}/dict", "203.0.113.52", agent="Mozilla/5.0 (compatible; Googlebot/2.1)"),
    ]
    assert [r.status_code for r in responses] == [202, 202, 202, 202]
    assert (await audit.post("/v1/pageviews", json={"url": "javascript:alert(1)"})).status_code == 422
    assert (await audit.post("/v1/pageviews", json={})).status_code == 422

    rows = await wait_for_views(admin, f"/{tag}/%", 3)
    assert [(r["path"], r["referrer_host"]) for r in rows] == [
        (f"/{tag}/dict", "www.google.com"),
        (f"/{tag}/buy", None),
        (f"/{tag}/dict", None),
    ]
    assert rows[0]["visitor_hash"] == rows[1]["visitor_hash"] != rows[2]["visitor_hash"]
    assert all(datetime.now(UTC) - r["viewed_at"] < timedelta(minutes=1) for r in rows)


async def test_addresses_of_one_network_are_one_visitor(
    audit: httpx.AsyncClient, admin: asyncpg.Connection, kit: Any
) -> None:
    """The hash covers the client's /24 (IPv6: /48), so it cannot be turned back into an address."""
    tag = uuid.uuid4().hex[:8]
    for address in ("198.51.100.10", "198.51.100.250", "198.51.101.10", "2001:db8:5:1::1", "2001:db8:5:2::2"):
        response = await audit.post(
            "/v1/pageviews",
            json={"url": f"/{tag}/p"},
            headers={"User-Agent": kit.browser, "X-Forwarded-For": address},
        )
        assert response.status_code == 202
    hashes = [r["visitor_hash"] for r in await wait_for_views(admin, f"/{tag}/%", 5)]
    assert hashes[0] == hashes[1] != hashes[2] != hashes[3] == hashes[4]


async def test_without_a_trusted_proxy_the_peer_is_the_visitor(admin: asyncpg.Connection, kit: Any, world: Any) -> None:
    """A peer that is not a trusted proxy (SPM_TRUSTED_PROXIES empty) may write any X-Forwarded-For: it is the
    client's own claim, so the peer is hashed; the session's audit trusts its test client's 127.0.0.1, and
    there the forwarded address counts (the test above)."""
    tag = uuid.uuid4().hex[:8]
    settings = audit_settings(world, exchange=f"{world.exchange}.{uuid.uuid4().hex[:6]}", trusted_proxies=[])
    app = create(settings)
    async with app.router.lifespan_context(app):
        for peer, forwarded_for in [("192.0.2.10", "198.51.100.10"), ("192.0.2.11", "198.51.101.10")] * 2:
            transport = httpx.ASGITransport(app=app, client=(peer, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                response = await client.post(
                    "/v1/pageviews",
                    json={"url": f"/{tag}/p"},
                    headers={"User-Agent": kit.browser, "X-Forwarded-For": forwarded_for},
                )
            assert response.status_code == 202
        hashes = [r["visitor_hash"] for r in await wait_for_views(admin, f"/{tag}/%", 4)]
    # Both peers are in 192.0.2.0/24: one visitor, though the forwarded addresses are two networks apart.
    assert len(set(hashes)) == 1


async def test_page_view_events_from_the_log_shipper(
    audit: httpx.AsyncClient, admin: asyncpg.Connection, kit: Any
) -> None:
    tag = uuid.uuid4().hex[:8]
    yesterday = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    events = [
        kit.event(
            "site.page.viewed",
            {
                "url": f"https://spmgroup.vn/{tag}/home?session=abc",
                "referrer": "https://news.example.com/a?b",
                "client_address": "198.51.100.23",
                "user_agent": kit.browser,
                "viewed_at": yesterday,
            },
        ),
        kit.event(
            "site.page.viewed",
            {"url": f"/{tag}/dict", "client_address": "198.51.100.23", "user_agent": kit.browser},
        ),
        kit.event(
            "site.page.viewed", {"url": f"/{tag}/bot", "client_address": "198.51.100.24", "user_agent": "curl/8"}
        ),
        kit.event("site.page.viewed", {"url": f"/{tag}/broken", "user_agent": kit.browser}),
    ]
    invalid = {"channel": "event", "outcome": "invalid"}
    invalid_before = REGISTRY.get_sample_value("spm_audit_page_views_total", invalid) or 0.0
    await kit.publish(events)
    # The broken one (no address) does not validate: it is in the trail all the same, counted as invalid, and
    # not dead-lettered (a dead-letter queue would keep what the audit does not keep).
    entries = await kit.wait_for_entries(admin, [e["id"] for e in events])
    assert REGISTRY.get_sample_value("spm_audit_page_views_total", invalid) == invalid_before + 1
    rows = await wait_for_views(admin, f"/{tag}/%", 2)
    await asyncio.sleep(0.2)
    rows = await admin.fetch("SELECT * FROM audit.pageviews WHERE path LIKE $1 ORDER BY viewed_at", f"/{tag}/%")
    assert [(r["path"], r["referrer_host"]) for r in rows] == [
        (f"/{tag}/home", "news.example.com"),
        (f"/{tag}/dict", None),
    ]
    assert rows[0]["viewed_at"].date() == (datetime.now(UTC) - timedelta(days=1)).date()
    # Yesterday's and today's salts differ, so the same visitor is not followed across days.
    assert rows[0]["visitor_hash"] != rows[1]["visitor_hash"]

    # Every event is in the trail, reduced to what the page-view table keeps: no address, no user agent.
    payloads = [orjson.loads(e["payload"]) for e in entries]
    assert payloads[0] == {"path": f"/{tag}/home", "referrer_host": "news.example.com", "counted": True}
    assert payloads[2]["counted"] is False
    for entry in entries:
        assert "198.51.100" not in entry["payload"] and "Mozilla" not in entry["payload"]


async def test_salts_are_daily_and_destroyed_after_two_days(admin: asyncpg.Connection) -> None:
    today = datetime.now(UTC).date()
    async with admin.transaction():
        await admin.execute("SET LOCAL search_path TO audit")
        for age in (5, 2):
            await admin.execute(
                "INSERT INTO visitor_salts (day, salt) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                today - timedelta(days=age),
                b"old-salt",
            )
        salts = pageviews.Salts()
        one, two = await salts.for_day(admin, today), await salts.for_day(admin, today - timedelta(days=1))
        assert one and two and one != two and len(one) == 32
        assert await pageviews.Salts().for_day(admin, today) == one  # another replica gets the same salt
        assert await salts.rotate(admin) >= 2
        days = {r["day"] for r in await admin.fetch("SELECT day FROM visitor_salts")}
        assert days == {today, today - timedelta(days=1)}
        assert await salts.for_day(admin, today - timedelta(days=2)) is None


def crafted(first_day: date) -> list[tuple[Any, ...]]:
    """Day 1: six visitors go / -> /dict -> /buy (from a search engine); A comes back 50 minutes later (a new
    visit); G alone goes /rare -> /dict (from a small site). Day 2: five new hashes view /, one of them goes
    on to /dict 20 minutes later (the same visit). Day 3: one view, outside the trends asked for."""
    d1 = datetime.combine(first_day, time(10), UTC)
    d2 = d1 + timedelta(days=1, hours=-1)
    tag = first_day.isoformat().encode()
    rows: list[tuple[Any, ...]] = []

    def visitor(name: str) -> bytes:
        return (name.encode() + tag).ljust(16, b"\0")[:16]

    for name in "ABCDEF":
        rows += [
            (d1, "/", "search.example", visitor(name)),
            (d1 + timedelta(minutes=5), "/dict", None, visitor(name)),
            (d1 + timedelta(minutes=10), "/buy", None, visitor(name)),
        ]
    rows.append((d1 + timedelta(minutes=60), "/", None, visitor("A")))
    rows += [(d1, "/rare", "tiny.example", visitor("G")), (d1 + timedelta(minutes=1), "/dict", None, visitor("G"))]
    for name in ("A2", "B2", "C2", "D2", "E2"):
        rows.append((d2, "/", None, visitor(name)))
    rows.append((d2 + timedelta(minutes=20), "/dict", None, visitor("A2")))
    rows.append((datetime.combine(first_day + timedelta(days=2), time(), UTC), "/outside", None, visitor("Z")))
    return rows


async def test_trends_on_a_crafted_dataset(audit: httpx.AsyncClient, admin: asyncpg.Connection, kit: Any) -> None:
    rows = crafted(date(2020, 3, 1))
    await admin.copy_records_to_table(
        "pageviews", schema_name="audit", records=rows, columns=["viewed_at", "path", "referrer_host", "visitor_hash"]
    )

    response = await audit.get("/v1/trends", params={"from": "2020-03-01", "to": "2020-03-02"}, headers=kit.operator)
    assert response.status_code == 200
    got = response.json()
    assert got["days"] == [
        {"day": "2020-03-01", "views": 21, "visitors": 7},
        {"day": "2020-03-02", "views": 6, "visitors": 5},
    ]
    assert got["views"] == 27
    assert got["top_pages"] == [
        {"path": "/", "views": 12, "visitors": 11},
        {"path": "/dict", "views": 8, "visitors": 8},
        {"path": "/buy", "views": 6, "visitors": 6},
        {"path": "other", "views": 1, "visitors": 1},
    ]
    assert got["top_referrers"] == [
        {"host": "search.example", "views": 6, "visitors": 6},
        {"host": "other", "views": 1, "visitors": 1},
    ]
    assert got["entry_pages"] == [
        {"path": "/", "visits": 12, "visitors": 11},
        {"path": "other", "visits": 1, "visitors": 1},
    ]
    assert got["exit_pages"] == [
        {"path": "/buy", "visits": 6, "visitors": 6},
        {"path": "/", "visits": 5, "visitors": 5},
        {"path": "other", "visits": 2, "visitors": 2},
    ]
    assert got["transitions"] == [
        {"from": "/", "to": "/dict", "moves": 7, "visitors": 7},
        {"from": "/dict", "to": "/buy", "moves": 6, "visitors": 6},
        {"from": "other", "to": "other", "moves": 1, "visitors": 1},
    ]

    limited = await audit.get(
        "/v1/trends", params={"from": "2020-03-01", "to": "2020-03-02", "limit": 1}, headers=kit.operator
    )
    assert [p["path"] for p in limited.json()["top_pages"]] == ["/", "other"]
    for bad, name in (
        ({"from": "2020-03-02", "to": "2020-03-01"}, "from"),
        ({"from": "2000-01-01", "to": "2020-03-01"}, "from"),
        ({"from": "0001-01-01", "to": "2020-03-01"}, "from"),  # asyncpg's -infinity: a series without end
        ({"to": "0001-01-05"}, "to"),
        ({"from": "2020-03-01", "to": "9999-12-31"}, "to"),
    ):
        refused = await audit.get("/v1/trends", params=bad, headers=kit.operator)
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["query", name]  # the documented shape of a 422
    # The trail's filters take the same days (and times within them), and refuse the rest the same way.
    for edge in ({"from": "1970-01-01", "to": "1970-01-05"}, {"from": "9999-12-30", "to": "9999-12-30"}):
        assert (await audit.get("/v1/audit/events", params=edge, headers=kit.operator)).status_code == 200
    for edge in ({"from": "0001-01-01"}, {"to": "9999-12-31"}):
        refused = await audit.get("/v1/audit/events", params=edge, headers=kit.operator)
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["query", *edge]
    assert (await audit.get("/v1/trends")).status_code == 401


async def test_a_closed_day_keeps_only_its_aggregates_and_the_same_trends(
    audit: httpx.AsyncClient, admin: asyncpg.Connection, kit: Any
) -> None:
    """Once its salt is destroyed, a day's views are replaced by their aggregates: no visitor hash is left to
    link a visitor's views, and every trend, unique visitors per day first, reads the same as before."""
    today = datetime.now(UTC).date()
    rows = crafted(date(2021, 6, 1))
    still_open = [(datetime.now(UTC) - timedelta(minutes=1), "/still-open", None, b"o" * 16)]
    columns = ["viewed_at", "path", "referrer_host", "visitor_hash"]
    await admin.copy_records_to_table("pageviews", schema_name="audit", records=rows + still_open, columns=columns)
    params = {"from": "2021-06-01", "to": "2021-06-02"}

    async def trends() -> dict[str, Any]:
        response = await audit.get("/v1/trends", params=params, headers=kit.operator)
        assert response.status_code == 200
        return dict(response.json())

    async def close() -> int:
        async with admin.transaction():
            await admin.execute("SET LOCAL search_path TO audit")
            return await pageviews.close_days(admin, today)

    before = await trends()
    assert before["days"] == [
        {"day": "2021-06-01", "views": 21, "visitors": 7},
        {"day": "2021-06-02", "views": 6, "visitors": 5},
    ]
    assert await close() >= len(rows)
    oldest_open = datetime.combine(today - timedelta(days=1), time(), UTC)
    assert await admin.fetchval("SELECT count(*) FROM audit.pageviews WHERE viewed_at < $1", oldest_open) == 0
    assert await admin.fetchval("SELECT count(*) FROM audit.pageviews WHERE path = '/still-open'") == 1
    kept = await admin.fetch("SELECT * FROM audit.pageview_days WHERE day BETWEEN '2021-06-01' AND '2021-06-03'")
    assert sorted((r["day"].isoformat(), r["views"], r["visitors"]) for r in kept) == [
        ("2021-06-01", 21, 7),
        ("2021-06-02", 6, 5),
        ("2021-06-03", 1, 1),
    ]
    assert await trends() == before
    assert await close() == 0  # nothing left to close

    # A view that arrives late for a closed day is added to its aggregates by the next round.
    late = (datetime(2021, 6, 2, 12, tzinfo=UTC), "/", None, b"late".ljust(16, b"\0"))
    await admin.copy_records_to_table("pageviews", schema_name="audit", records=[late], columns=columns)
    assert await close() == 1
    assert (await trends())["days"][1] == {"day": "2021-06-02", "views": 7, "visitors": 6}


TEST_ADDRESSES = ("203.0.113.77", "2001:db8::77", "198.51.100.77")


async def test_no_address_and_no_e_mail_anywhere_in_the_audit_schema_or_the_logs(
    audit: httpx.AsyncClient, admin: asyncpg.Connection, kit: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    email = f"scan-{uuid.uuid4().hex[:8]}@example.com"
    tag = uuid.uuid4().hex[:8]
    for address in TEST_ADDRESSES[:2]:
        response = await audit.post(
            "/v1/pageviews",
            json={"url": f"/{tag}/p?email={email}", "referrer": f"http://{TEST_ADDRESSES[2]}/x"},
            headers={"User-Agent": kit.browser, "X-Forwarded-For": address},
        )
        assert response.status_code == 202
    events = [
        kit.event(
            "site.page.viewed",
            {"url": f"/{tag}/{email}", "client_address": TEST_ADDRESSES[2], "user_agent": kit.browser},
        ),
        kit.event(
            "order.placed",
            {"order_id": "X", "purchaser": {"email": email, "name": "Lê Thị Thử"}, "note": f"from {TEST_ADDRESSES[0]}"},
        ),
        kit.event("contact.message.received", {"message_id": "m", "email": email, "ip": TEST_ADDRESSES[1]}),
        kit.event("notification.requested", {"recipient": {"email": email}, "context": {"reply_body": email}}),
    ]
    await kit.publish(events)
    await kit.wait_for_entries(admin, [e["id"] for e in events])
    await wait_for_views(admin, f"/{tag}/%", 3)

    tables = await admin.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema = 'audit'")
    scanned = 0
    for table in tables:
        for row in await admin.fetch(f'SELECT t::text AS line FROM audit."{table["table_name"]}" t'):
            line = row["line"]
            scanned += 1
            assert not IPV4_RE.search(line), (table["table_name"], line)
            assert not EMAIL_RE.search(line), (table["table_name"], line)
            assert not any(a in line for a in TEST_ADDRESSES), (table["table_name"], line)
            assert email not in line
    assert scanned > 10
    out, err = capfd.readouterr()
    for text in (out, err):
        assert email not in text
        assert not any(re.search(re.escape(a), text) for a in TEST_ADDRESSES)
