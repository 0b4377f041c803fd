"""`spm-console-admin`: operator accounts of the console (add, list, disable, reset)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import asyncpg
import typer
from spm_common.logging import configure_logging
from spm_common.migrations import migrate
from spm_common.settings import from_environment, load

from console import accounts, store
from console.settings import MIGRATIONS, Settings

cli = typer.Typer(help="Operate the console.", no_args_is_help=True)
operator = typer.Typer(help="Operator accounts.", no_args_is_help=True)
cli.add_typer(operator, name="operator")
T = TypeVar("T")


def _run(work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    settings = load(Settings)

    async def go() -> T:
        conn = await asyncpg.connect(settings.role_database_url(), server_settings={"search_path": settings.db_schema})
        try:
            await migrate(conn, settings.db_schema, MIGRATIONS)
            async with conn.transaction():
                return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


def _address(email: str) -> str:
    try:
        return accounts.valid_address(email)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@operator.command("add")
def add(
    email: str,
    role: Annotated[str, typer.Option(help="support or admin")] = "support",
) -> None:
    """Create an account and print its one-time password (to be replaced at the first login)."""
    if role not in accounts.ROLES:
        raise typer.BadParameter("role must be support or admin")
    address = _address(email)
    created = _run(lambda conn: accounts.add_operator(conn, address, role))
    if created is None:
        typer.echo(f"an account for {address} exists already; use `operator reset`", err=True)
        raise typer.Exit(1)
    typer.echo(f"{role} account {address} created. One-time password (shown once, change it at first login):")
    typer.echo(created[1])


@operator.command("list")
def list_() -> None:
    """Every account, its role and whether it is disabled."""
    for row in _run(store.list_operators):
        state = f"disabled {row.disabled_at:%Y-%m-%d}" if row.disabled_at else "active"
        typer.echo(f"{row.email}\t{row.role}\t{state}")


@operator.command("disable")
def disable(email: str) -> None:
    """Disable an account; its open sessions end at once."""
    address = _address(email)
    if not _run(lambda conn: store.disable_operator(conn, address)):
        typer.echo(f"no account for {address}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{address} disabled")


@operator.command("reset")
def reset(email: str) -> None:
    """Give an account a new one-time password (its sessions end) and print it."""
    address = _address(email)
    password = _run(lambda conn: accounts.reset_password(conn, address))
    if password is None:
        typer.echo(f"no account for {address}", err=True)
        raise typer.Exit(1)
    typer.echo(f"new one-time password for {address} (shown once, change it at first login):")
    typer.echo(password)


def main() -> None:
    configure_logging("console-admin", from_environment("SPM_LOG_FORMAT", "console"))
    cli()
