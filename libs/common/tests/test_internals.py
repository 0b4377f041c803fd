"""The libraries still have what spm_common.internals reaches past their public API for.

These fail, naming what is gone, after an upgrade the shortcuts were not written for; the behaviour itself is
held by test_outbox_frames.py (the frames), test_outbox.py (batched publishes) and test_consumer.py.
"""

from __future__ import annotations

import dataclasses
import inspect
import tomllib
from importlib.metadata import version
from pathlib import Path

import aio_pika
import pytest
from aiormq.abc import ChannelFrame
from faststream.rabbit import RabbitBroker
from faststream.rabbit.subscriber.usecase import RabbitSubscriber
from packaging.requirements import Requirement
from packaging.version import Version
from spm_common import internals

PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"


@pytest.mark.parametrize("package", sorted(internals.WRITTEN_FOR))
def test_the_installed_version_is_one_the_internals_were_written_for(package: str) -> None:
    installed = Version(version(package))
    low, high = Version(internals.WRITTEN_FOR[package]), Version(internals.BELOW[package])
    assert low <= installed < high, (
        f"{package} {installed} is installed, but spm_common.internals was written for {low} (up to {high}, "
        "excluded): read what it uses in the new release, then move WRITTEN_FOR/BELOW and the pyproject bounds"
    )


@pytest.mark.parametrize("package", sorted(internals.WRITTEN_FOR))
def test_the_package_bounds_are_those_of_the_internals(package: str) -> None:
    declared = {
        (r := Requirement(line)).name: r.specifier
        for line in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    }
    assert package in declared, f"spm-common does not declare {package}, which spm_common.internals uses"
    expected = f"<{internals.BELOW[package]},>={internals.WRITTEN_FOR[package]}"
    assert str(declared[package]) == expected, f"libs/common/pyproject.toml: {package}{declared[package]}"


async def test_an_open_aiormq_channel_has_what_write_publishes_uses(
    amqp: aio_pika.abc.AbstractRobustConnection,
) -> None:
    channel = await amqp.channel(publisher_confirms=True)
    try:
        underlay = await channel.get_underlay_channel()
        missing = internals.missing_channel_attributes(underlay)
        assert not missing, f"aiormq's Channel no longer has {missing}: spm_common.internals.write_publishes needs them"
        state = underlay  # the types write_publishes relies on, not only the names
        assert isinstance(state.delivery_tag, int)  # type: ignore[attr-defined]
        assert hasattr(state.confirmations, "__setitem__")  # type: ignore[attr-defined]
        assert hasattr(state.write_queue, "put")  # type: ignore[attr-defined]
        assert state.max_content_size > 0  # type: ignore[attr-defined]
    finally:
        await channel.close()
    fields = {f.name for f in dataclasses.fields(ChannelFrame)}
    assert {"payload", "should_close"} <= fields, f"aiormq's ChannelFrame has fields {sorted(fields)}"


def test_a_faststream_subscriber_takes_its_delivery_callback_from_the_replaced_attribute() -> None:
    # RabbitSubscriber.start passes `self.consume` to aio-pika's queue.consume: replacing the attribute on the
    # instance is what routes the deliveries; if start stops reading it, the consumer would silently fall
    # back to FastStream's pipeline and its do-nothing documented handler.
    assert "self.consume," in inspect.getsource(RabbitSubscriber.start), (
        "FastStream's RabbitSubscriber.start no longer hands self.consume to aio-pika: see spm_common.internals"
    )

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        return None

    subscriber = RabbitBroker().subscriber("spm-internals-check")
    internals.deliver_directly(subscriber, on_message)
    assert subscriber.consume is on_message
