"""The AsyncAPI and OpenAPI documents in docs/ are the ones the code generates (`make docs` rebuilds them)."""

from pathlib import Path

import pytest
from spm_common.admin import generated_documents, trail_fields_document

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize(("service", "asyncapi", "openapi"), generated_documents())
def test_generated_documents_are_committed(service: str, asyncapi: str, openapi: str) -> None:
    assert (DOCS / "asyncapi" / f"{service}.yaml").read_text(encoding="utf-8") == asyncapi, "run `make docs`"
    assert (DOCS / "openapi" / f"{service}.json").read_text(encoding="utf-8") == openapi, "run `make docs`"


def test_the_audit_trails_allow_list_is_generated_from_the_payload_models() -> None:
    path, document = trail_fields_document()
    assert path.read_text(encoding="utf-8") == document, "run `make docs`"
