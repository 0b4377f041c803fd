"""`spm-audit-admin`: the operator's commands for the audit trail (verify it, record a checkpoint, export the
signed checkpoints to a file kept elsewhere, and the checkpoint key's public half)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import asyncpg
import orjson
import typer
from spm_common.logging import configure_logging
from spm_common.settings import from_environment, load

from audit import signing, store, trail
from audit.settings import Settings

cli = typer.Typer(help="Operate the audit trail.", no_args_is_help=True)
checkpoints_cli = typer.Typer(help="The signed checkpoints, kept elsewhere; their key.", no_args_is_help=True)
cli.add_typer(checkpoints_cli, name="checkpoints")

PublicKeys = Annotated[
    list[str] | None,
    typer.Option(
        "--public-key",
        help="a public key (base64) whose checkpoints are trusted besides SPM_AUDIT_CHECKPOINT_KEY's own: "
        "a rotated key's; may be repeated",
    ),
]


def _trusted(settings: Settings, extra: list[str] | None) -> set[str]:
    return {settings.checkpoint_signer().public_key, *(extra or [])}


async def _connect(settings: Settings) -> asyncpg.Connection:
    return await asyncpg.connect(settings.role_database_url(), server_settings={"search_path": settings.db_schema})


T = TypeVar("T")


def _run(job: Callable[[asyncpg.Connection], Awaitable[T]], settings: Settings | None = None) -> T:
    settings = settings or load(Settings)

    async def go() -> T:
        conn = await _connect(settings)
        try:
            return await job(conn)
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
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            "--checkpoints",
            help="a file of `checkpoints export`: every signed checkpoint in it must still hold",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    public_keys: PublicKeys = None,
) -> None:
    """Walk the chain in batches and print {"ok": ..., "checked": N}; exit 1 at the first broken entry."""
    settings = load(Settings)
    kept: list[signing.Checkpoint] = []
    if checkpoints is not None:
        try:
            kept = signing.load_file(checkpoints.read_bytes())
        except ValueError as exc:
            typer.echo(f"{checkpoints}: {exc}", err=True)
            raise typer.Exit(2) from None
    trusted = _trusted(settings, public_keys)

    async def job(conn: asyncpg.Connection) -> trail.Verification:
        if checkpoints is not None:
            outcome = await trail.verify_checkpoints(conn, kept, trusted, full=full)
        else:
            outcome = await trail.verify(conn, full=full, trusted=trusted)
        if outcome.ok and expect:
            seq_text, _, expected_hash = expect.partition(":")
            row = await conn.fetchrow("SELECT hash FROM entries WHERE seq = $1", int(seq_text))
            if row is None or row["hash"] != expected_hash:
                return trail.Verification(
                    False, outcome.checked, full, outcome.head_seq, outcome.head_hash, int(seq_text),
                    "altered: differs from the checkpoint kept elsewhere",
                )  # fmt: skip
        return outcome

    _finish(_run(job, settings), expect)


@cli.command()
def checkpoint() -> None:
    """Verify since the last checkpoint and, if the chain holds, record its head as a new signed checkpoint."""
    settings = load(Settings)
    signer = settings.checkpoint_signer()

    async def job(conn: asyncpg.Connection) -> trail.Verification:
        return await trail.checkpoint(conn, signer)

    _finish(_run(job, settings))


@checkpoints_cli.command("export")
def export_checkpoints(
    file: Annotated[Path, typer.Argument(help="written, or added to if it exists: it only ever grows", dir_okay=False)],
    public_keys: PublicKeys = None,
) -> None:
    """Write every signed checkpoint of the database to FILE, with the public key, for keeping elsewhere (another
    machine, write-once storage). Checkpoints already in FILE stay, even if they are gone from the database.
    Exit 1, writing nothing, if a checkpoint is not signed by a trusted key."""
    settings = load(Settings)
    trusted = _trusted(settings, public_keys)
    kept: list[signing.Checkpoint] = []
    if file.exists():
        try:
            kept = signing.load_file(file.read_bytes())
        except ValueError as exc:
            typer.echo(f"{file}: {exc}", err=True)
            raise typer.Exit(2) from None
    found: list[signing.Checkpoint] = _run(store.signed_checkpoints, settings)
    merged = {(c.seq, c.signature): c for c in [*kept, *found]}
    for item in sorted(merged.values(), key=lambda c: c.seq):
        if not item.signed_by(trusted):
            typer.echo(f"the checkpoint at {item.seq} is not signed by a trusted key; nothing written", err=True)
            raise typer.Exit(1)
    temporary = file.with_name(file.name + ".tmp")
    temporary.write_bytes(signing.dump_file(list(merged.values()), settings.checkpoint_signer().public_key))
    temporary.replace(file)
    newest = max(merged.values(), key=lambda c: c.seq, default=None)
    report = {"file": str(file), "checkpoints": len(merged), "newest": newest.seq if newest else None}
    typer.echo(orjson.dumps(report).decode())


@checkpoints_cli.command("public-key")
def public_key() -> None:
    """Print the public half (base64) of SPM_AUDIT_CHECKPOINT_KEY: keep it with the exported checkpoints."""
    typer.echo(load(Settings).checkpoint_signer().public_key)


@checkpoints_cli.command("new-key")
def new_key() -> None:
    """Print a new random SPM_AUDIT_CHECKPOINT_KEY (base64 raw Ed25519 private key) and, on stderr, its public
    key. Nothing is stored: put the key in the audit service's environment, as a secret."""
    private = signing.new_private_key()
    typer.echo(f"SPM_AUDIT_CHECKPOINT_KEY={private}")
    typer.echo(f"public key: {signing.public_key_of(private)}", err=True)


def main() -> None:
    configure_logging("audit-admin", from_environment("SPM_LOG_FORMAT", "console"))
    cli()
