"""Wiring of the contact service: settings, runtime, routes."""

from fastapi import FastAPI
from spm_common.http import create_app
from spm_common.runtime import Runtime
from spm_common.serve import serve
from spm_common.settings import load

from contact.api import router
from contact.events import PUBLISHES
from contact.settings import MIGRATIONS, Settings


def build(settings: Settings) -> Runtime:
    return Runtime(settings, migrations=MIGRATIONS, publishes=PUBLISHES, description=__doc__ or "")


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or load(Settings)
    runtime = build(settings)
    return create_app(
        runtime,
        title="SPM contact",
        description="The website's contact form and the operators' inbox.",
        routers=[router],
    )


def main() -> None:
    settings = load(Settings)
    serve(create(settings), settings)
