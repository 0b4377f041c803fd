"""Each service's AsyncAPI 3.0 document, written from its event registries so an integrator can code against it.

FastStream documents a subscriber by its handler's signature, and this system's consumer takes raw deliveries
(one queue, many event types), so FastStream shows consumed events as an empty payload. This module writes the
channels, operations and messages itself, from the payload models of each service's handlers (what it consumes:
the registry its consumer runs, spm_common.handlers) and of its `events.py` (`PUBLISHES`, optional
`ROUTING_KEYS` and `EXAMPLES`), and keeps only FastStream's `info` and `servers`.

Every message is a CloudEvent (structured JSON mode): the envelope is documented once, as the schema
`CloudEvent`, and each message's payload is that envelope with `type` fixed and `data` set to the event's own
payload schema. Keys in the document use only letters, digits, `-` and `_` (the AsyncAPI 3.0 key pattern as
strict validators apply it), so an event type's dots become `_` there; the routing key itself is the
channel's `address`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from spm_common.envelope import CONTENT_TYPE, CloudEvent

# Consumed payloads are documented as the service accepts them, published ones as it writes them.
Mode = Literal["validation", "serialization"]
ENVELOPE = "CloudEvent"
REF = "#/components/schemas/{model}"
# The audit keeps every event: its queue is bound with `#`, beyond the events it handles itself.
EVERY_EVENT = "#"


class Example(BaseModel):
    """An event as its publisher sends it: who (the CloudEvents `source`) and what (`data`)."""

    source: str
    data: dict[str, Any]


class Events(BaseModel):
    """What one service consumes (its handlers) and publishes (its `events.py`), with the routing keys that
    differ from the event type."""

    publishes: Mapping[str, type[BaseModel]] = {}
    consumes: Mapping[str, type[BaseModel]] = {}
    # event type -> routing key (may hold an AsyncAPI channel parameter, e.g. `notification.sent.{requester}`)
    routing_keys: Mapping[str, str] = {}
    examples: Mapping[str, Example] = {}
    # The service's queue also receives every other event (the audit).
    consumes_everything: bool = False


def key(event_type: str) -> str:
    return event_type.replace(".", "_")


def document(base: Mapping[str, Any], exchange: str, events: Events) -> dict[str, Any]:
    """`base` is FastStream's document (its `info` and `servers` are kept)."""
    models: list[tuple[type[BaseModel], Mode]] = [(CloudEvent, "validation")]
    models += [(m, "validation") for m in events.consumes.values()]
    models += [(m, "serialization") for m in events.publishes.values()]
    refs, schemas = models_json_schema(list(dict.fromkeys(models)), ref_template=REF)
    components: dict[str, Any] = dict(sorted(schemas.get("$defs", {}).items()))
    components[ENVELOPE]["description"] = (
        "The CloudEvents 1.0 envelope (structured JSON mode, content type application/cloudevents+json) every "
        "event travels in; AMQP properties: message_id = id, type = type, content_type, persistent delivery, "
        "and user_id = the publisher's RabbitMQ login (the broker validates it; the notifier takes a "
        "notification.requested from its source's own user only). `data` is the payload of the event `type` names."
    )

    def schema_of(model: type[BaseModel], mode: Mode) -> dict[str, Any]:
        return dict(refs[(model, mode)])

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    directions: list[tuple[str, Mapping[str, type[BaseModel]], Mode]] = [
        ("receive", events.consumes, "validation"),
        ("send", events.publishes, "serialization"),
    ]
    for action, registry, mode in directions:
        for event_type, model in sorted(registry.items()):
            message = key(event_type)
            payload = {
                "allOf": [
                    {"$ref": REF.format(model=ENVELOPE)},
                    {
                        "type": "object",
                        "properties": {"type": {"const": event_type}, "data": schema_of(model, mode)},
                        "required": ["data"],
                    },
                ]
            }
            entry: dict[str, Any] = {
                "name": event_type,
                "title": event_type,
                "contentType": CONTENT_TYPE,
                "payload": payload,
                "bindings": {"amqp": {"messageType": event_type, "bindingVersion": "0.3.0"}},
            }
            if model.__doc__:
                entry["summary"] = model.__doc__.strip().split("\n\n")[0].replace("\n", " ")
            if event_type in events.examples:
                entry["examples"] = [
                    {
                        "name": f"{key(event_type)}_example",
                        "payload": _example_envelope(event_type, events.examples[event_type]),
                    }
                ]
            messages[message] = entry
            channel = f"{action}_{message}"
            channels[channel] = _channel(exchange, events.routing_keys.get(event_type, event_type), message)
            operations[channel] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{channel}"},
                "messages": [{"$ref": f"#/channels/{channel}/messages/{message}"}],
                "summary": f"{'Consumes' if action == 'receive' else 'Publishes'} {event_type}",
            }
    if events.consumes_everything:
        messages["any_event"] = {
            "name": "any event",
            "title": "any event",
            "contentType": CONTENT_TYPE,
            "summary": "Every event on the exchange, whatever its type",
            "payload": {"$ref": REF.format(model=ENVELOPE)},
        }
        channels["receive_every_event"] = _channel(exchange, EVERY_EVENT, "any_event")
        operations["receive_every_event"] = {
            "action": "receive",
            "channel": {"$ref": "#/channels/receive_every_event"},
            "messages": [{"$ref": "#/channels/receive_every_event/messages/any_event"}],
            "summary": "Consumes every event (routing key #)",
        }
    return {
        "asyncapi": "3.0.0",
        "info": base["info"],
        "defaultContentType": CONTENT_TYPE,
        "servers": base["servers"],
        "channels": channels,
        "operations": operations,
        "components": {"schemas": components, "messages": messages},
    }


def _channel(exchange: str, address: str, message: str) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "address": address,
        "messages": {message: {"$ref": f"#/components/messages/{message}"}},
        "bindings": {
            "amqp": {
                "is": "routingKey",
                "exchange": {"name": exchange, "type": "topic", "durable": True, "autoDelete": False, "vhost": "/"},
                "bindingVersion": "0.3.0",
            }
        },
    }
    if "{requester}" in address:
        channel["parameters"] = {
            "requester": {"description": "the service that asked for the e-mail (its CloudEvents source urn:spm:…)"}
        }
    return channel


def _example_envelope(event_type: str, example: Example) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "type": event_type,
        "source": example.source,
        "time": "2026-11-29T04:00:00Z",
        "datacontenttype": "application/json",
        "data": example.data,
    }
