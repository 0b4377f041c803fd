"""The checkers: after a scenario settles, count what became of every item of work a client saw accepted,
the way Jepsen's checkers do. Lost: accepted, but not there. Duplicated: there more than once. An item
whose client got no answer may be there or not, but never twice.

- orders: each accepted order id recorded once in the orders schema;
- contact messages: each accepted message stored once;
- page views: each accepted view counted once;
- e-mail: each expected e-mail (contact acknowledgement, order confirmation, upgrade notice) received once
  by the SMTP server. A second copy with the same Message-ID is the notifier's documented crash window
  (a crash between the server's 250 and the commit of that outcome): counted apart, not as a duplicate;
- audit: every event of the scenario (each outbox row of every service, each event the shop published) in
  the trail once, no entry of the whole trail twice, and the chain verifying from its first entry.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx
from spm_common.settings import SERVICES
from spm_common.testing.smtp import SmtpServer

from .harness import OPERATOR, System
from .work import SHOP, Workload

MESSAGE_ID = re.compile(rb"^Message-ID:\s*(\S+)", re.MULTILINE | re.IGNORECASE)
CONTACT_ACK, ORDER_CONFIRMATION, UPGRADE_NOTICE = "contact-ack", "order-confirmation", "upgrade-notice"


class MailIndex:
    """Every e-mail the SMTP server accepted, by (recipient, kind) and by (recipient, kind, Message-ID),
    indexed as it arrives (a scenario looks many times while it settles)."""

    def __init__(self, smtp: SmtpServer) -> None:
        self.smtp = smtp
        self.by_kind: Counter[tuple[str, str]] = Counter()
        self.by_message_id: Counter[tuple[str, str, bytes]] = Counter()
        self._seen = 0

    def update(self) -> None:
        with self.smtp.lock:
            new = self.smtp.received[self._seen :]
            self._seen = len(self.smtp.received)
        for mail in new:
            head = mail.raw.split(b"\r\n\r\n", 1)[0]
            found = MESSAGE_ID.search(head)
            message_id = found.group(1) if found else b""
            for rcpt in mail.rcpt_tos:
                kind = kind_of(rcpt, head)
                self.by_kind[(rcpt, kind)] += 1
                self.by_message_id[(rcpt, kind, message_id)] += 1


def kind_of(rcpt: str, head: bytes) -> str:
    """What an e-mail to a scenario's address is: contact addresses end `-c<n>@`, purchasers' `-o<n>@`, and
    only the upgrade notice carries List-Unsubscribe."""
    if re.search(r"-c\d+@", rcpt):
        return CONTACT_ACK
    return UPGRADE_NOTICE if b"\nList-Unsubscribe:" in head else ORDER_CONFIRMATION


@dataclass
class Counts:
    """Lost and duplicated per check, and the SMTP crash-window copies apart."""

    lost: Counter[str] = field(default_factory=Counter)
    duplicated: Counter[str] = field(default_factory=Counter)
    window: int = 0
    events: int = 0  # events looked for in the audit trail
    problems: list[str] = field(default_factory=list)


def expected_mail(work: Workload) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(e-mails that must arrive once, e-mails that may arrive at most once: their order's fate is unknown)."""
    wanted = {(a, CONTACT_ACK) for a in work.contact.accepted}
    wanted |= {(a, ORDER_CONFIRMATION) for a in work.orders.accepted.values()}
    maybe = {(a, CONTACT_ACK) for a in work.contact.unknown}
    maybe |= {(a, ORDER_CONFIRMATION) for a in work.orders.unknown.values()}
    if work.release_event_id:
        wanted |= {(a, UPGRADE_NOTICE) for a in work.orders.upgrade_buyers}
        maybe |= {(a, UPGRADE_NOTICE) for a in work.orders.unknown.values()}
    return wanted, maybe


def mail_missing(index: MailIndex, work: Workload) -> int:
    index.update()
    wanted, _ = expected_mail(work)
    return sum(1 for key in wanted if index.by_kind[key] == 0)


def count_mail(index: MailIndex, work: Workload, counts: Counts) -> None:
    index.update()
    wanted, maybe = expected_mail(work)
    prefix = f"fault-{work.slug}-"
    for (rcpt, kind), n in index.by_kind.items():
        if not rcpt.startswith(prefix):
            continue
        if (rcpt, kind) not in wanted and (rcpt, kind) not in maybe:
            counts.duplicated[f"mail {kind} never asked for"] += n
            continue
        same_id = sum(c - 1 for (r, k, _), c in index.by_message_id.items() if (r, k) == (rcpt, kind) and c > 1)
        counts.window += same_id
        counts.duplicated[f"mail {kind}"] += n - 1 - same_id
    for key in wanted:
        if index.by_kind[key] == 0:
            counts.lost[f"mail {key[1]}"] += 1


def _tally(
    counts: Counts, what: str, found: dict[str, int], accepted: Iterable[str], unknown: Iterable[str] = ()
) -> None:
    for item in accepted:
        n = found.get(item, 0)
        if n == 0:
            counts.lost[what] += 1
        elif n > 1:
            counts.duplicated[what] += n - 1
    for item in unknown:
        if found.get(item, 0) > 1:
            counts.duplicated[what] += found[item] - 1


async def outbox_watermarks(system: System) -> dict[str, int]:
    conn = await system.world.admin()
    try:
        return {s: await conn.fetchval(f"SELECT coalesce(max(id), 0) FROM {s}.outbox") for s in SERVICES}
    finally:
        await conn.close()


async def expected_events(system: System, work: Workload, since: dict[str, int]) -> list[tuple[str, str]]:
    """(source, id) of every event of the scenario: each service's outbox rows since the scenario began,
    and the events the shop published."""
    conn = await system.world.admin()
    try:
        events = []
        for schema, last in since.items():
            rows = await conn.fetch(
                f"SELECT convert_from(body, 'UTF8')::json->>'source' AS source, event_id FROM {schema}.outbox"
                " WHERE id > $1",
                last,
            )
            events += [(r["source"], r["event_id"]) for r in rows]
    finally:
        await conn.close()
    events += [(SHOP, i) for i in work.orders.event_ids]
    if work.release_event_id:
        events.append((SHOP, work.release_event_id))
    return events


async def audit_counts(system: System, events: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    conn = await system.world.admin()
    try:
        rows = await conn.fetch(
            "SELECT e.source, e.event_id, count(a.seq) AS n FROM unnest($1::text[], $2::text[]) e(source, event_id)"
            " LEFT JOIN audit.entries a USING (source, event_id) GROUP BY 1, 2",
            [s for s, _ in events],
            [i for _, i in events],
        )
    finally:
        await conn.close()
    return {(r["source"], r["event_id"]): r["n"] for r in rows}


async def audit_missing(system: System, work: Workload, since: dict[str, int]) -> int:
    found = await audit_counts(system, await expected_events(system, work, since))
    return sum(1 for n in found.values() if n == 0)


async def count_everything(system: System, index: MailIndex, work: Workload, since: dict[str, int]) -> Counts:
    counts = Counts()
    conn = await system.world.admin()
    try:
        orders = await conn.fetch(
            "SELECT order_id, count(*) AS n FROM orders.orders WHERE order_id LIKE $1 GROUP BY order_id",
            f"FT-{work.slug}-%",
        )
        messages = await conn.fetch(
            "SELECT email, count(*) AS n FROM contact.messages WHERE email = ANY($1) GROUP BY email",
            work.contact.accepted + work.contact.unknown,
        )
        views = await conn.fetch(
            "SELECT path, count(*) AS n FROM audit.pageviews WHERE path LIKE $1 GROUP BY path",
            f"/fault/{work.slug}/%",
        )
        trail_twice = await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM audit.entries GROUP BY source, event_id HAVING count(*) > 1) t"
        )
    finally:
        await conn.close()
    _tally(counts, "orders", {r["order_id"]: r["n"] for r in orders}, work.orders.accepted, work.orders.unknown)
    found = {r["email"]: r["n"] for r in messages}
    _tally(counts, "contact messages", found, work.contact.accepted, work.contact.unknown)
    _tally(counts, "page views", {r["path"]: r["n"] for r in views}, work.views.accepted, work.views.unknown)
    count_mail(index, work, counts)
    audited = await audit_counts(system, await expected_events(system, work, since))
    counts.events = len(audited)
    counts.lost["audit entries"] += sum(1 for n in audited.values() if n == 0)
    counts.duplicated["audit entries"] += sum(n - 1 for n in audited.values() if n > 1)
    counts.duplicated["audit entries, whole trail"] += trail_twice
    if work.orders.refused:
        counts.problems.append(f"the webhook refused orders: {list(work.orders.refused.items())[:3]}")
    async with httpx.AsyncClient(timeout=30) as client:
        verified = (await client.get(f"{system.url('audit')}/v1/audit/verify?full=true", headers=OPERATOR)).json()
    if not verified.get("ok"):
        counts.problems.append(f"the audit chain does not verify: {verified}")
    return counts


async def unhealthy(system: System) -> list[str]:
    """Services that are not running and ready (nothing restarted them, nobody should have to)."""
    down = []
    async with httpx.AsyncClient(timeout=5) as client:
        for name, service in system.services.items():
            try:
                ready = (await client.get(f"{service.url}/readyz")).status_code == 200
            except httpx.HTTPError:
                ready = False
            if not ready or service.process is None or service.process.poll() is not None:
                down.append(name)
    return down


@dataclass
class Row:
    scenario: str
    sent: dict[str, int]
    lost: int
    duplicated: int
    window_duplicates: int
    dead_lettered: int
    recovery_seconds: float
    details: str = ""


REPORT: list[Row] = []


def sent_of(work: Workload, counts: Counts) -> dict[str, int]:
    """Accepted work per kind: contact messages, orders (of which through the webhook), page views, upgrade
    notices the fan-out owes, and the events all of it caused (each looked for in the audit trail)."""
    return {
        "messages": len(work.contact.accepted),
        "orders": len(work.orders.accepted),
        "webhook": work.orders.via["webhook"],
        "views": len(work.views.accepted),
        "upgrade": len(work.orders.upgrade_buyers) if work.release_event_id else 0,
        "events": counts.events,
    }


def report_table() -> str:
    header = (
        f"{'scenario':<30} {'msgs':>4} {'orders':>6} {'(hook)':>6} {'views':>5} {'upgr':>4} {'events':>6} "
        f"{'lost':>4} {'dup':>4} {'smtp-window':>11} {'dead-lettered':>13} {'recovery s':>10}"
    )
    lines = [header, "-" * len(header)]
    for r in REPORT:
        s = r.sent
        lines.append(
            f"{r.scenario:<30} {s['messages']:>4} {s['orders']:>6} {s['webhook']:>6} {s['views']:>5} "
            f"{s['upgrade']:>4} {s['events']:>6} {r.lost:>4} {r.duplicated:>4} {r.window_duplicates:>11} {r.dead_lettered:>13} "
            f"{r.recovery_seconds:>10.1f}"
        )
    notes = [f"  {r.scenario}: {r.details}" for r in REPORT if r.details]
    if notes:
        lines += ["", *notes]
    lines += [
        "",
        "Work the clients saw accepted: contact messages, orders (of which through the webhook), page views, upgrade",
        "notices owed by the fan-out, and the events all of it caused (each looked for in the audit trail). lost and",
        "dup count every check: orders, messages, views, e-mails, audit entries. smtp-window: a copy with the same",
        "Message-ID, sent again after a crash between the server's 250 and the commit of that outcome (the",
        "notifier's documented window; a mail system drops it); reported, not counted as a duplicate. recovery:",
        "from the end of the fault (a killed service started again) until every count settled; work goes on for",
        "the first 2 s of it.",
    ]
    return "\n".join(lines)
