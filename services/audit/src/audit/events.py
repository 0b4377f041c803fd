"""Events the audit service consumes of its own (page views from the log shipper; beyond them it keeps every
event on the exchange, audit.handlers) and the ones it publishes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from spm_common.allowlist import FieldTree
from spm_common.envelope import Payload
from spm_common.privacy import PRIVACY_REQUEST_COMPLETED, PrivacyRequestCompleted
from spm_common.retention import RETENTION_PURGED, RetentionPurged

PAGE_VIEWED = "site.page.viewed"
OPERATOR_ACTION = "operator.action"


class PageViewed(Payload):
    """One line of the web server's access log, shipped as an event (routing key `site.page.viewed`).

    It carries personal data (the client's address) until the audit service hashes it: the address and the
    user agent are never stored, only the visitor hash made from them with the day's salt. `viewed_at`
    defaults to the event's `time`.
    """

    model_config = ConfigDict(extra="ignore", str_max_length=4096)
    event_type: ClassVar[str] = PAGE_VIEWED

    url: str = Field(min_length=1, description="the page as requested: absolute URL or path")
    referrer: str | None = None
    client_address: str = Field(min_length=2, max_length=100, description="IPv4 or IPv6 address of the client")
    user_agent: str | None = Field(default=None, max_length=1000)
    viewed_at: AwareDatetime | None = None


# Its answer to each confirmed privacy request (audit.privacy_answer); everything else it only records.
PUBLISHES: dict[str, type[BaseModel]] = {
    PRIVACY_REQUEST_COMPLETED: PrivacyRequestCompleted,
    # What its retention jobs removed, counts only (spm_common.retention).
    RETENTION_PURGED: RetentionPurged,
}

# The payload fields the trail keeps of each event type (and nothing of a type not listed), generated from
# the payload models of every service by `spm-admin docs` (`make docs`), which a test holds current.
TRAIL_FIELDS: dict[str, FieldTree] = json.loads((Path(__file__).parent / "trail_fields.json").read_text("utf-8"))
