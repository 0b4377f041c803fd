"""`spm-notifier-admin deliveries list|retry` and `suppressions list|remove` (its typer app, with the environment
an operator's shell would give it), against the real notifier, Postgres, RabbitMQ and SMTP server: what the
operator reads, what is mailed, and what the notifier records of who acted."""

from __future__ import annotations

import asyncio

from notifier.admin import cli, operator
from notifier.app import create
from notifier.settings import Settings
from notifier.tokens import recipient_ref
from notifier_helpers import FAST, address, request_event, settled
from spm_common.testing.logs import captured_json_logs
from spm_common.testing.world import World, running
from typer.testing import CliRunner


async def admin(world: World, *args: str) -> tuple[int, str, str]:
    """Exit code, standard output and standard error of the command (in a thread: it runs its own loop)."""
    result = await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=world.env())
    return result.exit_code, result.stdout, result.stderr


async def test_an_operator_lists_failed_deliveries_and_retries_one_from_the_shell(
    world: World, publish, db, smtp
) -> None:
    settings = world.settings(Settings, **{**FAST, "notifier_max_attempts": 2})
    to = address("shell")
    order = request_event("order-confirmation", to)
    async with running(create(settings)):
        smtp.reply_for_data = "452 4.3.1 insufficient system storage"
        await publish(order)
        failed = await settled(db, order, "failed")
        smtp.reply_for_data = None

        code, out, _ = await admin(world, "deliveries", "list", "--limit", "500")
        assert code == 0, out
        assert out.splitlines()[0] == "id\tstatus\tpurpose\ttemplate\tattempts\tretryable\tcreated_at\tlast_error"
        [line] = [line for line in out.splitlines() if line.startswith(f"{failed['id']}\t")]
        assert line.split("\t")[1:6] == ["failed", "fulfil-order", "order-confirmation", "2", "yes"]
        assert "gave up after 2 attempts: 452" in line
        assert to not in out  # the log holds no address to show

        with captured_json_logs("notifier-admin") as logs:
            code, out, err = await admin(world, "deliveries", "retry", str(failed["id"]))
        assert code == 0, err
        assert out.strip() == f"1 delivery(ies) retried: {failed['id']}"
        await smtp.wait_to(to)
        row = await settled(db, order, "sent")
        assert row["operator_retries"] == 1 and row["retried_by"] == operator() and operator().startswith("cli:")
        assert to not in logs.text and any(line["event"] == "deliveries retried" for line in logs.lines)

        code, _, err = await admin(world, "deliveries", "retry", str(failed["id"]))
        assert code == 1 and "only a failed delivery that still holds its request" in err
        code, _, err = await admin(world, "deliveries", "retry", "999999999")
        assert code == 1 and "no delivery 999999999" in err
        assert (await admin(world, "deliveries", "retry"))[0] == 2
        assert (await admin(world, "deliveries", "retry", "1", "--all-failed"))[0] == 2
        code, out, _ = await admin(world, "deliveries", "retry", "--all-failed")
        assert code == 0 and "retried" in out
        code, out, _ = await admin(world, "deliveries", "list", "--status", "sent", "--limit", "500")
        assert code == 0 and any(line.startswith(f"{failed['id']}\tsent\t") for line in out.splitlines())
    assert len(smtp.to(to)) == 1


async def test_an_operator_lifts_a_suppression_by_address_or_reference(world: World, db) -> None:
    settings = world.settings(Settings, **FAST)
    bounced, other = address("Bounced"), address("other")
    ref = recipient_ref(bounced, settings.recipient_key())
    other_ref = recipient_ref(other, settings.recipient_key())
    async with running(create(settings)):
        pass  # its migrations, so this test also runs alone
    # As a hard bounce leaves them (test_notifier_flow's bounce test).
    await db.executemany(
        "INSERT INTO notifier.recipients (recipient_ref, suppressed_at, suppressed_reason) VALUES ($1, now(), $2)",
        [(ref, "550 5.1.1 no such user"), (other_ref, "550 5.1.1 gone")],
    )
    code, out, _ = await admin(world, "suppressions", "list", "--limit", "500")
    assert code == 0
    assert f"{ref}\t" in out and out.splitlines()[0] == "recipient_ref\tsuppressed_at\treason"
    assert [line.split("\t")[2] for line in out.splitlines() if line.startswith(ref)] == ["550 5.1.1 no such user"]

    assert (await admin(world, "suppressions", "remove", bounced, "--reason", "   "))[0] == 2
    assert (await admin(world, "suppressions", "remove", "not-an-address", "--reason", "x"))[0] == 2
    assert (await admin(world, "suppressions", "remove", bounced))[0] == 2  # a reason is required

    # The address as the buyer spells it today: the same recipient, whatever its case.
    with captured_json_logs("notifier-admin") as logs:
        code, out, err = await admin(
            world, "suppressions", "remove", bounced.upper(), "--reason", "the buyer fixed the mailbox"
        )
    assert code == 0, err
    assert out.strip() == f"suppression of {bounced.upper()} lifted"  # shown to the operator, never logged
    # Seen once in a loaded full run: a line with the address and no line with the reference. The message shows
    # the lines, so that a recurrence says which line (and which logger) it was.
    assert bounced.lower() not in logs.text.lower(), logs.text
    assert any(line.get("recipient_ref") == ref for line in logs.lines), logs.text
    code, _, err = await admin(world, "suppressions", "remove", bounced, "--reason", "twice")
    assert code == 1 and "is not suppressed" in err

    code, _, _ = await admin(world, "suppressions", "remove", other_ref, "--reason", "asked by phone")
    assert code == 0
    listed = (await admin(world, "suppressions", "list", "--limit", "500"))[1]
    assert ref not in listed and other_ref not in listed

    row = await db.fetchrow("SELECT * FROM notifier.recipients WHERE recipient_ref = $1", ref)
    assert row["suppressed_at"] is None and row["unsuppressed_by"] == operator()
    assert row["unsuppressed_reason"] == "the buyer fixed the mailbox"
