"""The privacy policy's versions: the texts shipped with the service, and publishing a version.

Each shipped version is a folder `v<N>/` holding `vi.txt` and `en.txt`, the policy as the company publishes
it. On start the service records every shipped version it does not have yet (replicas may race: the
insert decides) and announces it; an operator adds a version between releases with `spm-contact-admin`.
Shipped and operator versions share one numbering. A version applies to messages sent from its
`effective_from`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from spm_common import outbox
from spm_common.db import Connection
from spm_common.envelope import new_event
from spm_common.logging import get_logger

from contact import store
from contact.events import POLICY_PUBLISHED, PrivacyPolicyPublished

LANGUAGES = ("vi", "en")
SHIPPED = Path(__file__).parent
log = get_logger(__name__)


@dataclass(frozen=True)
class PolicyTexts:
    vi: str
    en: str

    def __post_init__(self) -> None:
        for language in LANGUAGES:
            if not getattr(self, language).strip():
                raise ValueError(f"the {language} text is empty")

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for language in LANGUAGES:
            digest.update(f"{language}\0{getattr(self, language)}\0".encode())
        return digest.hexdigest()

    @classmethod
    def read(cls, vi: Path, en: Path) -> PolicyTexts:
        return cls(vi=vi.read_text(encoding="utf-8"), en=en.read_text(encoding="utf-8"))


def shipped(directory: Path = SHIPPED) -> list[tuple[int, PolicyTexts]]:
    versions = []
    for folder in directory.glob("v*"):
        if folder.is_dir() and folder.name[1:].isdigit():
            versions.append((int(folder.name[1:]), PolicyTexts.read(folder / "vi.txt", folder / "en.txt")))
    return sorted(versions, key=lambda item: item[0])


async def publish(
    conn: Connection,
    texts: PolicyTexts,
    source: str,
    *,
    version: int | None = None,
    effective_from: datetime | None = None,
) -> int | None:
    """Record a version and announce it, in the caller's transaction. Without `version`, the next number.
    Returns the version, or None where that version already exists (nothing is changed then)."""
    if version is None:
        version = await store.next_policy_version(conn)
    effective_from = effective_from or datetime.now(UTC)
    published_at = await store.insert_policy(conn, version, texts.vi, texts.en, texts.sha256, effective_from)
    if published_at is None:
        existing = await store.policy_digest(conn, version)
        if existing != texts.sha256:
            log.warning(
                "a privacy policy version differs from the one recorded; keeping the recorded one", version=version
            )
        return None
    await outbox.add(
        conn,
        new_event(
            POLICY_PUBLISHED,
            source,
            PrivacyPolicyPublished(
                version=version,
                effective_from=effective_from,
                published_at=published_at,
                languages=list(LANGUAGES),
                sha256=texts.sha256,
            ),
        ),
    )
    log.info("privacy policy version published", version=version)
    return version


async def publish_shipped(conn: Connection, source: str, directory: Path = SHIPPED) -> list[int]:
    """Record and announce every shipped version not recorded yet."""
    published = []
    for version, texts in shipped(directory):
        async with conn.transaction():
            if await publish(conn, texts, source, version=version) is not None:
                published.append(version)
    return published
