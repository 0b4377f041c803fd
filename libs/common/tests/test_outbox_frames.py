"""The relay's AMQP frames, packed by hand for speed, are those pamqp would marshal for the same publish."""

from __future__ import annotations

import uuid

import aio_pika
import pamqp.frame
import pytest
from aiormq import spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from spm_common.envelope import CONTENT_TYPE
from spm_common.internals import publish_frames, user_id_property


@pytest.mark.parametrize(
    ("event_id", "body"),
    [
        (str(uuid.uuid4()), b'{"id": "x"}'),
        ("sự-kiện-" + str(uuid.uuid4()), "ý".encode() * 600),  # a non-ASCII id; over one body frame (1,000 here)
        (str(uuid.uuid4()), b""),  # no body frame at all
    ],
)
@pytest.mark.parametrize("user_id", [None, "spm_contact", "người_dùng"])  # the relay's login, where it says one
def test_publish_frames_are_byte_for_byte_what_pamqp_marshals(event_id: str, body: bytes, user_id: str | None) -> None:
    exchange, event_type, channel, max_content = "spm_test_1.events", "contact.message.received", 3, 1000
    properties = spec.Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT.value,
        message_id=event_id,
        message_type=event_type,
        user_id=user_id,
    )
    frames: list[pamqp.frame.FrameTypes] = [
        spec.Basic.Publish(exchange=exchange, routing_key=event_type),
        ContentHeader(properties=properties, body_size=len(body)),
        *(ContentBody(body[i : i + max_content]) for i in range(0, len(body), max_content)),
    ]
    expected = b"".join(pamqp.frame.marshal(frame, channel) for frame in frames)
    packed = publish_frames(channel, exchange, event_type, event_id, body, max_content, None, user_id_property(user_id))
    assert packed == expected


def test_a_name_over_255_bytes_is_refused_as_pamqp_refuses_it() -> None:
    with pytest.raises(TypeError):
        publish_frames(1, "spm.events", "x" * 256, str(uuid.uuid4()), b"{}", 1000)


def test_a_routing_key_other_than_the_type_is_what_pamqp_marshals_and_the_type_stays() -> None:
    exchange, event_type, routing_key, event_id, body = (
        "spm.events",
        "notification.sent",
        "notification.sent.contact",
        "e-1",
        b"{}",
    )
    properties = spec.Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT.value,
        message_id=event_id,
        message_type=event_type,
    )
    frames: list[pamqp.frame.FrameTypes] = [
        spec.Basic.Publish(exchange=exchange, routing_key=routing_key),
        ContentHeader(properties=properties, body_size=len(body)),
        ContentBody(body),
    ]
    expected = b"".join(pamqp.frame.marshal(frame, 1) for frame in frames)
    assert publish_frames(1, exchange, event_type, event_id, body, 1000, routing_key) == expected
