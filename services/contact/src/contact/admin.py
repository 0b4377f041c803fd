"""`spm-contact-admin`: operator commands of the contact service (privacy policy versions, retention)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import asyncpg
import typer
from spm_common.logging import configure_logging
from spm_common.migrations import bring_up_to_date
from spm_common.settings import from_environment, load

from contact import policy, retention
from contact.settings import MIGRATIONS, Settings

cli = typer.Typer(help="Operate the contact service.", no_args_is_help=True)


async def _connect(settings: Settings) -> asyncpg.Connection:
    await bring_up_to_date(settings, MIGRATIONS)
    return await asyncpg.connect(settings.role_database_url(), server_settings={"search_path": settings.db_schema})


async def publish_policy(
    settings: Settings, texts: policy.PolicyTexts, effective_from: datetime | None = None
) -> int | None:
    conn = await _connect(settings)
    try:
        async with conn.transaction():
            return await policy.publish(conn, texts, settings.source, effective_from=effective_from)
    finally:
        await conn.close()


@cli.command("publish-policy")
def publish_policy_command(
    vi: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="the Vietnamese text, UTF-8")],
    en: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="the English text, UTF-8")],
    effective_from: Annotated[
        datetime | None,
        typer.Option(help="when it takes effect (ISO 8601, UTC unless an offset is given); default now"),
    ] = None,
) -> None:
    """Publish the next version of the privacy policy and announce it (privacy-policy.published)."""
    try:
        texts = policy.PolicyTexts.read(vi, en)
    except (UnicodeDecodeError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    if effective_from is not None and effective_from.tzinfo is None:
        effective_from = effective_from.replace(tzinfo=UTC)
    version = asyncio.run(publish_policy(load(Settings), texts, effective_from))
    typer.echo(f"privacy policy version {version} published")


@cli.command("delete-expired")
def delete_expired_command() -> None:
    """Delete now the messages older than SPM_CONTACT_RETENTION_DAYS (the service also does it periodically)."""
    settings = load(Settings)

    async def go() -> int:
        pool = await asyncpg.create_pool(
            settings.role_database_url(), min_size=1, max_size=2, server_settings={"search_path": settings.db_schema}
        )
        try:
            return await retention.delete_expired(pool, settings.contact_retention_days, settings.source)
        finally:
            await pool.close()

    typer.echo(f"{asyncio.run(go())} message(s) deleted")


@cli.command("mask-card-numbers")
def mask_card_numbers_command() -> None:
    """Mask card numbers in messages and replies stored before this version masked them on arrival (once,
    after upgrading; running it again changes nothing)."""
    settings = load(Settings)

    async def go() -> retention.Masked:
        await bring_up_to_date(settings, MIGRATIONS)
        pool = await asyncpg.create_pool(
            settings.role_database_url(), min_size=1, max_size=2, server_settings={"search_path": settings.db_schema}
        )
        try:
            return await retention.mask_card_numbers(pool)
        finally:
            await pool.close()

    masked = asyncio.run(go())
    typer.echo(f"card numbers masked in {masked.messages} message(s) and {masked.replies} reply(ies)")


def main() -> None:
    configure_logging("contact-admin", from_environment("SPM_LOG_FORMAT", "console"))
    cli()
