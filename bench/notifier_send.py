"""Notifier throughput: e-mails per second one notifier process hands to Postfix's smtp-sink, deliveries recorded.

Prints, for the same machine and run:
- reference: each message built with the standard `email` package, sent with aiosmtplib over one connection;
- render only: the notifier's Composer, no I/O;
- sender: pending deliveries already recorded, the notifier's sender claims, renders, sends and marks them
  (with the notification.sent events written to the outbox and published by the relay alongside);
- end to end: notification.requested events published to RabbitMQ, consumed, recorded, sent and marked.

    uv run python -m bench.notifier_send [--quick] [--count N] [--connections C]

Needs Postgres and RabbitMQ (as for the tests) and /usr/sbin/smtp-sink (Debian package `postfix`). It makes
its own database and exchange and removes them, and stops its smtp-sink, when done.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import tempfile
import time
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid

import aiosmtplib
import orjson
import uvloop
from notifier.app import build
from notifier.mail import Composer, stable_message_id
from notifier.settings import Settings
from notifier.tokens import recipient_ref
from spm_common.db import Connection
from spm_common.envelope import new_event
from spm_common.logging import configure_logging
from spm_common.notifications import NOTIFICATION_REQUESTED, Locale, NotificationRequested, Recipient
from spm_common.testing.smtp import free_port
from spm_common.testing.world import AMQP_URL, World, new_world

from bench._publisher import publish_in_child

NAMES = ["Nguyễn Văn An", "Trần Thị Bình", "Lê Hoàng Cường", "Phạm Thu Dung", "Jane Doe"]


def sample_request(i: int) -> NotificationRequested:
    locale: Locale = "vi" if i % 2 else "en"
    if i % 4 == 3:
        return NotificationRequested(
            purpose="answer-message",
            template="contact-ack",
            locale=locale,
            recipient=Recipient(email=f"visitor{i}@example.com", name=NAMES[i % len(NAMES)]),
            context={"subject": f"Câu hỏi số {i} về giấy phép"},
        )
    return NotificationRequested(
        purpose="fulfil-order",
        template="order-confirmation",
        locale=locale,
        recipient=Recipient(email=f"buyer{i}@example.vn", name=NAMES[i % len(NAMES)]),
        context={
            "order_id": f"FS-2026-{i:06d}",
            "currency": "USD",
            "total": "49.00",
            "items": [
                {
                    "product_name": "SPM Dictionary Pro",
                    "quantity": 1,
                    "download_url": "https://spmgroup.vn/dl/dict-5.1.0.exe",
                    "license_keys": ["7KQ2M-XW4PD-9TRHC-B3NVA-L6ZEY"],
                }
            ],
        },
    )


def reference_message(request: NotificationRequested, mail_from: str) -> EmailMessage:
    """What a plain implementation does: EmailMessage, a text part and an HTML alternative."""
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = formataddr((request.recipient.name or "", request.recipient.email))
    message["Subject"] = f"Đơn hàng {request.context.get('order_id', '')}: giấy phép và liên kết tải về"
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain="spmgroup.vn")
    body = (
        f"Xin chào {request.recipient.name},\n\nCảm ơn bạn đã đặt hàng.\n\n{orjson.dumps(request.context).decode()}\n"
    )
    message.set_content(body)
    message.add_alternative(f"<html><body><p>{body}</p></body></html>", subtype="html")
    return message


async def reference(port: int, requests: list[NotificationRequested], mail_from: str) -> float:
    started = time.perf_counter()
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as smtp:
        for request in requests:
            await smtp.send_message(reference_message(request, mail_from))
    return len(requests) / (time.perf_counter() - started)


def render_only(requests: list[NotificationRequested], mail_from: str) -> float:
    composer = Composer(mail_from)
    started = time.perf_counter()
    for i, r in enumerate(requests):
        composer.compose(
            template=r.template,
            locale=r.locale,
            email=r.recipient.email,
            name=r.recipient.name,
            context=r.context,
            message_id=f"<bench-{i}@spmgroup.vn>",
        )
    return len(requests) / (time.perf_counter() - started)


async def wait_sent(conn: Connection, run: str, count: int, timeout: float) -> float:
    started = time.perf_counter()
    while True:
        done = await conn.fetchval(
            "SELECT count(*) FROM notifier.deliveries WHERE request_event_id LIKE $1 AND status = 'sent'", f"{run}-%"
        )
        if done >= count:
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"{done} of {count} sent after {timeout}s")
        await asyncio.sleep(0.02)


async def wait_sent_events(conn: Connection, count: int, timeout: float) -> None:
    started = time.perf_counter()
    while await conn.fetchval("SELECT count(*) FROM notifier.outbox WHERE published_at IS NULL") > 0 or (
        await conn.fetchval("SELECT count(*) FROM notifier.outbox WHERE event_type = 'notification.sent'") < count
    ):
        if time.perf_counter() - started > timeout:
            raise TimeoutError("outbox not drained")
        await asyncio.sleep(0.05)


def cpu() -> float:
    """CPU seconds (user + system) this process has used: the notifier runs in it."""
    times = os.times()
    return times.user + times.system


async def sender_stage(
    world: World, settings: Settings, requests: list[NotificationRequested], run: str
) -> tuple[float, float, float]:
    """Deliveries recorded in one go; time until every one is sent and marked, then until the events are out."""
    key = settings.recipient_key()
    rows = []
    for i, r in enumerate(requests):
        event_id = f"{run}-{i}"
        ref = recipient_ref(r.recipient.email, key)
        rows.append(
            (
                event_id,
                ref,
                r.purpose,
                r.template,
                r.locale,
                stable_message_id(f"bench|{event_id}|{ref}", settings.mail_from),
                orjson.dumps(r.model_dump(mode="json")).decode(),
            )
        )
    conn = await world.admin()
    try:
        before = await conn.fetchval("SELECT count(*) FROM notifier.outbox WHERE event_type = 'notification.sent'")
        async with conn.transaction():
            await conn.copy_records_to_table(
                "deliveries",
                schema_name="notifier",
                columns=["request_event_id", "recipient_ref", "purpose", "template", "locale", "message_id", "request"],
                records=rows,
            )
            await conn.execute("SELECT pg_notify('spm_notifier_due', '')")
        started, used = time.perf_counter(), cpu()
        elapsed = await wait_sent(conn, run, len(rows), timeout=600)
        await wait_sent_events(conn, before + len(rows), timeout=600)
        with_events = time.perf_counter() - started
        used = cpu() - used
    finally:
        await conn.close()
    return len(rows) / elapsed, len(rows) / with_events, used / len(rows)


async def end_to_end(
    world: World, settings: Settings, requests: list[NotificationRequested], run: str
) -> tuple[float, float]:
    """Requests published by a child process (its CPU is not the notifier's); (e-mails/s, CPU s per e-mail)."""
    # Each request from the service the notifier takes it from (contact answers messages, orders the rest).
    events = [
        new_event(
            NOTIFICATION_REQUESTED,
            "urn:spm:contact" if r.purpose == "answer-message" else "urn:spm:orders",
            r,
            event_id=f"{run}-{i}",
            purpose=r.purpose,
        )
        for i, r in enumerate(requests)
    ]
    conn = await world.admin()
    try:
        child = await publish_in_child(AMQP_URL, settings.exchange, events)
        started, used = time.perf_counter(), cpu()
        await wait_sent(conn, run, len(requests), timeout=600)
        elapsed, used = time.perf_counter() - started, cpu() - used
        await child.wait()
    finally:
        await conn.close()
    return len(requests) / elapsed, used / len(requests)


def start_sink(port: int, directory: str) -> subprocess.Popen[bytes]:
    sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    user = ["-u", "root"] if os.geteuid() == 0 else []
    child = subprocess.Popen(
        [sink, *user, "-R", directory, f"127.0.0.1:{port}", "256"], stdout=subprocess.DEVNULL, cwd=directory
    )
    time.sleep(0.3)
    if child.poll() is not None:
        raise SystemExit("smtp-sink did not start (is the Debian package postfix installed?)")
    return child


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--count", type=int, default=5000, help="e-mails per measurement")
    parser.add_argument("--connections", type=int, default=16, help="SMTP connections of the notifier")
    args = parser.parse_args()
    count = 300 if args.quick else args.count
    configure_logging("bench", "console", "warning")
    random.seed(1)

    port = free_port()
    world = new_world()
    directory = tempfile.mkdtemp(prefix="notifier-bench-")
    sink = start_sink(port, directory)
    runtime = None
    try:
        await world.create()
        settings = world.settings(
            Settings,
            smtp_port=port,
            notifier_smtp_connections=args.connections,
            notifier_batch_size=500,
            notifier_poll_seconds=0.2,
            outbox_batch=1000,
            log_level="warning",
        )
        requests = [sample_request(i) for i in range(count)]
        print(f"notifier send benchmark: {count} e-mails per figure, {args.connections} SMTP connections, smtp-sink")
        print(f"  load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")

        ref_rate = await reference(port, requests, settings.mail_from)
        print(f"  reference (email package + aiosmtplib, 1 connection): {ref_rate:8.0f} e-mails/s")
        render_rate = render_only(requests, settings.mail_from)
        print(f"  render only (notifier Composer, no I/O):              {render_rate:8.0f} e-mails/s")

        runtime = build(settings)
        await runtime.start()
        sent_rate, with_events, sender_cpu = await sender_stage(world, settings, requests, "stage")
        print(f"  notifier sender (recorded -> sent and marked):        {sent_rate:8.0f} e-mails/s")
        print(
            f"    ... and every notification.sent published:         {with_events:8.0f} e-mails/s"
            f"   CPU {sender_cpu * 1e6:5.0f} µs/e-mail"
        )
        e2e, e2e_cpu = await end_to_end(world, settings, requests, "e2e")
        print(
            f"  end to end (requested on RabbitMQ -> sent, marked):   {e2e:8.0f} e-mails/s"
            f"   CPU {e2e_cpu * 1e6:5.0f} µs/e-mail"
        )
        print(f"  load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if runtime is not None:
            await runtime.stop()
        sink.terminate()
        sink.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)
        await world.destroy()


if __name__ == "__main__":
    uvloop.run(main())  # the loop the service runs on (uvicorn picks uvloop)
