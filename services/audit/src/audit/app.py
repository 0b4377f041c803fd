"""Wiring of the audit service: every event on the exchange, appended to the hash-chained trail."""

from fastapi import FastAPI
from spm_common import cards
from spm_common.consumer import CATCH_ALL
from spm_common.envelope import CloudEvent
from spm_common.http import create_app
from spm_common.runtime import Runtime
from spm_common.serve import serve
from spm_common.settings import load

from audit import store
from audit.settings import MIGRATIONS, Settings
from audit.trail import make_entry


def build(settings: Settings) -> Runtime:
    key = settings.subject_key()

    async def on_event(conn, event: CloudEvent) -> None:  # type: ignore[no-untyped-def]
        seq, head = await store.lock_head(conn)
        await store.append(conn, [make_entry(event, seq + 1, head, key)])

    # Every event type reaches this queue, order.placed from the shop too: card data is removed on arrival.
    return Runtime(
        settings,
        migrations=MIGRATIONS,
        handlers={CATCH_ALL: on_event},
        scrub=cards.scrub_body,
        description=__doc__ or "",
    )


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or load(Settings)
    return create_app(
        build(settings),
        title="SPM audit",
        description="A tamper-evident trail of every event, and page-view trends that know no one.",
    )


def main() -> None:
    settings = load(Settings)
    serve(create(settings), settings)
