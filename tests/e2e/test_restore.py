"""A backup restored: `pg_dump` of a running system, `pg_restore` into a new database, the services started on
it. The audit chain still verifies, work goes on and the chain grows from the dump's head; what happened
after the dump is gone, and a checkpoint recorded after it no longer holds (README, "Restoring")."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import orjson
from audit import trail
from audit.app import create as create_audit
from audit.settings import Settings as AuditSettings
from contact.app import create as create_contact
from contact.settings import Settings as ContactSettings
from notifier.app import create as create_notifier
from notifier.settings import Settings as NotifierSettings
from spm_common.testing.smtp import SmtpServer
from spm_common.testing.world import OPERATOR_TOKEN, World, new_world, running

OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


@asynccontextmanager
async def fresh_world(smtp: SmtpServer) -> AsyncIterator[World]:
    """A database and an exchange of their own: the session's world holds every other test's data."""
    world = new_world()
    world.smtp_port = smtp.port
    await world.create()  # what `spm-admin bootstrap` does: the database and the roles, nothing else
    try:
        yield world
    finally:
        await world.destroy()


async def run(*command: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, output.decode(errors="replace")


async def start_system(stack: AsyncExitStack, world: World) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
    contact = await stack.enter_async_context(running(create_contact(world.settings(ContactSettings))))
    await stack.enter_async_context(running(create_notifier(world.settings(NotifierSettings))))
    audit = await stack.enter_async_context(running(create_audit(world.settings(AuditSettings))))
    return contact, audit


async def send_message(contact: httpx.AsyncClient, audit: httpx.AsyncClient, smtp: SmtpServer, label: str) -> str:
    """A contact message, acknowledged by e-mail and in the audit trail; its address."""
    address = f"restore-{label}-{uuid.uuid4().hex[:8]}@example.com"
    response = await contact.post(
        "/v1/messages", json={"name": "Khách Thử", "email": address, "subject": label, "message": "Xin chào"}
    )
    assert response.status_code == 202, response.text
    await smtp.wait_to(address, timeout=15)
    # The message and the acknowledgement's request are both about this address, found by it as operators do.
    async with asyncio.timeout(15):
        while True:
            found = await audit.get("/v1/audit/events", params={"email": address}, headers=OPERATOR)
            if found.status_code == 200 and len(found.json()["items"]) >= 2:
                return address
            await asyncio.sleep(0.05)


async def checkpoint(world: World) -> tuple[int, str]:
    """What the audit service records and logs every SPM_AUDIT_CHECKPOINT_SECONDS, taken now."""
    conn = await asyncpg.connect(world.database_url, server_settings={"search_path": "audit"})
    try:
        outcome = await trail.checkpoint(conn, world.settings(AuditSettings).checkpoint_signer())
    finally:
        await conn.close()
    assert outcome.ok, outcome.report()
    return outcome.head_seq, outcome.head_hash


async def verify_full(audit: httpx.AsyncClient) -> dict[str, object]:
    response = await audit.get("/v1/audit/verify", params={"full": "true"}, headers=OPERATOR)
    assert response.status_code == 200, response.text
    report: dict[str, object] = response.json()
    return report


async def test_a_restored_dump_verifies_and_work_goes_on(smtp: SmtpServer, tmp_path: Path) -> None:
    dump = tmp_path / "spm.dump"
    async with fresh_world(smtp) as live, AsyncExitStack() as stack:
        contact, audit = await start_system(stack, live)
        before = await send_message(contact, audit, smtp, "before")
        kept_seq, kept_hash = await checkpoint(live)
        # While the services run, as an operator would: one consistent snapshot of every schema.
        code, output = await run("pg_dump", "--format=custom", f"--file={dump}", live.database_url)
        assert code == 0, output
        after = await send_message(contact, audit, smtp, "after")
        lost_seq, lost_hash = await checkpoint(live)  # a checkpoint logged after the dump
    assert lost_seq > kept_seq

    async with fresh_world(smtp) as restored:
        # Bootstrap (the world's, as db-init's) already made the schemas: the dump's replace them.
        restore = ("pg_restore", "--single-transaction", "--clean", "--if-exists")
        code, output = await run(*restore, f"--dbname={restored.database_url}", str(dump))
        assert code == 0, output
        async with AsyncExitStack() as stack:
            contact, audit = await start_system(stack, restored)

            report = await verify_full(audit)
            assert report["ok"] is True, report
            dumped_head = report["head"]
            assert isinstance(dumped_head, dict)
            assert kept_seq <= dumped_head["seq"] < lost_seq
            assert report["checked"] == dumped_head["seq"]
            admin = await restored.admin()
            try:
                emails = {r["email"] for r in await admin.fetch("SELECT email FROM contact.messages")}
            finally:
                await admin.close()
            assert before in emails and after not in emails  # the dump's point in time

            # Work goes on: a new message is stored, acknowledged and chained after the dump's head.
            await send_message(contact, audit, smtp, "restored")
            report = await verify_full(audit)
            assert report["ok"] is True, report
            head = report["head"]
            assert isinstance(head, dict) and head["seq"] > dumped_head["seq"]
            assert report["checked"] == head["seq"]

        # The operator's tool against checkpoints kept outside the database: one taken before the dump still
        # holds; one taken after it names an entry the restore lost (or one since rewritten under that number).
        admin_cli = shutil.which("spm-audit-admin", path=str(Path(sys.executable).parent))
        assert admin_cli, "spm-audit-admin is not installed in this environment"
        env = {**os.environ, **restored.env(), "SPM_LOG_FORMAT": "json"}
        (kept_code, kept_out), (lost_code, lost_out) = await asyncio.gather(
            run(admin_cli, "verify", "--full", "--expect", f"{kept_seq}:{kept_hash}", env=env),
            run(admin_cli, "verify", "--full", "--expect", f"{lost_seq}:{lost_hash}", env=env),
        )
        assert kept_code == 0, kept_out
        assert orjson.loads(kept_out.strip().splitlines()[-1])["ok"] is True
        assert lost_code == 1, lost_out
        lost_report = orjson.loads(lost_out.strip().splitlines()[-1])
        assert lost_report["ok"] is False
        assert lost_report["first_broken"]["seq"] == lost_seq
