"""Events the audit service consumes (every event on the exchange, page views from the log shipper, and what
operators see and do in the console) and the one it publishes."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from spm_common.allowlist import FieldTree
from spm_common.privacy import PRIVACY_REQUEST_COMPLETED, PrivacyRequestCompleted
from spm_common.retention import RETENTION_PURGED, RetentionPurged

PAGE_VIEWED = "site.page.viewed"
OPERATOR_ACTION = "operator.action"


class PageViewed(BaseModel):
    """One line of the web server's access log, shipped as an event (routing key `site.page.viewed`).

    It carries personal data (the client's address) until the audit service hashes it: the address and the
    user agent are never stored, only the visitor hash made from them with the day's salt. `viewed_at`
    defaults to the event's `time`.
    """

    model_config = ConfigDict(extra="ignore", str_max_length=4096)

    url: str = Field(min_length=1, description="the page as requested: absolute URL or path")
    referrer: str | None = None
    client_address: str = Field(min_length=2, max_length=100, description="IPv4 or IPv6 address of the client")
    user_agent: str | None = Field(default=None, max_length=1000)
    viewed_at: AwareDatetime | None = None


class OperatorAction(BaseModel):
    """An operator of the console viewed a person's data or acted on it (CONTRACT section 7). Like every event
    it is pseudonymised in the trail: an address in `operator` or `target` becomes a reference, and the
    person an address in `target` names is the entry's subject, so the trail finds it by that address."""

    model_config = ConfigDict(extra="ignore", str_max_length=4096)

    operator: str
    action: str
    target: str
    at: AwareDatetime


CONSUMES = {PAGE_VIEWED: PageViewed, OPERATOR_ACTION: OperatorAction}
# Its answer to each confirmed privacy request (audit.privacy_answer); everything else it only records.
PUBLISHES: dict[str, type[BaseModel]] = {
    PRIVACY_REQUEST_COMPLETED: PrivacyRequestCompleted,
    # What its retention jobs removed, counts only (spm_common.retention).
    RETENTION_PURGED: RetentionPurged,
}

# The payload fields the trail keeps of each event type (and nothing of a type not listed), generated from
# the payload models of every service by `spm-admin docs` (`make docs`), which a test holds current.
TRAIL_FIELDS: dict[str, FieldTree] = json.loads((Path(__file__).parent / "trail_fields.json").read_text("utf-8"))

# Its queue is bound with `#`: every event on the exchange reaches the trail, whatever its type.
CONSUMES_EVERYTHING = True
