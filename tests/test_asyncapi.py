"""The AsyncAPI documents are valid AsyncAPI 3.0 and say, for every event, what an integrator must send or
will receive: the CloudEvents envelope once, each payload in full, and examples that match their schema."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest
import yaml
from asyncapi3.models.asyncapi import AsyncAPI3
from spm_common.admin import generated_documents, service_events

DOCUMENTS = {service: yaml.safe_load(asyncapi) for service, asyncapi, _ in generated_documents()}


def resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


@pytest.mark.parametrize("service", sorted(DOCUMENTS))
def test_each_document_is_valid_asyncapi_3_and_every_reference_resolves(service: str) -> None:
    document = DOCUMENTS[service]
    AsyncAPI3.model_validate(document)  # raises on anything the AsyncAPI 3.0 specification does not allow
    for ref in refs(document):
        assert resolve(document, ref) is not None, ref


@pytest.mark.parametrize("service", sorted(DOCUMENTS))
def test_every_consumed_and_published_event_has_its_payload_in_a_cloudevent(service: str) -> None:
    document, events = DOCUMENTS[service], service_events(service)
    messages = {m["name"]: m for m in document["components"]["messages"].values()}
    assert set(events.consumes) | set(events.publishes) <= set(messages)
    assert "EmptyPayload" not in document["components"]["schemas"]
    for event_type in {*events.consumes, *events.publishes}:
        envelope, own = messages[event_type]["payload"]["allOf"]
        assert envelope == {"$ref": "#/components/schemas/CloudEvent"}
        assert own["properties"]["type"] == {"const": event_type}
        data = resolve(document, own["properties"]["data"]["$ref"])
        assert data["type"] == "object" and data["properties"], event_type
    for action, registry in (("receive", events.consumes), ("send", events.publishes)):
        documented = {
            resolve(document, operation["messages"][0]["$ref"])["$ref"].rsplit("/", 1)[1]
            for operation in document["operations"].values()
            if operation["action"] == action
        }
        assert {name.replace(".", "_") for name in registry} <= documented


def test_the_shop_and_release_events_carry_examples_that_match_their_schema() -> None:
    document = DOCUMENTS["orders"]
    for event_type in ("order.placed", "upgrade.released", "product.announced"):
        message = document["components"]["messages"][event_type.replace(".", "_")]
        [example] = message["examples"]
        # The payload's references point into the document's components, so the schema carries them along.
        schema = {**message["payload"], "components": document["components"]}
        jsonschema_rs.validate(schema, example["payload"])
        with pytest.raises(jsonschema_rs.ValidationError):
            jsonschema_rs.validate(schema, {**example["payload"], "data": {}})
