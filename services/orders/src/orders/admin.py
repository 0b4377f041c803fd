"""`spm-orders-admin`: the operators' tool for companies without a release pipeline. It manages the product
catalogue, publishes `upgrade.released` and `product.announced` as validated CloudEvents, and looks up one
purchaser. Nothing here lists or exports purchasers in bulk."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import aio_pika
import asyncpg
import typer
from pydantic import BaseModel, Field, ValidationError
from spm_common.envelope import CloudEvent, amqp_message, new_event
from spm_common.logging import configure_logging
from spm_common.publishers import amqp_login
from spm_common.redaction import describe_error
from spm_common.settings import from_environment, load

from orders import store
from orders.events import (
    PRODUCT_ANNOUNCED,
    UPGRADE_RELEASED,
    Line,
    ProductAnnounced,
    Sku,
    UpgradeReleased,
    Url,
    normalise_email,
)
from orders.settings import Settings

cli = typer.Typer(help="Operate the orders service.", no_args_is_help=True)
product = typer.Typer(help="The product catalogue.", no_args_is_help=True)
publish = typer.Typer(help="Publish an event to the exchange, as a release pipeline would.", no_args_is_help=True)
cli.add_typer(product, name="product")
cli.add_typer(publish, name="publish")

T = TypeVar("T")


class ProductEntry(BaseModel):
    sku: Sku
    name_en: Line
    name_vi: Line
    download_url: Url
    major_version: Annotated[int, Field(ge=0, le=10_000)]


M = TypeVar("M", bound=BaseModel)


def _run(work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    settings = load(Settings)

    async def go() -> T:
        conn = await asyncpg.connect(settings.role_database_url(), server_settings={"search_path": settings.db_schema})
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


def _validated(model: type[M], values: Mapping[str, object]) -> M:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        for error in exc.errors(include_input=False):
            typer.echo(f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}", err=True)
        raise typer.Exit(2) from None


@product.command("add")
def product_add(
    sku: Annotated[str, typer.Argument(help="e.g. SPM-DICT-PRO")],
    name_en: Annotated[str, typer.Option(help="name in English")],
    name_vi: Annotated[str, typer.Option(help="name in Vietnamese")],
    download_url: Annotated[str, typer.Option(help="where the current version is downloaded")],
    major_version: Annotated[int, typer.Option(help="current major version")],
) -> None:
    """Add a product, or update it when the sku exists."""
    entry = _validated(
        ProductEntry,
        {
            "sku": sku,
            "name_en": name_en,
            "name_vi": name_vi,
            "download_url": download_url,
            "major_version": major_version,
        },
    )

    async def work(conn: asyncpg.Connection) -> None:
        await store.upsert_product(
            conn, entry.sku, entry.name_en, entry.name_vi, str(entry.download_url), entry.major_version
        )

    _run(work)
    typer.echo(f"product {sku} saved")


@product.command("list")
def product_list() -> None:
    """Show the catalogue."""
    for row in _run(store.all_products):
        typer.echo(f"{row['sku']}\tv{row['major_version']}\t{row['name_en']} / {row['name_vi']}\t{row['download_url']}")


@publish.command("upgrade")
def publish_upgrade(
    release_id: Annotated[str, typer.Option(help="unique per release, e.g. SPM-DICT-PRO-5.2.0")],
    sku: Annotated[str, typer.Option()],
    version: Annotated[str, typer.Option(help="e.g. 5.2.0")],
    title: Annotated[str, typer.Option()],
    download_url: Annotated[str, typer.Option()],
    notes_url: Annotated[str | None, typer.Option()] = None,
    released_at: Annotated[str | None, typer.Option(help="ISO 8601 with offset; default now")] = None,
    eligible_since: Annotated[
        str | None, typer.Option(help="only purchasers with an order on or after this time (ISO 8601)")
    ] = None,
    new_registration: Annotated[bool, typer.Option(help="issue every purchaser a new key for this version")] = False,
) -> None:
    """Publish `upgrade.released`: every eligible purchaser who did not unsubscribe gets one e-mail."""
    release = _validated(
        UpgradeReleased,
        {
            "release_id": release_id,
            "sku": sku,
            "version": version,
            "title": title,
            "download_url": download_url,
            "notes_url": notes_url,
            "released_at": released_at or datetime.now(UTC),
            "eligible_since": eligible_since,
            "new_registration": new_registration,
        },
    )
    _publish(UPGRADE_RELEASED, release)


@publish.command("news")
def publish_news(
    announcement_id: Annotated[str, typer.Option(help="unique per announcement, e.g. 2026-12-newsletter")],
    title: Annotated[str, typer.Option()],
    summary: Annotated[str, typer.Option()],
    url: Annotated[str, typer.Option()],
) -> None:
    """Publish `product.announced`: sent only to purchasers who consented and did not unsubscribe."""
    news = _validated(
        ProductAnnounced, {"announcement_id": announcement_id, "title": title, "summary": summary, "url": url}
    )
    _publish(PRODUCT_ANNOUNCED, news)


def _publish(event_type: str, data: BaseModel) -> None:
    """Publish as the login of `SPM_AMQP_URL` (README: the `spm_releases` user's), which may write the exchange
    and its two routing keys and configure nothing: the exchange is looked up, never declared. Mandatory, with
    the broker's confirmation, so a release that reaches no queue is an error here, not an event lost."""
    settings = load(Settings)
    event = new_event(event_type, f"{settings.source}:operator", data)

    async def go(event: CloudEvent) -> None:
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            exchange = await channel.get_exchange(settings.exchange)
            message = amqp_message(event, user_id=amqp_login(settings.amqp_url))
            await exchange.publish(message, routing_key=event.type, mandatory=True, timeout=30)

    try:
        asyncio.run(go(event))
    except aio_pika.exceptions.ChannelNotFoundEntity:
        typer.echo(f"not published: exchange {settings.exchange!r} does not exist; run `spm-admin bootstrap`", err=True)
        raise typer.Exit(1) from None
    except aio_pika.exceptions.PublishError:
        typer.echo(
            f"not published: no queue takes {event_type} on {settings.exchange!r}; run `spm-admin bootstrap`",
            err=True,
        )
        raise typer.Exit(1) from None
    except (aio_pika.exceptions.AMQPError, OSError, TimeoutError) as exc:
        typer.echo(f"not published: {describe_error(exc)}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{event_type} published: id {event.id}")


@cli.command()
def purchaser(email: Annotated[str, typer.Argument(help="the purchaser's e-mail address")]) -> None:
    """Look up one purchaser: orders, keys and consent, for support. Keys are not shown (recovery sends them)."""
    try:
        address = normalise_email(email)
    except ValueError:
        typer.echo("not a valid e-mail address", err=True)
        raise typer.Exit(2) from None

    async def work(conn: asyncpg.Connection) -> tuple[asyncpg.Record | None, list[store.OrderDetail | None]]:
        summary = await store.purchaser_summary(conn, address)
        orders = await store.orders_of(conn, address, 20)
        found = await store.order_details(conn, [row["id"] for row in orders])
        details = [found.get(row["id"]) for row in orders]
        return summary, details

    summary, details = _run(work)
    if summary is None:
        typer.echo("no purchaser with this address")
        raise typer.Exit(1)
    typer.echo(f"name: {summary['name']}\nlanguage: {summary['locale']}\nsince: {summary['created_at']:%Y-%m-%d}")
    typer.echo(f"orders: {summary['orders']}\nlicense keys: {summary['license_keys']}")
    typer.echo(f"news consent: {'yes' if summary['news_consent'] else 'no'}")
    typer.echo(f"upgrade notices: {'unsubscribed' if summary['upgrades_unsubscribed_at'] else 'yes'}")
    for detail in details:
        if detail is None:
            continue
        order = detail["order"]
        skus = ", ".join(f"{i['quantity']} x {i['sku']}" for i in detail["items"])
        typer.echo(
            f"  {order['placed_at']:%Y-%m-%d} {order['order_id']} {order['total']} {order['currency']}: {skus}"
            f" ({order['id']})"
        )


@cli.command()
def fanouts(limit: int = 20) -> None:
    """Progress of the latest upgrade and news fan-outs."""
    for row in _run(lambda conn: store.fanouts(conn, limit)):
        state = f"finished {row['finished_at']:%Y-%m-%d %H:%M:%S}" if row["finished_at"] else "running"
        typer.echo(f"{row['kind']}\t{row['key']}\t{row['notified']} notified in {row['batches']} batches\t{state}")


def main() -> None:
    configure_logging("orders-admin", from_environment("SPM_LOG_FORMAT", "console"))
    cli()
