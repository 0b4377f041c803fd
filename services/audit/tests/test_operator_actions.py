"""operator.action (the console's record of what operators see and do) in the trail: pseudonymised, and
found by the address of the person it concerns, not the operator's."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx


async def test_an_operator_action_is_recorded_under_the_person_its_target_names(
    audit: httpx.AsyncClient, admin: asyncpg.Connection, kit: Any
) -> None:
    person = f"Buyer-{uuid.uuid4().hex[:8]}@Example.vn"
    operator = f"lan-{uuid.uuid4().hex[:6]}@spmgroup.vn"
    action = kit.event(
        "operator.action",
        {
            "operator": operator,
            "action": "orders.searched",
            "target": f"orders.search:{person}",
            "at": datetime.now(UTC).isoformat(),
        },
        source="urn:spm:console",
    )
    await kit.publish([action])
    [row] = await kit.wait_for_entries(admin, [action["id"]])
    for personal in (person, person.lower(), operator, operator.split("@")[0]):
        assert personal not in row["payload"]
    assert row["subject_ref"]

    found = await audit.get("/v1/audit/events", params={"email": person.lower()}, headers=kit.operator)
    assert [item["event_id"] for item in found.json()["items"]] == [action["id"]]
    as_operator = await audit.get("/v1/audit/events", params={"email": operator}, headers=kit.operator)
    assert as_operator.json()["items"] == []
