"""`spm-notifier-admin`: the operators' commands of the notifier, for a shell on its host: the delivery log,
retrying failed deliveries, and the suppression list (what the console does through the operator API).

Changes are recorded under the shell's user (`cli:<user>`), as the console records its operator's account.
The notifier keeps no address: a suppression is named by the address, which is hashed here into its
recipient reference, or by that reference as `suppressions list` prints it. Addresses typed here are echoed
to the operator's terminal, never to a log.
"""

from __future__ import annotations

import asyncio
import getpass
import re
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Annotated, TypeVar

import asyncpg
import typer
from spm_common.logging import configure_logging, get_logger
from spm_common.migrations import bring_up_to_date
from spm_common.settings import from_environment, load

from notifier import store
from notifier.api import Delivery, Suppression
from notifier.settings import MIGRATIONS, Settings
from notifier.tokens import recipient_ref

cli = typer.Typer(help="Operate the notifier.", no_args_is_help=True)
deliveries = typer.Typer(help="The delivery log.", no_args_is_help=True)
suppressions = typer.Typer(help="Recipients suppressed after a hard bounce.", no_args_is_help=True)
cli.add_typer(deliveries, name="deliveries")
cli.add_typer(suppressions, name="suppressions")

log = get_logger(__name__)
T = TypeVar("T")
# What `suppressions list` prints: the hex HMAC-SHA256 of an address (tokens.recipient_ref).
RECIPIENT_REF = re.compile(r"[0-9a-f]{64}")


class Status(StrEnum):
    pending = "pending"
    sending = "sending"
    sent = "sent"
    failed = "failed"
    all = "all"


def operator() -> str:
    """Who is acting: the shell's user, marked as coming from this tool."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # a container user without a passwd entry or LOGNAME
        return "cli:unknown"


def _run(work: Callable[[asyncpg.Connection, Settings], Awaitable[T]]) -> T:
    settings = load(Settings)

    async def go() -> T:
        await bring_up_to_date(settings, MIGRATIONS)
        conn = await asyncpg.connect(settings.role_database_url(), server_settings={"search_path": settings.db_schema})
        try:
            async with conn.transaction():
                return await work(conn, settings)
        finally:
            await conn.close()

    return asyncio.run(go())


def _fail(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(1)


@deliveries.command("list")
def list_deliveries(
    status: Annotated[Status, typer.Option(help="only deliveries in this state")] = Status.failed,
    after: Annotated[int, typer.Option(min=0, help="page on: the last id of the previous page")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 100,
) -> None:
    """The delivery log, oldest first (failed ones by default): one tab-separated line a delivery."""

    async def work(conn: asyncpg.Connection, _: Settings) -> list[Delivery]:
        rows = await store.list_deliveries(conn, None if status is Status.all else status.value, after, limit)
        return [Delivery.model_validate(row) for row in rows]

    typer.echo("id\tstatus\tpurpose\ttemplate\tattempts\tretryable\tcreated_at\tlast_error")
    for d in _run(work):
        retryable = "yes" if d.retryable else "no"
        created = d.created_at.isoformat(timespec="seconds")
        fields = [d.id, d.status, d.purpose, d.template, d.attempts, retryable, created, d.last_error or ""]
        typer.echo("\t".join(str(f) for f in fields))


@deliveries.command("retry")
def retry(
    delivery_id: Annotated[int | None, typer.Argument(min=1, help="the delivery to retry")] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed", help="every failed delivery that can be")] = False,
) -> None:
    """Send a failed delivery (or every one) again, if it still holds its request."""
    if (delivery_id is None) == (not all_failed):
        raise typer.BadParameter("give either a delivery id or --all-failed")
    who = operator()

    async def work(conn: asyncpg.Connection, _: Settings) -> tuple[list[int], bool]:
        retried = await store.retry_failed(conn, delivery_id, who)
        if retried:
            await store.notify_due(conn)
        exists = delivery_id is None or await store.delivery_status(conn, delivery_id) is not None
        return retried, exists

    retried, exists = _run(work)
    if not exists:
        raise _fail(f"no delivery {delivery_id}")
    if delivery_id is not None and not retried:
        raise _fail(
            f"delivery {delivery_id} is not retried: only a failed delivery that still holds its request can be"
        )
    log.info("deliveries retried", delivery_ids=retried, operator=who)
    typer.echo(f"{len(retried)} delivery(ies) retried" + (f": {', '.join(map(str, retried))}" if retried else ""))


@suppressions.command("list")
def list_suppressions(
    after: Annotated[str, typer.Option(help="page on: the last reference of the previous page")] = "",
    limit: Annotated[int, typer.Option(min=1, max=500)] = 100,
) -> None:
    """Suppressed recipients by reference (the notifier keeps no address): tab-separated lines."""

    async def work(conn: asyncpg.Connection, _: Settings) -> list[Suppression]:
        return [Suppression.model_validate(dict(row)) for row in await store.list_suppressions(conn, after, limit)]

    typer.echo("recipient_ref\tsuppressed_at\treason")
    for s in _run(work):
        typer.echo(f"{s.recipient_ref}\t{s.suppressed_at.isoformat(timespec='seconds')}\t{s.suppressed_reason or ''}")


@suppressions.command("remove")
def remove(
    recipient: Annotated[str, typer.Argument(metavar="ADDRESS", help="the address, or its recipient reference")],
    reason: Annotated[str, typer.Option(help="why mail to this recipient may go again (kept with the change)")],
) -> None:
    """Lift a suppression: mail to the recipient may go again. Who, when and why are kept."""
    reason = reason.strip()
    if not reason or len(reason) > 1000:
        raise typer.BadParameter("give a reason of 1 to 1000 characters", param_hint="--reason")
    recipient = recipient.strip()
    if "@" not in recipient and not RECIPIENT_REF.fullmatch(recipient):
        raise typer.BadParameter("an e-mail address, or a recipient reference as `suppressions list` prints it")
    who = operator()

    async def work(conn: asyncpg.Connection, settings: Settings) -> tuple[str, bool]:
        ref = recipient if "@" not in recipient else recipient_ref(recipient, settings.recipient_key())
        return ref, await store.remove_suppression(conn, ref, who, reason)

    ref, lifted = _run(work)
    if not lifted:
        raise _fail(f"{recipient} is not suppressed")
    log.info("suppression lifted", recipient_ref=ref, operator=who)
    typer.echo(f"suppression of {recipient} lifted")


def main() -> None:
    configure_logging("notifier-admin", from_environment("SPM_LOG_FORMAT", "console"))
    cli()
