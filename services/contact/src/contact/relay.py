"""The contact service's outbox relay as a process of its own, for SPM_CONTACT_OUTBOX_RELAY=separate.

The web process then stores messages with their events and this one publishes them (`spm-contact-relay`, or
`python -m contact.relay`). It serves the probes and the relay's metrics on SPM_CONTACT_RELAY_PORT. Several
may run, beside replicas that run their relay in-process too: each claims rows with FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

from fastapi import FastAPI
from spm_common.http import create_app
from spm_common.runtime import Runtime
from spm_common.serve import serve
from spm_common.settings import load

from contact.settings import MIGRATIONS, Settings


def create(settings: Settings) -> FastAPI:
    # A Runtime with no handlers and no background jobs: the pool, the migrations, the broker and the relay.
    runtime = Runtime(settings, migrations=MIGRATIONS, description="The contact service's outbox relay.")
    return create_app(runtime, title="SPM contact relay", description="Publishes the contact service's outbox.")


def main() -> None:
    settings = load(Settings)
    serve(create(settings), settings.model_copy(update={"contact_port": settings.contact_relay_port}))


if __name__ == "__main__":
    main()
