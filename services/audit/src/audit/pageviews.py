"""Page views that know no one: a normalised path, the referrer's host, the time and a daily visitor hash.

The client's address lives only in memory, until its network (/24, /48) is hashed with the user agent and the
day's salt. The salt is random, kept in the audit schema, made for each day and deleted after two, so
yesterday's hashes cannot be recomputed from an address once it is gone; the day's views are then replaced by
its aggregates, hashes gone. Known bots are not counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import posixpath
import re
import secrets
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
from prometheus_client import Counter
from pydantic import ValidationError
from spm_common import cards
from spm_common.clientaddr import Address, network_of, parse_ip
from spm_common.db import Connection
from spm_common.handlers import Meta, Received
from spm_common.health import LoopHealth
from spm_common.logging import get_logger
from spm_common.redaction import EMAIL_RE, IPV4_RE, IPV6_CANDIDATE_RE, describe_error

from audit import store
from audit.events import PageViewed

log = get_logger(__name__)

PAGE_VIEWS = Counter("spm_audit_page_views_total", "Page views received, by outcome", ["channel", "outcome"])

MAX_PATH = 512
MAX_HOST = 253
HIDDEN = "[hidden]"
SALT_DAYS_KEPT = 2  # today's salt and yesterday's (late log lines); older ones are deleted
# What the usual robots' user agents contain, looked for in the case-folded user agent: a few substring tests
# cost a tenth of one case-insensitive regular expression with as many alternatives.
BOT_WORDS = (
    "crawl",
    "spider",
    "slurp",
    "archiver",
    "scrap",
    "curl/",
    "wget/",
    "python-",
    "httpx",
    "aiohttp",
    "go-http-client",
    "java/",
    "okhttp",
    "libwww",
    "headless",
    "phantomjs",
    "lighthouse",
    "pingdom",
    "uptime",
    "monitor",
    "facebookexternalhit",
    "embedly",
    "preview",
    "feedfetcher",
    "mediapartners",
    "validator",
)
BOT_END_RE = re.compile(r"bot\b")  # "Googlebot/2.1", "bingbot)", "a-bot": a name ending in "bot"
# A path the full normalisation leaves as it is, but for a trailing slash: absolute, ASCII letters, digits, "-",
# "_" and "~" only (no "%", no dot segment, no "//", nothing an e-mail address or an IP address needs).
PLAIN_PATH_RE = re.compile(r"(?:/[A-Za-z0-9_~-]+)*/?")
# What a plain path may still hide, and so sends it the full way: 13 digits (a card number, with or without
# dashes) or three groups of 4-8 letters and digits each followed by a dash (a license key's start).
PLAIN_SUSPECT_RE = re.compile(r"\d(?:-?\d){12}|[A-Za-z0-9]{4,8}-[A-Za-z0-9]{4,8}-[A-Za-z0-9]{4,8}-")
# A license key as orders makes them (5 groups of 5), or as other shops do (4-8 groups of 4-8): in any case,
# hidden when it holds a digit or is in capitals, so that a slug of words ("word-list-from-home-page") stays.
LICENSE_KEY_RE = re.compile(r"(?<![A-Za-z0-9-])[A-Za-z0-9]{4,8}(?:-[A-Za-z0-9]{4,8}){3,7}(?![A-Za-z0-9-])")
DIGIT_RE = re.compile(r"\d")
# Rounds of percent-decoding at most: `%2540` is "@" encoded twice; a third round finds what a third hid.
DECODE_ROUNDS = 3
# The visitor hash covers the client's network, not its address.
VISITOR_IPV4_PREFIX = 24
VISITOR_IPV6_PREFIX = 48


def is_bot(user_agent: str | None) -> bool:
    """An empty user agent or one of the usual robots' names (a short list: the big crawlers say who they are)."""
    agent = (user_agent or "").strip().casefold()
    if not agent:
        return True
    for word in BOT_WORDS:
        if word in agent:
            return True
    return "bot" in agent and BOT_END_RE.search(agent) is not None


def _hide_license_key(match: re.Match[str]) -> str:
    key = match.group(0)
    return HIDDEN if key.isupper() or DIGIT_RE.search(key) else key


def _hide_ipv6(match: re.Match[str]) -> str:
    try:
        ipaddress.IPv6Address(match.group(0).split("%", 1)[0])
    except ValueError:
        return match.group(0)
    return HIDDEN


def _hide_personal(segment: str) -> str:
    """A path segment without e-mail addresses, card numbers (masked as everywhere, `spm_common.cards`), IPv4
    and IPv6 addresses, or license keys."""
    if "@" in segment:
        segment = EMAIL_RE.sub(HIDDEN, segment)
    if DIGIT_RE.search(segment):
        segment = cards.mask_text(segment)[0]
        segment = IPV4_RE.sub(HIDDEN, segment)
    if "-" in segment:
        segment = LICENSE_KEY_RE.sub(_hide_license_key, segment)
    if ":" in segment:
        segment = IPV6_CANDIDATE_RE.sub(_hide_ipv6, segment)
    return segment


def _decoded(path: str) -> str:
    """Percent-decoded until nothing changes (or DECODE_ROUNDS): what a link encoded twice hides is found."""
    for _ in range(DECODE_ROUNDS):
        if "%" not in path:
            break
        decoded = unquote(path, errors="replace")
        if decoded == path:
            break
        path = decoded
    return path


def normalise_path(url: str) -> str | None:
    """The page's path without query string or fragment, percent-decoded (a link encoded twice too), dot
    segments resolved, repeated and trailing slashes removed, e-mail addresses, IPv4 and IPv6 addresses and
    license keys hidden, card numbers masked, at most MAX_PATH characters. None if `url` is neither an
    http(s) URL nor a path."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme not in ("", "http", "https") or (parts.scheme and not parts.netloc):
        return None
    if PLAIN_PATH_RE.fullmatch(parts.path) and not PLAIN_SUSPECT_RE.search(parts.path):
        # the usual case: the full work would only drop a last "/"
        return (parts.path.rstrip("/") or "/")[:MAX_PATH]
    return normalise_fully(parts.path)


def normalise_fully(path: str) -> str:
    """`normalise_path`'s work on a URL's path, whatever it holds."""
    path = unicodedata.normalize("NFC", _decoded(path))
    path = "".join(ch for ch in path if ch.isprintable())
    path = re.sub(r"/{2,}", "/", "/" + path)
    path = posixpath.normpath(path)
    if path.startswith("//"):
        path = path[1:]
    path = "/".join(_hide_personal(segment) for segment in path.split("/"))
    return path[:MAX_PATH]


def page_host(url: str) -> str | None:
    try:
        return (urlsplit(url.strip()).hostname or None) if url else None
    except ValueError:
        return None


def referrer_host(referrer: str | None, own_host: str | None) -> str | None:
    """The referring site's host name; None for no referrer, an internal one, or an address literal."""
    if not referrer:
        return None
    try:
        parts = urlsplit(referrer.strip())
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme not in ("http", "https", "android-app") or not host:
        return None
    host = host.rstrip(".")[:MAX_HOST]
    if host == (own_host or "").lower():
        return None
    if not (":" in host or host[-1:].isdigit()):  # a name, not an address literal (and no exception to pay)
        return host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return None


def visitor_network(address: Address) -> str:
    """What the visitor hash is made of: the address's /24 (IPv4) or /48 (IPv6), never the address itself.
    Trying every IPv4 address against a day's hashes takes minutes; what it could then recover is a network
    of 256 addresses (or of a whole site, for IPv6), not a person's."""
    return network_of(address, VISITOR_IPV4_PREFIX, VISITOR_IPV6_PREFIX)


def visitor_hash(salt: bytes, network: str, user_agent: str) -> bytes:
    return hmac.new(salt, f"{network}\n{user_agent}".encode(), hashlib.sha256).digest()[:16]


@dataclass(frozen=True, slots=True)
class RawView:
    """A page view as it arrives; lives in memory only, until `Salts.rows` hashes it."""

    viewed_at: datetime
    path: str
    referrer_host: str | None
    network: str  # `visitor_network` of the client's address
    user_agent: str


def raw_view(
    path: str | None,
    url: str,
    referrer: str | None,
    address: Address | None,
    user_agent: str | None,
    viewed_at: datetime,
) -> RawView | None:
    """None when the view is not counted: not a page of a web site, a bot, or no usable address. `path` is
    `normalise_path(url)`, which the caller has made already (to refuse a bad URL, or to keep it)."""
    if path is None or address is None or is_bot(user_agent):
        return None
    return RawView(
        viewed_at,
        path,
        referrer_host(referrer, page_host(url)) if referrer else None,
        visitor_network(address),
        user_agent or "",
    )


class Salts:
    """The salt of each day, made on first use and shared by every replica through the database."""

    def __init__(self, today: Callable[[], date] = lambda: datetime.now(UTC).date()) -> None:
        self._today = today
        self._cache: dict[date, bytes] = {}

    async def for_day(self, conn: Connection, day: date) -> bytes | None:
        """The salt of `day`, or None if that day's salt has been destroyed (or never may exist)."""
        today = self._today()
        if not today - timedelta(days=SALT_DAYS_KEPT - 1) <= day <= today:
            return None
        salt = self._cache.get(day)
        if salt is None:
            salt = await store.salt_for(conn, day, secrets.token_bytes(32))
            self._cache = {d: s for d, s in self._cache.items() if d >= day - timedelta(days=SALT_DAYS_KEPT)}
            self._cache[day] = salt
        return salt

    async def rotate(self, conn: Connection) -> int:
        """Delete every salt older than yesterday's; returns how many went."""
        oldest_kept = self._today() - timedelta(days=SALT_DAYS_KEPT - 1)
        self._cache = {d: s for d, s in self._cache.items() if d >= oldest_kept}
        return await store.delete_salts_before(conn, oldest_kept)

    async def rows(self, conn: Connection, views: Sequence[RawView]) -> list[tuple[datetime, str, str | None, bytes]]:
        """The rows to store: the address and user agent replaced by the visitor hash. A view from the
        future counts as now; one whose day's salt is gone is dropped (it can no longer be hashed)."""
        now = datetime.now(UTC)
        of_day: dict[date, bytes | None] = {}  # looked up once per day in the batch
        out: list[tuple[datetime, str, str | None, bytes]] = []
        for view in views:
            moment = min(view.viewed_at, now)
            day = moment.astimezone(UTC).date()
            if day not in of_day:
                of_day[day] = await self.for_day(conn, day)
            salt = of_day[day]
            if salt is None:
                PAGE_VIEWS.labels("any", "too_old").inc()
                continue
            out.append((moment, view.path, view.referrer_host, visitor_hash(salt, view.network, view.user_agent)))
        return out


async def close_days(conn: Connection, today: date) -> int:
    """Keep only the aggregates of every day whose salt is destroyed (the days before yesterday): no view can
    be added to such a day any more, and its visitor hashes, which link a visitor's views to each other, are
    deleted with its rows. Returns how many views were closed."""
    oldest_open = datetime.combine(today - timedelta(days=SALT_DAYS_KEPT - 1), time(), UTC)
    closed = 0
    # A day at a time: the first round after an upgrade may find months of views, which one statement would
    # sort all at once in one long transaction.
    while (oldest := await store.oldest_view(conn)) is not None and oldest < oldest_open:
        start = datetime.combine(oldest.astimezone(UTC).date(), time(), UTC)
        closed += await store.close_days(conn, start, min(start + timedelta(days=1), oldest_open))
    return closed


def trail_payload(data: dict[str, Any]) -> dict[str, Any]:  # any JSON in; each field checked by isinstance
    """What the audit trail keeps of a `site.page.viewed` event: what the page-view table keeps, less the
    visitor hash. No address, no user agent, no query string."""
    url = data.get("url") if isinstance(data.get("url"), str) else ""
    referrer = data.get("referrer") if isinstance(data.get("referrer"), str) else None
    return {
        "path": normalise_path(str(url)) if url else None,
        "referrer_host": referrer_host(referrer, page_host(str(url))),
        "counted": not is_bot(data.get("user_agent") if isinstance(data.get("user_agent"), str) else None),
    }


async def ingest_events(conn: Connection, events: Sequence[Received[PageViewed]], salts: Salts) -> int:
    """Store the page views of a batch of `site.page.viewed` events in one COPY; returns how many were counted.
    (An invalid one never gets here: see `invalid_event`.)"""
    views = []
    for data, event in events:
        moment = data.viewed_at or event.time or datetime.now(UTC)
        view = raw_view(
            normalise_path(data.url), data.url, data.referrer, parse_ip(data.client_address), data.user_agent, moment
        )
        PAGE_VIEWS.labels("event", "counted" if view else "not_counted").inc()
        if view is not None:
            views.append(view)
    rows = await salts.rows(conn, views)
    if rows:
        await store.insert_pageviews(conn, rows)
    return len(rows)


def invalid_event(meta: Meta, error: ValidationError) -> None:
    """A page-view event that does not validate is counted and dropped (it stays in the trail as it came), not
    dead-lettered: a dead-letter queue would keep its address."""
    PAGE_VIEWS.labels("event", "invalid").inc()


class PageViewWriter:
    """Group commit for the HTTP beacon: each request waits until its view is stored, and every view that
    arrived while the previous batch was being written goes into the next one, with a single COPY. So an
    accepted (202) view is in the database, and the number of writes follows the load, not the requests."""

    def __init__(self, salts: Salts, max_batch: int = 5000) -> None:
        self._salts = salts
        self._max_batch = max_batch
        self._queue: list[tuple[RawView, asyncio.Future[None]]] = []
        self._arrived = asyncio.Event()

    async def submit(self, view: RawView) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((view, future))
        self._arrived.set()
        await future

    async def run(self, pool: Callable[[], asyncpg.Pool], health: LoopHealth) -> None:
        while True:
            await self._arrived.wait()
            batch = self._take()
            if not batch:
                continue
            try:
                # The connection is kept while views keep coming (no reset query between batches); no
                # transaction around: the COPY is one, and a day's salt is shared whatever happens next.
                async with pool().acquire() as conn:
                    while batch:
                        rows = await self._salts.rows(conn, [view for view, _ in batch])
                        await store.insert_pageviews(conn, rows)
                        PAGE_VIEWS.labels("http", "counted").inc(len(batch))
                        _settle(batch, None)
                        batch = self._take()
                health.ok()
            except Exception as exc:
                log.error("page views not stored", error=describe_error(exc), count=len(batch))
                health.failed(describe_error(exc))
                _settle(batch, PageViewsUnavailable())

    def _take(self) -> list[tuple[RawView, asyncio.Future[None]]]:
        batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
        if not self._queue:
            self._arrived.clear()
        return batch


def _settle(batch: list[tuple[RawView, asyncio.Future[None]]], error: Exception | None) -> None:
    for _, future in batch:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


class PageViewsUnavailable(Exception):
    """The batch could not be written; the request answers 503 and the website may send it again."""
