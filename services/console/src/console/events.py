"""Events the console publishes: every view of a person's data and every action, for the audit trail."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field
from spm_common.retention import RETENTION_PURGED, RetentionPurged

OPERATOR_ACTION = "operator.action"


class OperatorAction(BaseModel):
    """An operator looked at a person's data or acted on it. The audit service pseudonymises any address in
    `operator` and `target`."""

    operator: str = Field(description="the operator's account (e-mail address)")
    action: str = Field(description="what was done, e.g. message.viewed, message.replied, message.closed")
    target: str = Field(description="what it was done to, e.g. contact.message:<id>")
    at: datetime


PUBLISHES: dict[str, type[BaseModel]] = {
    OPERATOR_ACTION: OperatorAction,
    # What its outbox relay deleted, a count (spm_common.retention).
    RETENTION_PURGED: RetentionPurged,
}
