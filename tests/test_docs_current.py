"""The AsyncAPI and OpenAPI documents in docs/ are the ones the code generates (`make docs` rebuilds them)."""

import re
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


ROOT = DOCS.parent


def test_troubleshooting_names_every_background_loop() -> None:
    # A loop's warnings and gauges carry its name; an operator looks it up in README's Troubleshooting.
    sources = [*(ROOT / "libs/common/src").rglob("*.py"), *ROOT.glob("services/*/src/**/*.py")]
    loops = {
        match
        for path in sources
        for match in re.findall(r"health\.loop\(\s*\"([\w-]+)\"", path.read_text(encoding="utf-8"))
    }
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    troubleshooting = readme[readme.index("## Troubleshooting") :]
    assert len(loops) >= 15, loops
    missing = sorted(loop for loop in loops if f"`{loop}`" not in troubleshooting)
    assert not missing, f"README's Troubleshooting does not name the loops {missing}"
