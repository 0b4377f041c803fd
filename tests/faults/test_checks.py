"""The checkers themselves, on made-up outcomes: a checker that cannot see a loss or a duplicate proves
nothing when it says zero."""

from __future__ import annotations

from collections import Counter
from typing import Any

from spm_common.testing.smtp import Received, SmtpServer

from .checks import CONTACT_ACK, ORDER_CONFIRMATION, UPGRADE_NOTICE, Counts, MailIndex, _tally, count_mail
from .work import Workload


def mail(rcpt: str, message_id: str, unsubscribe: bool = False) -> Received:
    head = f"From: x@example.com\r\nMessage-ID: <{message_id}@example.com>\r\n"
    if unsubscribe:
        head += "List-Unsubscribe: <https://spmgroup.vn/u>\r\n"
    return Received("x@example.com", [rcpt], (head + "\r\nbody\r\n").encode())


def workload() -> Workload:
    work = Workload(None, "checker", "FT-TEST")  # type: ignore[arg-type]  # no stream runs here
    work.slug = "checker"
    return work


def test_each_mail_is_counted_lost_duplicated_or_in_the_crash_window() -> None:
    work = workload()
    work.contact.accepted = ["fault-checker-c0@example.com", "fault-checker-c1@example.com"]
    work.contact.unknown = ["fault-checker-c2@example.com"]  # the form got no answer, but it was stored
    work.orders.accepted = {
        "FT-checker-0": "fault-checker-o0@example.com",
        "FT-checker-9": "fault-checker-o9@example.com",
    }
    work.release_event_id = "release"
    smtp = SmtpServer()
    smtp.received = [
        mail("fault-checker-c0@example.com", "a"),
        mail("fault-checker-c0@example.com", "a"),  # the same Message-ID again: the crash window
        # c1's acknowledgement never came: lost
        mail("fault-checker-c2@example.com", "h"),  # may come, once
        mail("fault-checker-o0@example.com", "b"),
        mail("fault-checker-o0@example.com", "c", unsubscribe=True),  # o0 bought the upgraded product
        mail("fault-checker-o9@example.com", "d"),
        mail("fault-checker-o9@example.com", "e"),  # a second confirmation, new Message-ID: a duplicate
        mail("fault-checker-o9@example.com", "f", unsubscribe=True),  # an upgrade notice o9 is not owed
        mail("fault-other-c0@example.com", "g"),  # another scenario's: not counted here
    ]
    counts = Counts()
    count_mail(MailIndex(smtp), work, counts)
    assert counts.lost == Counter({f"mail {CONTACT_ACK}": 1})
    assert counts.duplicated == Counter({f"mail {ORDER_CONFIRMATION}": 1, f"mail {UPGRADE_NOTICE} never asked for": 1})
    assert counts.window == 1


def test_an_item_whose_outcome_is_unknown_may_be_missing_but_not_twice() -> None:
    counts = Counts()
    found: dict[str, Any] = {"a": 1, "b": 2, "u1": 1, "u2": 2}
    _tally(counts, "orders", found, accepted=["a", "b", "c"], unknown=["u1", "u2", "u3"])
    assert counts.lost == Counter({"orders": 1})
    assert counts.duplicated == Counter({"orders": 2})
