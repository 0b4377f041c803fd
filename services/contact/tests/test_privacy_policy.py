"""Privacy policy versions: the shipped text, serving it, new versions, and the version each message records."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from contact import admin, policy
from contact_helpers import Contact, form, outbox_events, started
from spm_common.testing.world import World
from typer.testing import CliRunner

SHIPPED = Path(policy.__file__).parent / "v1"


def test_the_shipped_text_is_the_published_policy_in_two_languages() -> None:
    [(version, texts)] = policy.shipped()
    assert version == 1
    assert texts.vi.startswith("Chính Sách Cá Nhân\n")
    assert "Địa chỉ e-mail chỉ được sử dụng để trả lời các tin nhắn đã nhận." in texts.vi
    assert "Information Collection" not in texts.vi
    assert texts.en.startswith("Information Collection and Use\n")
    assert "E-mail addresses are used to answer messages received only." in texts.en
    assert "We do not keep credit card information" in texts.en
    assert "Scroll to Top" not in texts.en and "Chính" not in texts.en


async def test_the_policy_in_force_is_served_in_either_language(contact: Contact) -> None:
    async with contact.client() as client:
        english = await client.get("/v1/privacy-policy")
        vietnamese = await client.get("/v1/privacy-policy", params={"lang": "vi"})
        by_header = await client.get("/v1/privacy-policy", headers={"Accept-Language": "vi-VN,vi;q=0.9"})
        first = await client.get("/v1/privacy-policy", params={"version": 1, "lang": "en"})
        missing = await client.get("/v1/privacy-policy", params={"version": 999})
        bad = await client.get("/v1/privacy-policy", params={"lang": "fr"})
    assert english.status_code == 200
    assert english.json()["lang"] == "en" and english.headers["Content-Language"] == "en"
    assert vietnamese.json()["lang"] == "vi" and vietnamese.json()["text"].startswith("Chính Sách Cá Nhân")
    assert by_header.json()["lang"] == "vi"
    assert first.json()["version"] == 1
    assert first.json()["text"] == (SHIPPED / "en.txt").read_text(encoding="utf-8")
    assert "max-age" in first.headers["Cache-Control"]
    assert missing.status_code == 404 and missing.json() == {"detail": "no such privacy policy version"}
    assert bad.status_code == 422


async def test_shipped_versions_are_recorded_and_announced_once(contact: Contact, world: World) -> None:
    async with started(world), started(world):
        pass
    announcements = [e for e in await outbox_events(world, "privacy-policy.published") if e.data["version"] == 1]
    assert len(announcements) == 1
    assert announcements[0].data["languages"] == ["vi", "en"]
    assert announcements[0].data["sha256"] == policy.shipped()[0][1].sha256


async def test_a_new_version_takes_effect_and_each_message_records_its_own(
    contact: Contact, world: World, tmp_path: Path
) -> None:
    async def post() -> str:
        async with contact.client() as client:
            response = await client.post("/v1/messages", json=form())
        return str(response.json()["id"])

    async def version_of(message_id: str) -> int:
        async with contact.operator as operator:
            return int((await operator.get(f"/v1/messages/{message_id}")).json()["privacy_policy_version"])

    async with contact.client() as client:
        before = (await client.get("/v1/privacy-policy")).json()["version"]
    earlier_message = await post()

    texts = policy.PolicyTexts(vi="Chính Sách Cá Nhân (bản mới)\n", en="Privacy Policy (new)\n")
    now = await admin.publish_policy(contact.settings, texts)
    later = await admin.publish_policy(contact.settings, texts, datetime.now(UTC) + timedelta(days=30))
    assert now == before + 1 and later == before + 2
    later_message = await post()

    async with contact.client() as client:
        current = (await client.get("/v1/privacy-policy", params={"lang": "vi"})).json()
        old = (await client.get("/v1/privacy-policy", params={"version": before})).json()
        future = (await client.get("/v1/privacy-policy", params={"version": later})).json()
    assert current["version"] == now and current["text"] == texts.vi
    assert old["version"] == before and old["text"] != texts.vi
    assert future["version"] == later
    assert await version_of(earlier_message) == before
    assert await version_of(later_message) == now

    announced = {e.data["version"]: e for e in await outbox_events(world, "privacy-policy.published")}
    assert {now, later} <= set(announced)
    assert datetime.fromisoformat(announced[later].data["effective_from"]) > datetime.now(UTC)


async def test_operators_publish_a_version_from_the_command_line(world: World, tmp_path: Path) -> None:
    vi, en = tmp_path / "vi.txt", tmp_path / "en.txt"
    vi.write_text("Chính Sách Cá Nhân (CLI)\n", encoding="utf-8")
    en.write_text("Privacy Policy (CLI)\n", encoding="utf-8")
    runner = CliRunner()
    # In a thread, as from a shell: the command runs its own event loop.
    result = await asyncio.to_thread(
        runner.invoke,
        admin.cli,
        ["publish-policy", "--vi", str(vi), "--en", str(en), "--effective-from", "2099-01-01T00:00:00"],
        env=world.env(),
    )
    assert result.exit_code == 0, result.output
    assert "published" in result.output

    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    result = await asyncio.to_thread(
        runner.invoke, admin.cli, ["publish-policy", "--vi", str(empty), "--en", str(en)], env=world.env()
    )
    assert result.exit_code != 0
