"""Console benchmark: every page of the operators' console with 100,000 contact messages and 100,000 orders
loaded (issue 19 asks p95 under 150 ms a page and under 200 ms a search).

    uv run python -m bench.console [--quick] [--messages N] [--orders N] [--requests R] [--warmup W]

A throwaway world (own database and exchange, removed at the end): every service's migrations applied as its
schema's owner (as `make run` does), then the data loaded in bulk into the services' own tables (COPY), with
varied fake text in Vietnamese (diacritics included) and English so the inbox's full-text search has real
words to find: the messages with their replies, acknowledgements and closings; purchasers, orders, items,
license keys, purchases and consents; the notifier's deliveries of all that mail (some failed, some pending)
and its recipients (some suppressed); privacy requests; past fan-outs; and the audit trail of it all,
appended by the audit service's own `trail.append` (hash chain and pseudonyms as in production), with page
views a day for the trends. The contact search index's pending entries are merged (`merge_search_entries()`,
as the service does in the background) and every table analysed (what autovacuum does in production; this
machine's Postgres runs with autovacuum off). Then contact, orders, notifier, audit and the console run as
processes, as `make run` starts them, and the audit service makes its start-up checkpoint.

An admin operator logs in through the login form, and each page is fetched sequentially over one keep-alive
connection: `--warmup` requests first (not counted), then `--requests` timed ones, each the full answer
(status 200 checked). Reported per page: p50, p95 and max in ms, and pass/fail against 150 ms (a page) or
200 ms (a search). Every view records its `operator.action` first, as in production, so the audit trail grows
during the run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import time
import unicodedata
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aio_pika
import asyncpg
import httpx
import orjson
from audit import trail
from audit.settings import MIGRATIONS as AUDIT_MIGRATIONS
from audit.settings import Settings as AuditSettings
from console import accounts, store
from console.settings import MIGRATIONS as CONSOLE_MIGRATIONS
from contact.settings import MIGRATIONS as CONTACT_MIGRATIONS
from notifier.settings import MIGRATIONS as NOTIFIER_MIGRATIONS
from notifier.settings import Settings as NotifierSettings
from notifier.tokens import recipient_ref
from orders.licenses import new_keys
from orders.settings import MIGRATIONS as ORDERS_MIGRATIONS
from spm_common.addresses import normalise_address
from spm_common.envelope import CloudEvent
from spm_common.logging import configure_logging
from spm_common.migrations import SchemaRoles, migrate
from spm_common.testing.smtp import free_port
from spm_common.testing.world import AMQP_URL, World, new_world

from bench._proc import ServiceProcesses, cpu_seconds
from bench.orders import Sink, connect_admin, postgres_settings

PAGE_TARGET_MS, SEARCH_TARGET_MS = 150.0, 200.0
PASSWORD = "bench operator password of some length"  # noqa: S105 (a throwaway account in a throwaway world)
OPERATOR = "bench-admin@spmgroup.vn"
SHOP = "https://shop.example/orders"
NOW = datetime.now(UTC).replace(microsecond=0)
SERVICES = ("contact", "orders", "notifier", "audit", "console")  # the console last: it calls the others
MIGRATIONS = {
    "contact": CONTACT_MIGRATIONS,
    "orders": ORDERS_MIGRATIONS,
    "notifier": NOTIFIER_MIGRATIONS,
    "audit": AUDIT_MIGRATIONS,
    "console": CONSOLE_MIGRATIONS,
}
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
COPY_CHUNK = 20_000
AUDIT_BATCH = 2_000

# Fake text: Vietnamese with its diacritics, and some English, in the shapes the contact form receives.
FAMILY = [
    "Nguyễn",
    "Trần",
    "Lê",
    "Phạm",
    "Hoàng",
    "Huỳnh",
    "Phan",
    "Vũ",
    "Võ",
    "Đặng",
    "Bùi",
    "Đỗ",
    "Hồ",
    "Ngô",
    "Dương",
    "Lý",
]
FAMILY_WEIGHTS = [38, 11, 9, 7, 5, 5, 4, 4, 4, 2, 2, 2, 2, 2, 1, 1]
MIDDLE = ["Văn", "Thị", "Hữu", "Đức", "Minh", "Thanh", "Ngọc", "Quốc", "Thu", "Kim", "Xuân", "Hoài", "Gia", "Bảo"]
GIVEN = [
    "An",
    "Anh",
    "Bình",
    "Châu",
    "Chi",
    "Cường",
    "Dũng",
    "Dung",
    "Đạt",
    "Giang",
    "Hà",
    "Hải",
    "Hạnh",
    "Hiếu",
    "Hoa",
    "Hùng",
    "Hương",
    "Khánh",
    "Lan",
    "Linh",
    "Long",
    "Mai",
    "Nam",
    "Nga",
    "Ngân",
    "Nhung",
    "Phong",
    "Phúc",
    "Phương",
    "Quang",
    "Quân",
    "Sơn",
    "Tâm",
    "Thảo",
    "Thắng",
    "Trang",
    "Trung",
    "Tú",
    "Tuấn",
    "Uyên",
    "Việt",
    "Vy",
    "Yến",
]
DOMAINS = ["example.test", "example.vn", "mail.example.test", "example.com.vn"]
OPENINGS_VI = [
    "Xin chào SPM,",
    "Kính gửi bộ phận hỗ trợ,",
    "Chào anh chị,",
    "Dạ em chào anh chị ạ,",
    "Xin chào,",
]
SENTENCES_VI = [
    "tôi đã mua {product} nhưng chưa nhận được mã kích hoạt",
    "mã kích hoạt báo lỗi khi tôi nhập vào máy mới",
    "tôi muốn chuyển giấy phép sang máy tính khác",
    "xin hướng dẫn cách cài đặt {product} trên Windows 11",
    "công ty tôi cần hóa đơn đỏ cho đơn hàng vừa rồi",
    "vui lòng xuất hóa đơn với mã số thuế của công ty",
    "phần mềm bị treo khi tra từ trong chế độ ngoại tuyến",
    "bản cập nhật mới không tải được, báo lỗi mạng",
    "tôi quên mất mã giấy phép, nhờ anh chị gửi lại giúp",
    "cho tôi hỏi giá nâng cấp lên phiên bản mới nhất",
    "trường học chúng tôi muốn mua bản quyền cho phòng máy",
    "chức năng nhận dạng chữ không đọc được dấu tiếng Việt",
    "bộ gõ tiếng Việt bị mất dấu khi gõ trong trình duyệt",
    "tôi đã thanh toán hai lần cho cùng một đơn hàng",
    "xin hoàn tiền vì tôi mua nhầm phiên bản",
    "từ điển thiếu nhiều từ chuyên ngành y khoa",
    "phát âm tiếng Anh trong từ điển bị rè",
    "tôi dùng máy Mac, có phiên bản cho macOS không",
    "giao diện chữ quá nhỏ trên màn hình độ phân giải cao",
    "đơn hàng {order} của tôi vẫn chưa được xác nhận",
    "tôi muốn đổi địa chỉ thư điện tử nhận giấy phép",
    "ứng dụng trên điện thoại không đồng bộ với máy tính",
    "xin cho biết chính sách bảo hành và hỗ trợ kỹ thuật",
    "tôi không nhận được thư xác nhận sau khi đặt hàng",
    "cảm ơn đội ngũ đã hỗ trợ rất nhiệt tình",
]
CLOSINGS_VI = ["Cảm ơn nhiều.", "Trân trọng.", "Mong sớm nhận được phản hồi.", "Xin cảm ơn!", "Cám ơn anh chị ạ."]
SENTENCES_EN = [
    "I bought {product} but never received the activation key",
    "the license key says it is invalid on my new laptop",
    "please send me an invoice with our company tax number",
    "how do I move my license to another computer",
    "the offline dictionary freezes when I look up a word",
    "is there a discount to upgrade to the newest version",
    "our school would like a site license for the computer lab",
    "the OCR does not recognise Vietnamese accents well",
    "order {order} has not been confirmed yet",
    "I was charged twice for the same order",
    "please tell me about your warranty and support policy",
    "the update fails with a network error",
]
SUBJECTS_VI = [
    "Hỏi về mã kích hoạt",
    "Cần hóa đơn",
    "Lỗi cài đặt",
    "Nâng cấp phiên bản",
    "Quên mã giấy phép",
    "Hoàn tiền",
    "Góp ý từ điển",
    "Bộ gõ bị lỗi",
    None,
]
SUBJECTS_EN = ["Activation key", "Invoice request", "Installation problem", "Upgrade price", "Lost license", None]
PRODUCTS = [
    ("SPM-DICT-PRO", "SPM Dictionary Pro", "49.00"),
    ("SPM-DICT-STD", "SPM Dictionary Standard", "29.00"),
    ("SPM-OCR", "SPM OCR", "39.00"),
    ("SPM-TYPE", "SPM Vietnamese Typing", "9.00"),
]
REPLIES_VI = [
    "Chào anh/chị, SPM đã gửi lại mã kích hoạt vào thư điện tử của anh/chị. Trân trọng.",
    "Cảm ơn anh/chị đã liên hệ. Hóa đơn sẽ được gửi trong 3 ngày làm việc.",
    "Anh/chị vui lòng gỡ phần mềm cũ rồi cài lại bản mới nhất từ trang tải về.",
]
REPLIES_EN = [
    "Hello, we have sent your activation key again. Kind regards, SPM support.",
    "Thank you for writing. The invoice will follow within three working days.",
]
FAILURES = ["550 5.1.1 mailbox unavailable", "552 5.2.2 mailbox full", "421 4.4.2 connection timed out"]


def ascii_of(text: str) -> str:
    """The letters without their diacritics (đ as d), lower case: how a name becomes an address."""
    folded = unicodedata.normalize("NFKD", text.replace("đ", "d").replace("Đ", "D"))
    return "".join(c for c in folded if not unicodedata.combining(c)).lower()


@dataclass(frozen=True)
class Person:
    name: str
    email: str


class Fake:
    """Reproducible fake people and text."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)

    def person(self, n: int) -> Person:
        r = self.random
        family = r.choices(FAMILY, FAMILY_WEIGHTS)[0]
        name = f"{family} {r.choice(MIDDLE)} {r.choice(GIVEN)}"
        local = ascii_of(name).replace(" ", r.choice([".", "", "_"]))
        return Person(name, f"{local}.{n}@{r.choice(DOMAINS)}")

    def message(self, order_ids: Sequence[str]) -> tuple[str, str | None, str]:
        """(locale, subject, body)."""
        r = self.random
        product = r.choice(PRODUCTS)[1]
        order = r.choice(order_ids) if order_ids else "FS-0"
        if r.random() < 0.75:
            parts = [r.choice(OPENINGS_VI)]
            parts += [r.choice(SENTENCES_VI).format(product=product, order=order) + "." for _ in range(r.randint(1, 5))]
            parts.append(r.choice(CLOSINGS_VI))
            return "vi", r.choice(SUBJECTS_VI), " ".join(parts)
        parts = ["Hello,"] + [
            r.choice(SENTENCES_EN).format(product=product, order=order) + "." for _ in range(r.randint(1, 4))
        ]
        parts.append("Thanks.")
        return "en", r.choice(SUBJECTS_EN), " ".join(parts)


@dataclass
class Loaded:
    """What the pages are asked for: things that exist in the loaded data."""

    message_id: uuid.UUID | None = None  # a message with a reply (the thread page)
    frequent_purchaser: str = ""  # an address with many orders
    order_uuid: uuid.UUID | None = None  # one of that purchaser's orders
    shop_order_id: str = ""
    audit_email: str = ""  # an address with entries in the trail
    seconds: dict[str, float] = field(default_factory=dict)  # how long each part of the load took
    rows: dict[str, int] = field(default_factory=dict)


async def migrate_all(world: World) -> None:
    """Every service's migrations, each as its schema's owner (what `spm-admin migrate` does)."""
    conn = await asyncpg.connect(world.database_url)
    try:
        for service, migrations in MIGRATIONS.items():
            await migrate(conn, service, migrations, SchemaRoles.of(service))
    finally:
        await conn.close()


def chunks(rows: Sequence[tuple[Any, ...]], size: int = COPY_CHUNK) -> Iterator[Sequence[tuple[Any, ...]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


async def copy(
    conn: asyncpg.Connection, schema: str, table: str, columns: list[str], rows: list[tuple[Any, ...]]
) -> int:
    for part in chunks(rows):
        await conn.copy_records_to_table(table, schema_name=schema, columns=columns, records=part)
    return len(rows)


def spread(count: int, days: int, rng: random.Random) -> list[datetime]:
    """`count` moments over the last `days` days, oldest first, more of them recently (a growing business)."""
    moments = [NOW - timedelta(seconds=days * 86400 * (1 - rng.random() ** 0.7)) for _ in range(count)]
    return sorted(moments)


@dataclass(frozen=True)
class OrderRow:
    id: uuid.UUID
    order_id: str
    purchaser: Person
    purchaser_id: int
    placed_at: datetime
    locale: str
    consent: bool
    items: list[tuple[str, str, int, Decimal]]  # sku, name, quantity, unit price


async def load_orders(conn: asyncpg.Connection, fake: Fake, count: int, loaded: Loaded) -> list[OrderRow]:
    """Purchasers (most buy once, a few many times), orders, items, license keys, purchases, consents."""
    rng = fake.random
    purchasers: list[Person] = []
    buyers: list[int] = []  # purchaser index of each order
    while len(buyers) < count:
        index = len(purchasers)
        purchasers.append(fake.person(index))
        # About 1.5 orders a purchaser; one purchaser of every thousand is a reseller with dozens.
        repeat = 40 if index % 1000 == 7 else (1 if rng.random() < 0.7 else rng.randint(2, 4))
        buyers += [index] * repeat
    buyers = buyers[:count]
    rng.shuffle(buyers)
    frequent = purchasers[7] if len(purchasers) > 7 else purchasers[0]
    placed = spread(count, 730, rng)
    orders: list[OrderRow] = []
    for i, (buyer, at) in enumerate(zip(buyers, placed, strict=True)):
        items = []
        for line_sku in rng.sample(PRODUCTS, k=1 if rng.random() < 0.8 else 2):
            items.append(
                (line_sku[0], line_sku[1], 1 if rng.random() < 0.9 else rng.randint(2, 5), Decimal(line_sku[2]))
            )
        orders.append(
            OrderRow(
                uuid.uuid4(),
                f"FS-{at:%Y}-{i:07d}",
                purchasers[buyer],
                buyer + 1,
                at,
                "vi" if rng.random() < 0.8 else "en",
                rng.random() < 0.4,
                items,
            )
        )
    last_order: dict[int, OrderRow] = {}
    for o in orders:
        last_order[o.purchaser_id] = o
    address = orjson.dumps({"line1": "12 Tràng Tiền", "city": "Hà Nội", "postal_code": "100000", "country": "VN"})
    loaded.rows["orders.purchasers"] = await copy(
        conn,
        "orders",
        "purchasers",
        ["id", "email", "name", "phone", "address", "locale", "last_order_at", "created_at", "updated_at"],
        [
            (
                pid,
                o.purchaser.email,
                o.purchaser.name,
                f"+84 9{pid % 100000000:08d}",
                address.decode(),
                o.locale,
                o.placed_at,
                o.placed_at,
                o.placed_at,
            )
            for pid, o in sorted(last_order.items())
        ],
    )
    await conn.execute("SELECT setval('orders.purchasers_id_seq', $1)", max(last_order))
    loaded.rows["orders.orders"] = await copy(
        conn,
        "orders",
        "orders",
        [
            "id",
            "source",
            "order_id",
            "purchaser_id",
            "placed_at",
            "currency",
            "total",
            "locale",
            "marketing_consent",
            "privacy_policy_version",
            "via",
            "event_id",
            "card_data_removed",
            "recorded_at",
        ],
        [
            (
                o.id,
                SHOP,
                o.order_id,
                o.purchaser_id,
                o.placed_at,
                "USD",
                sum(q * p for _, _, q, p in o.items),
                o.locale,
                o.consent,
                1,
                "event",
                str(uuid.uuid4()),
                False,
                o.placed_at + timedelta(seconds=1),
            )
            for o in orders
        ],
    )
    item_rows = [(o.id, n + 1, sku, name, q, p) for o in orders for n, (sku, name, q, p) in enumerate(o.items)]
    loaded.rows["orders.order_items"] = await copy(
        conn, "orders", "order_items", ["order_id", "line", "sku", "product_name", "quantity", "unit_price"], item_rows
    )
    units = [(o, sku) for o in orders for sku, _, q, _ in o.items for _ in range(q)]
    keys = new_keys(len(units))
    majors = {"SPM-DICT-PRO": 5, "SPM-DICT-STD": 5, "SPM-OCR": 3, "SPM-TYPE": 2}
    loaded.rows["orders.license_keys"] = await copy(
        conn,
        "orders",
        "license_keys",
        ["license_key", "purchaser_id", "sku", "major_version", "order_id", "issued_at"],
        [(k, o.purchaser_id, sku, majors[sku], o.id, o.placed_at) for k, (o, sku) in zip(keys, units, strict=True)],
    )
    purchases: dict[tuple[str, int], datetime] = {}
    for o in orders:
        for sku, _, _, _ in o.items:
            purchases[(sku, o.purchaser_id)] = o.placed_at
    loaded.rows["orders.purchases"] = await copy(
        conn,
        "orders",
        "purchases",
        ["sku", "purchaser_id", "last_placed_at"],
        [(sku, pid, at) for (sku, pid), at in purchases.items()],
    )
    loaded.rows["orders.consents"] = await copy(
        conn,
        "orders",
        "consents",
        ["purchaser_id", "order_id", "policy_version", "given_at"],
        [(o.purchaser_id, o.id, 1, o.placed_at) for o in orders if o.consent],
    )
    for n in range(6):  # past fan-outs, finished
        await conn.execute(
            "INSERT INTO orders.fanouts (kind, key, source, event_id, payload, cursor, notified, batches, created_at,"
            " finished_at, total) VALUES ($1, $2, $3, $4, '{}', $5::bigint, $5::int, $6, $7::timestamptz,"
            " $7::timestamptz + interval '20 minutes', $5::int)",
            "upgrade" if n % 2 else "news",
            f"bench-{n}",
            SHOP,
            str(uuid.uuid4()),
            len(last_order) // 3,
            len(last_order) // 3000 + 1,
            NOW - timedelta(days=30 * (6 - n)),
        )
    mine = [o for o in orders if o.purchaser == frequent]
    loaded.frequent_purchaser = frequent.email
    loaded.order_uuid = mine[-1].id
    loaded.shop_order_id = orders[len(orders) // 2].order_id
    return orders


@dataclass(frozen=True)
class MessageRow:
    id: uuid.UUID
    person: Person
    locale: str
    received_at: datetime


async def load_contact(
    conn: asyncpg.Connection, fake: Fake, count: int, orders: Sequence[OrderRow], loaded: Loaded
) -> tuple[list[MessageRow], list[tuple[uuid.UUID, MessageRow, datetime]]]:
    """Messages over two years (closed once answered, the last weeks' still open), replies, privacy requests;
    then the search index's pending entries merged, as the service's background loop does."""
    rng = fake.random
    order_ids = [o.order_id for o in orders[-5000:]]
    # A third of the writers are purchasers, who write about their orders.
    people = [fake.person(1_000_000 + n) for n in range(max(1, count * 2 // 3))]
    buyers = [o.purchaser for o in orders[:: max(1, len(orders) // max(1, count // 3))]]
    received = spread(count, 730, rng)
    messages: list[MessageRow] = []
    rows: list[tuple[Any, ...]] = []
    replies: list[tuple[uuid.UUID, MessageRow, datetime]] = []
    reply_rows: list[tuple[Any, ...]] = []
    for at in received:
        person = rng.choice(buyers) if buyers and rng.random() < 0.33 else rng.choice(people)
        locale, subject, body = fake.message(order_ids)
        message = MessageRow(uuid.uuid4(), person, locale, at)
        messages.append(message)
        age = NOW - at
        answered = rng.random() < (0.95 if age > timedelta(days=14) else 0.5)
        closed = answered and (age > timedelta(days=14) or rng.random() < 0.3)
        reply_at = at + timedelta(hours=rng.uniform(1, 48))
        if answered:
            reply_id = uuid.uuid4()
            replies.append((reply_id, message, reply_at))
            text = rng.choice(REPLIES_VI if locale == "vi" else REPLIES_EN)
            reply_rows.append(
                (reply_id, message.id, text, f"<reply-{reply_id}@spmgroup.vn>", "sent", reply_at, reply_at, OPERATOR)
            )
        status = "closed" if closed else ("answered" if answered else "new")
        closed_at = reply_at + timedelta(hours=1) if closed else None
        ack_status = "failed" if rng.random() < 0.003 else "sent"
        rows.append(
            (
                message.id,
                person.name,
                person.email,
                normalise_address(person.email),
                subject,
                body,
                locale,
                status,
                f"<ack-{message.id}@spmgroup.vn>",
                at,
                ack_status,
                FAILURES[0] if ack_status == "failed" else None,
                closed_at,
                OPERATOR if closed else None,
            )
        )
    started = time.perf_counter()
    loaded.rows["contact.messages"] = await copy(
        conn,
        "contact",
        "messages",
        [
            "id",
            "name",
            "email",
            "email_key",
            "subject",
            "body",
            "locale",
            "status",
            "ack_message_id",
            "received_at",
            "ack_status",
            "ack_error",
            "closed_at",
            "closed_by",
        ],
        rows,
    )
    loaded.seconds["contact.messages COPY"] = time.perf_counter() - started
    loaded.rows["contact.replies"] = await copy(
        conn,
        "contact",
        "replies",
        [
            "id",
            "message_id",
            "body",
            "mail_message_id",
            "delivery_status",
            "delivery_updated_at",
            "created_at",
            "replied_by",
        ],
        reply_rows,
    )
    started = time.perf_counter()
    merged = await conn.fetchval("SELECT contact.merge_search_entries()")
    loaded.seconds["contact search index merge"] = time.perf_counter() - started
    loaded.rows["contact search entries merged (pages)"] = int(merged or 0)
    # Privacy requests: mostly completed (the address forgotten), a few in progress, some of those late.
    privacy = []
    for n in range(300):
        at = NOW - timedelta(days=rng.uniform(0, 400) if n >= 12 else rng.uniform(1, 12))
        done = n >= 12
        privacy.append(
            (
                uuid.uuid4(),
                "access" if n % 3 else "erasure",
                "completed" if done else "in-progress",
                None if done else f"privacy-{n}@example.test",
                "vi",
                at,
                at + timedelta(hours=24),
                at + timedelta(days=2),
                at + timedelta(hours=1),
                at + timedelta(minutes=30),
                at + timedelta(days=15),
                at + timedelta(days=3) if done else None,
                "sent" if done else None,
            )
        )
    loaded.rows["contact.privacy_requests"] = await copy(
        conn,
        "contact",
        "privacy_requests",
        [
            "id",
            "kind",
            "status",
            "email",
            "locale",
            "received_at",
            "token_expires_at",
            "ack_due_at",
            "acknowledged_at",
            "confirmed_at",
            "due_at",
            "completed_at",
            "final_mail",
        ],
        privacy,
    )
    answers = [
        (r[0], service, f"{service} answered", "{}", r[5] + timedelta(minutes=5))
        for r in privacy
        for service in ("contact", "orders", "notifier", "audit")
        if r[2] == "completed" or service in ("contact", "audit")
    ]
    await copy(
        conn, "contact", "privacy_answers", ["request_id", "service", "summary", "counts", "answered_at"], answers
    )
    loaded.message_id = replies[-1][1].id if replies else messages[-1].id
    return messages, replies


async def load_notifier(
    conn: asyncpg.Connection,
    fake: Fake,
    orders: Sequence[OrderRow],
    messages: Sequence[MessageRow],
    replies: Sequence[tuple[uuid.UUID, MessageRow, datetime]],
    loaded: Loaded,
) -> None:
    """One delivery per e-mail the data implies: acknowledgements, replies, order confirmations. A few failed
    (some still holding their content, so retryable), the newest few pending; some recipients suppressed."""
    rng = fake.random
    key = NotifierSettings().recipient_key()
    refs: dict[str, str] = {}

    def ref(email: str) -> str:
        if email not in refs:
            refs[email] = recipient_ref(email, key)
        return refs[email]

    mails: list[tuple[str, str, str, str, str, datetime]] = []  # purpose, template, locale, reference, email, at
    for m in messages:
        mails.append(
            ("answer-message", "contact-ack", m.locale, f"contact.message:{m.id}", m.person.email, m.received_at)
        )
    for reply_id, m, at in replies:
        mails.append(("answer-message", "contact-reply", m.locale, f"contact.reply:{reply_id}", m.person.email, at))
    for o in orders:
        mails.append(("fulfil-order", "order-confirmation", o.locale, f"order:{o.id}", o.purchaser.email, o.placed_at))
    mails.sort(key=lambda mail: mail[5])
    rows = []
    pending_from = len(mails) - 40
    for n, (purpose, template, locale, reference, email, at) in enumerate(mails):
        failed = rng.random() < 0.002
        status = "pending" if n >= pending_from else ("failed" if failed else "sent")
        request = (
            orjson.dumps({"template": template, "recipient": {"email": email}}).decode()
            if status == "pending" or (failed and rng.random() < 0.5)
            else None
        )
        rows.append(
            (
                str(uuid.uuid4()),
                ref(email),
                purpose,
                template,
                locale,
                reference,
                f"<{uuid.uuid4()}@spmgroup.vn>",
                request,
                status,
                1 if status != "pending" else 0,
                rng.choice(FAILURES) if failed else None,
                at if status == "pending" else at + timedelta(minutes=5),
                at,
                at + timedelta(seconds=3) if status == "sent" else None,
                at + timedelta(seconds=3) if status != "pending" else None,
                at + timedelta(minutes=5) if failed else None,
            )
        )
    loaded.rows["notifier.deliveries"] = await copy(
        conn,
        "notifier",
        "deliveries",
        [
            "request_event_id",
            "recipient_ref",
            "purpose",
            "template",
            "locale",
            "reference",
            "message_id",
            "request",
            "status",
            "attempts",
            "last_error",
            "next_attempt_at",
            "created_at",
            "sent_at",
            "last_attempt_at",
            "failed_at",
        ],
        rows,
    )
    suppressed = set(rng.sample(sorted(refs.values()), k=min(150, len(refs))))
    first = {o.purchaser.email: o.placed_at for o in reversed(orders)}
    loaded.rows["notifier.recipients"] = await copy(
        conn,
        "notifier",
        "recipients",
        ["recipient_ref", "purchaser_since", "suppressed_at", "suppressed_reason"],
        [
            (
                r,
                first.get(email),
                NOW - timedelta(days=3) if r in suppressed else None,
                "hard bounce" if r in suppressed else None,
            )
            for email, r in refs.items()
        ],
    )


async def load_audit(world: World, orders: Sequence[OrderRow], messages: Sequence[MessageRow], loaded: Loaded) -> None:
    """The trail of the orders and messages, appended by the audit service's own code (hash chain, a key a
    person, pseudonyms), in batches as its consumer appends them; and page views a day for the trends."""
    settings = AuditSettings()
    secret = settings.audit_secret.get_secret_value().encode()
    events: list[tuple[datetime, CloudEvent]] = []
    for m in messages:
        received: dict[str, object] = {
            "message_id": str(m.id),
            "email": m.person.email,
            "locale": m.locale,
            "received_at": m.received_at.isoformat(),
        }
        event = CloudEvent(
            id=str(uuid.uuid4()),
            type="contact.message.received",
            source="urn:spm:contact",
            time=m.received_at,
            data=received,
            purpose="answer-message",
        )
        events.append((m.received_at, event))
    for o in orders:
        placed: dict[str, object] = {
            "order_id": o.order_id,
            "placed_at": o.placed_at.isoformat(),
            "currency": "USD",
            "total": "49.00",
            "purchaser": {"name": o.purchaser.name, "email": o.purchaser.email, "locale": o.locale},
            "items": [{"sku": s, "product_name": n, "quantity": q, "unit_price": str(p)} for s, n, q, p in o.items],
            "marketing_consent": o.consent,
        }
        event = CloudEvent(id=str(uuid.uuid4()), type="order.placed", source=SHOP, time=o.placed_at, data=placed)
        events.append((o.placed_at, event))
    events.sort(key=lambda e: e[0])
    conn = await asyncpg.connect(world.database_url, server_settings={"search_path": "audit"})
    try:
        started = time.perf_counter()
        for start in range(0, len(events), AUDIT_BATCH):
            async with conn.transaction():
                await trail.append(conn, [e for _, e in events[start : start + AUDIT_BATCH]], secret)
        loaded.seconds["audit trail append"] = time.perf_counter() - started
        loaded.rows["audit.entries"] = len(events)
        # Page views: the closed days as the aggregates the service keeps, today and yesterday as raw views.
        rng = random.Random(3)
        pages = ["/", "/san-pham/tu-dien", "/san-pham/ocr", "/mua", "/lien-he", "/tai-ve", "/en/", "/en/buy"]
        hosts = ["www.google.com", "www.facebook.com", "coccoc.com", "www.bing.com", "zalo.me"]
        days, groups = [], []
        for back in range(2, 400):
            day = NOW.date() - timedelta(days=back)
            visitors = rng.randint(800, 2500)
            days.append((day, visitors * 3, visitors))
            for kind, keys in (
                ("page", [[p] for p in pages]),
                ("referrer", [[h] for h in hosts]),
                ("entry", [[p] for p in pages]),
                ("exit", [[p] for p in pages]),
                ("move", [[a, b] for a in pages[:4] for b in pages[4:]]),
            ):
                for k in keys:
                    seen = rng.randint(1, visitors // 4)
                    groups.append((day, kind, k, seen * 2, seen))
        await copy(conn, "audit", "pageview_days", ["day", "views", "visitors"], days)
        loaded.rows["audit.pageview_groups"] = await copy(
            conn, "audit", "pageview_groups", ["day", "kind", "key", "count", "visitors"], groups
        )
        views = []
        for back in (0, 1):
            day_start = datetime.combine(NOW.date() - timedelta(days=back), datetime.min.time(), UTC)
            for _ in range(4000):
                at = day_start + timedelta(seconds=rng.uniform(0, 86399))
                if at < NOW:
                    views.append((at, rng.choice(pages), rng.choice([*hosts, None]), rng.randbytes(16)))
        loaded.rows["audit.pageviews"] = await copy(
            conn, "audit", "pageviews", ["viewed_at", "path", "referrer_host", "visitor_hash"], views
        )
    finally:
        await conn.close()
    loaded.audit_email = orders[-1].purchaser.email if orders else messages[-1].person.email


async def load(world: World, messages: int, orders: int) -> Loaded:
    loaded = Loaded()
    fake = Fake(19)
    conn = await connect_admin(world)
    try:
        started = time.perf_counter()
        order_rows = await load_orders(conn, fake, orders, loaded)
        loaded.seconds["orders"] = time.perf_counter() - started
        started = time.perf_counter()
        message_rows, replies = await load_contact(conn, fake, messages, order_rows, loaded)
        loaded.seconds["contact"] = time.perf_counter() - started
        started = time.perf_counter()
        await load_notifier(conn, fake, order_rows, message_rows, replies, loaded)
        loaded.seconds["notifier"] = time.perf_counter() - started
        started = time.perf_counter()
        await load_audit(world, order_rows, message_rows, loaded)
        loaded.seconds["audit"] = time.perf_counter() - started
        # What autovacuum would have done by the time anyone looks (this machine's Postgres runs without it).
        started = time.perf_counter()
        await conn.execute("VACUUM ANALYZE")
        loaded.seconds["VACUUM ANALYZE"] = time.perf_counter() - started
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
        loaded.rows["database size (MB)"] = int(size) // 1_000_000
    finally:
        await conn.close()
    return loaded


async def add_operator(world: World) -> None:
    conn = await world.admin()
    try:
        await conn.execute("SET search_path TO console")
        row = await store.insert_operator(conn, OPERATOR, "admin", accounts.hash_password(PASSWORD))
        assert row is not None
        await store.set_password(conn, row.id, row.password_hash, False)
    finally:
        await conn.close()


async def dead_letters(world: World, count: int = 12) -> None:
    """A few messages no service can read, so the dead-letter page has something to list (dead-lettered at
    once: not a CloudEvent)."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(world.exchange)
        for n in range(count):
            await exchange.publish(aio_pika.Message(b"not a cloud event %d" % n), routing_key="order.placed")


def login(client: httpx.Client) -> None:
    page = client.get("/login")
    match = CSRF_RE.search(page.text)
    assert match, "no CSRF token on the login page"
    answer = client.post("/login", data={"email": OPERATOR, "password": PASSWORD, "csrf_token": match.group(1)})
    assert answer.status_code == 303 and answer.headers["location"] == "/inbox", (answer.status_code, answer.text)


@dataclass(frozen=True)
class Probe:
    name: str
    path: str
    search: bool = False

    @property
    def target_ms(self) -> float:
        return SEARCH_TARGET_MS if self.search else PAGE_TARGET_MS


@dataclass
class Timing:
    probe: Probe
    samples: list[float]
    cpu: dict[str, float]  # CPU seconds a request, by process
    size: int  # bytes of the page

    def quantile(self, q: float) -> float:
        ordered = sorted(self.samples)
        if len(ordered) == 1:
            return ordered[0]
        return statistics.quantiles(ordered, n=100, method="inclusive")[round(q * 100) - 1]

    @property
    def passed(self) -> bool:
        return self.quantile(0.95) * 1000 < self.probe.target_ms


def inbox_page(client: httpx.Client, depth: int) -> str:
    """The URL of the inbox's page `depth` (following each page's "next" link, as an operator would)."""
    path = "/inbox?state=closed"
    for _ in range(depth - 1):
        found = re.search(r'href="(/inbox\?[^"]*cursor=[^"]+)"', client.get(path).text)
        if not found:
            break
        path = found.group(1).replace("&amp;", "&")
    return path


def probes(client: httpx.Client, loaded: Loaded, depth: int) -> list[Probe]:
    return [
        Probe("inbox (open, first page)", "/inbox"),
        Probe(f"inbox (closed, page {depth})", inbox_page(client, depth)),
        Probe("thread", f"/inbox/{loaded.message_id}"),
        Probe("inbox search 'nguyen' (open)", "/inbox?q=nguyen", True),
        Probe("inbox search 'hoa don' (closed)", "/inbox?state=closed&q=hoa+don", True),
        Probe("inbox search 'ma so thue' (closed)", "/inbox?state=closed&q=ma+so+thue", True),
        Probe("inbox search, no match (closed)", "/inbox?state=closed&q=xyzzy", True),
        Probe("inbox search by a name (closed, few)", "/inbox?state=closed&q=tran+thi+mai", True),
        Probe("orders search by e-mail (40 orders)", f"/orders?q={loaded.frequent_purchaser}", True),
        Probe("orders search by order id", f"/orders?q={loaded.shop_order_id}", True),
        Probe("purchaser's order page", f"/orders/{loaded.order_uuid}"),
        Probe("deliveries", "/deliveries"),
        Probe("dead letters", "/dead-letters"),
        Probe("privacy", "/privacy"),
        Probe("releases", "/releases"),
        Probe("audit (page)", "/audit"),
        Probe("audit search by e-mail", f"/audit?email={loaded.audit_email}", True),
        Probe("trends (30 days)", "/trends"),
        Probe("trends (a year)", f"/trends?from={(NOW.date() - timedelta(days=364)).isoformat()}"),
        Probe("system", "/system"),
    ]


def measure(client: httpx.Client, probe: Probe, warmup: int, requests: int, pids: dict[str, int]) -> Timing:
    for _ in range(warmup):
        answer = client.get(probe.path)
        assert answer.status_code == 200, (probe.path, answer.status_code, answer.text[:500])
    samples = []
    size = 0
    # CPU moves less than wall time on a shared machine; a process's background work (relays, the audit
    # trail's appends of the views' own operator.action) is counted in too.
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    for _ in range(requests):
        started = time.perf_counter()
        answer = client.get(probe.path)
        samples.append(time.perf_counter() - started)
        assert answer.status_code == 200, (probe.path, answer.status_code, answer.text[:500])
        size = len(answer.content)
    cpu = {name: (cpu_seconds(pid) - before[name]) / requests for name, pid in pids.items()}
    return Timing(probe, samples, cpu, size)


def report(timings: list[Timing]) -> None:
    names = list(timings[0].cpu) if timings else []
    cpu_heads = "".join(f"{name[:8]:>9}" for name in names)
    heads = f"{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'target':>9}  result  kB"
    print(f"  {'page':<40}{heads}  | CPU ms a request:{cpu_heads}")
    for t in timings:
        cpu = "".join(f"{t.cpu[name] * 1000:>9.1f}" for name in names)
        print(
            f"  {t.probe.name:<40}{t.quantile(0.5) * 1000:>9.1f}{t.quantile(0.95) * 1000:>9.1f}"
            f"{max(t.samples) * 1000:>9.1f}{t.probe.target_ms:>9.0f}  {'pass' if t.passed else 'FAIL'}"
            f"{t.size / 1000:>5.0f}  |{' ' * 17}{cpu}"
        )
    failed = [t.probe.name for t in timings if not t.passed]
    print(
        f"  {len(timings) - len(failed)} of {len(timings)} within target"
        + (f"; missed: {', '.join(failed)}" if failed else "")
    )


class Stack(ServiceProcesses):
    """The four services and the console as processes, as `make run` starts them (the console pointed at the
    others' ports), with the settings' defaults but for the world's database, exchange and SMTP sink."""

    def __init__(self, world: World, sink_port: int) -> None:
        super().__init__()
        self.ports = {name: free_port() for name in SERVICES}
        self.env = {
            **os.environ,
            **world.env(SPM_SMTP_PORT=str(sink_port), SPM_LOG_LEVEL="warning"),
            **{f"SPM_{name.upper()}_PORT": str(port) for name, port in self.ports.items()},
            **{f"SPM_CONSOLE_{name.upper()}_URL": f"http://127.0.0.1:{self.ports[name]}" for name in SERVICES[:-1]},
        }
        # The test worlds' small pools and fast polls are for many test sessions sharing one Postgres.
        for name in ("SPM_DB_POOL_MAX", "SPM_OUTBOX_POLL_SECONDS", "SPM_RETRY_DELAY_MS", "SPM_MAX_ATTEMPTS"):
            self.env.pop(name, None)

    async def start(self) -> None:
        await self.start_all(dict.fromkeys(SERVICES, self.env), self.ports)


async def run(args: argparse.Namespace) -> None:
    world = new_world()
    sink = Sink()
    sink.start()
    world.smtp_port = sink.port
    await world.create()
    services: Stack | None = None
    try:
        print(
            f"console benchmark: {args.messages:,} contact messages, {args.orders:,} orders;"
            f" load average {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores",
            flush=True,
        )
        await migrate_all(world)
        started = time.perf_counter()
        loaded = await load(world, args.messages, args.orders)
        print(f"  loaded in {time.perf_counter() - started:.0f} s:", flush=True)
        print("    " + ", ".join(f"{name} {count:,}" for name, count in loaded.rows.items()))
        print("    " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in loaded.seconds.items()))
        admin = await connect_admin(world)
        try:
            print(f"  Postgres: {await postgres_settings(admin)}")
        finally:
            await admin.close()
        if args.keep:
            print(f"  kept: database {world.name} (drop it when done)")
            return
        await add_operator(world)
        services = Stack(world, sink.port)
        started = time.perf_counter()
        await services.start()
        print(f"  services ready in {time.perf_counter() - started:.1f} s (the audit's start-up checkpoint included)")
        await dead_letters(world)
        await asyncio.sleep(2)  # the dead letters land; the audit checkpoint has walked the loaded trail
        pids = {name: p.pid for name, p in services.processes.items()}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        with httpx.Client(base_url=f"http://127.0.0.1:{services.ports['console']}", timeout=60) as client:
            login(client)
            timings = []
            for probe in probes(client, loaded, args.depth):
                timings.append(await asyncio.to_thread(measure, client, probe, args.warmup, args.requests, pids))
                print(f"    {probe.name}: p95 {timings[-1].quantile(0.95) * 1000:.1f} ms", flush=True)
        used = {name: cpu_seconds(p.pid) - before[name] for name, p in services.processes.items()}
        print(f"  {args.requests} timed requests a page after {args.warmup} of warm-up, one at a time:")
        report(timings)
        print("  CPU during the measurement (s): " + ", ".join(f"{n} {s:.1f}" for n, s in used.items()))
        print(f"  load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if services is not None:
            services.stop()
        if not args.keep:
            await world.destroy()
        sink.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small smoke run (5,000 messages and orders)")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=30, help="timed requests a page")
    parser.add_argument("--warmup", type=int, default=3, help="requests a page before timing")
    parser.add_argument("--depth", type=int, default=40, help="which page of the closed inbox to time")
    parser.add_argument(
        "--keep", action="store_true", help="load, print the database's name and stop, leaving it (for EXPLAIN)"
    )
    args = parser.parse_args()
    if args.quick:
        args.messages, args.orders, args.requests, args.warmup, args.depth = 5_000, 5_000, 10, 2, 5
    configure_logging("bench", "console", "warning")  # the migrations' lines are not the figures
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
