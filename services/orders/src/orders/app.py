"""Wiring of the orders service."""

from fastapi import FastAPI
from spm_common.http import create_app
from spm_common.runtime import Runtime
from spm_common.serve import serve
from spm_common.settings import load

from orders.settings import MIGRATIONS, Settings


def build(settings: Settings) -> Runtime:
    return Runtime(settings, migrations=MIGRATIONS, description=__doc__ or "")


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or load(Settings)
    return create_app(
        build(settings),
        title="SPM orders",
        description="Orders in, license keys out, purchaser requests and upgrade fan-out.",
    )


def main() -> None:
    settings = load(Settings)
    serve(create(settings), settings)
