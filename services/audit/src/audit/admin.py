"""`spm-audit-admin`: the operator's commands for the audit trail (verify it, record a checkpoint)."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated, Any

import asyncpg
import orjson
import typer
from spm_common.logging import configure_logging
from spm_common.settings import load

from audit import trail
from audit.settings import Settings

cli = typer.Typer(help="Operate the audit trail.", no_args_is_help=True)


async def _connect(settings: Settings) -> asyncpg.Connection:
    return await asyncpg.connect(settings.role_database_url(), server_settings={"search_path": settings.db_schema})


def _run(job: Any) -> trail.Verification:
    settings = load(Settings)

    async def go() -> trail.Verification:
        conn = await _connect(settings)
        try:
            result: trail.Verification = await job(conn)
            return result
        finally:
            await conn.close()

    return asyncio.run(go())


def _finish(outcome: trail.Verification, expect: str | None = None) -> None:
    report = outcome.report()
    if expect:
        seq_text, _, expected_hash = expect.partition(":")
        report["expected"] = {"seq": int(seq_text), "hash": expected_hash}
    typer.echo(orjson.dumps(report).decode())
    if not outcome.ok:
        raise typer.Exit(1)


@cli.command()
def verify(
    full: Annotated[bool, typer.Option("--full", help="walk the whole chain")] = False,
    expect: Annotated[
        str | None,
        typer.Option(help="SEQ:HASH of a checkpoint kept elsewhere; the entry SEQ must still have that hash"),
    ] = None,
) -> None:
    """Walk the chain in batches and print {"ok": ..., "checked": N}; exit 1 at the first broken entry."""

    async def job(conn: asyncpg.Connection) -> trail.Verification:
        outcome = await trail.verify(conn, full=full)
        if outcome.ok and expect:
            seq_text, _, expected_hash = expect.partition(":")
            row = await conn.fetchrow("SELECT hash FROM entries WHERE seq = $1", int(seq_text))
            if row is None or row["hash"] != expected_hash:
                return trail.Verification(
                    False, outcome.checked, full, outcome.head_seq, outcome.head_hash, int(seq_text),
                    "altered: differs from the checkpoint kept elsewhere",
                )  # fmt: skip
        return outcome

    _finish(_run(job), expect)


@cli.command()
def checkpoint() -> None:
    """Verify since the last checkpoint and, if the chain holds, record its head as a new checkpoint."""
    _finish(_run(trail.checkpoint))


def main() -> None:
    configure_logging("audit-admin", os.environ.get("SPM_LOG_FORMAT", "console"))
    cli()
