"""Card scrubber: its false-positive rate on numbers that are not cards, and its cost on a typical delivery.

    uv run python -m bench.cards [--quick]

No servers: `spm_common.cards` alone. The corpus is what the system's own data looks like: order ids (the
shop's `FS-2026-...` and purely numeric ones), Vietnamese phone numbers (+84 and 0-prefixed, in the usual
groupings), license keys as `orders.licenses` makes them and references (SHA-256 hex digests, as recipient
and subject references and chain hashes are); each alone, and all of one kind in one text
(as an operator's note or a message would list them). A false positive is a text `mask_text` changes.
The cost is `scrub_body` on an `order.placed` CloudEvent as the shop publishes it (the consumer's hook:
it runs on every delivery to orders and audit), with and without a non-ASCII name, and on one carrying
a card number.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import timeit
import uuid
from collections.abc import Callable

import orjson
from orders import licenses
from spm_common import cards
from spm_common.envelope import new_event_body

SEED = 20261205


def order_ids(rng: random.Random, n: int) -> dict[str, list[str]]:
    """Order ids, one corpus per shape: the contract's, the tests', UUIDs, and numbers as long as a card
    number (which a Luhn-valid run of 13-19 digits, what the contract says to mask, cannot tell apart)."""

    def date() -> str:
        return f"{rng.randrange(2020, 2027)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"

    def digits(count: int) -> str:
        return str(rng.randrange(10 ** (count - 1), 10**count))

    shapes: dict[str, Callable[[], str]] = {
        "order ids FS-2026-000123": lambda: f"FS-{rng.randrange(2020, 2027)}-{rng.randrange(10**6):06d}",
        "order ids FS-2026-7F3A9C21D0": lambda: f"FS-2026-{uuid.UUID(int=rng.getrandbits(128)).hex[:10].upper()}",
        "order ids as UUIDs": lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "order ids 20261205-000123": lambda: f"{date()}-{rng.randrange(10**6):06d}",
        "order numbers of 13 or 16 digits": lambda: digits(rng.choice((13, 16))),
    }
    return {name: [make() for _ in range(n)] for name, make in shapes.items()}


def phones(rng: random.Random, n: int) -> list[str]:
    def digits(k: int) -> str:
        return "".join(rng.choice("0123456789") for _ in range(k))

    prefixes = ["90", "91", "93", "94", "96", "97", "98", "86", "88", "89", "70", "76", "77", "78", "79", "32", "33"]
    shapes: list[Callable[[str, str], str]] = [
        lambda p, r: f"+84 {p[0]}{p[1]}{r[0]} {r[1:4]} {r[4:]}",
        lambda p, r: f"+84{p}{r}",
        lambda p, r: f"+84 {p} {r[:3]} {r[3:]}",
        lambda p, r: f"0{p} {r[:3]} {r[3:]}",
        lambda p, r: f"0{p}{r}",
        lambda p, r: f"0{p}.{r[:3]}.{r[3:]}",
        lambda p, r: f"0{p}-{r[:3]}-{r[3:]}",
        lambda p, r: f"(+84) {p} {r[:3]} {r[3:]}",
        lambda p, r: f"0{p[0]}{p[1]}{r[0]} {r[1:4]} {r[4:]}",
    ]
    return [rng.choice(shapes)(rng.choice(prefixes), digits(7)) for _ in range(n)]


def hex_digests(rng: random.Random, n: int) -> list[str]:
    return [hashlib.sha256(rng.randbytes(16)).hexdigest() for _ in range(n)]


def license_keys(n: int) -> list[str]:
    return licenses.new_keys(n)


def rate(texts: list[str]) -> float:
    return sum(cards.mask_text(t)[1] > 0 for t in texts) / len(texts)


def typical_bodies() -> dict[str, bytes]:
    data = {
        "order_id": "FS-2026-7F3A9C21D0",
        "placed_at": "2026-11-29T03:59:12Z",
        "currency": "USD",
        "total": "49.00",
        "purchaser": {
            "name": "Test Buyer",
            "email": "buyer-7f3a9c21d0@example.com",
            "phone": "+84 912 345 678",
            "address": {"line1": "12 Trang Tien", "city": "Ha Noi", "postal_code": "100000", "country": "VN"},
            "locale": "vi",
        },
        "items": [{"sku": "SPM-DICT-PRO", "product_name": "SPM Dictionary Pro", "quantity": 1, "unit_price": "49.00"}],
        "marketing_consent": False,
    }
    vietnamese = orjson.loads(orjson.dumps(data))
    vietnamese["purchaser"]["name"] = "Nguyễn Văn Thử"
    vietnamese["purchaser"]["address"].update(line1="12 Tràng Tiền", city="Hà Nội")
    with_card = orjson.loads(orjson.dumps(vietnamese))
    with_card["note"] = "paid with 4111 1111 1111 1111"
    source = "https://shop.example/orders"
    return {
        "ASCII": new_event_body("order.placed", source, data).body,
        "Vietnamese name and address": new_event_body("order.placed", source, vietnamese).body,
        "carrying a card number": new_event_body("order.placed", source, with_card).body,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 2_000 if args.quick else 20_000
    rng = random.Random(SEED)
    corpora = {
        **order_ids(rng, n),
        "phone numbers (VN)": phones(rng, n),
        "license keys": license_keys(n),
        "references (SHA-256 hex digests)": hex_digests(rng, n),
    }
    print(f"false positives of mask_text, {n:,} texts each:")
    for name, texts in corpora.items():
        print(f"  {name:<49} {rate(texts):8.3%}")
    # Several of one kind in one text, as a note or a message lists them: ", " between them, or one a line
    # (a line break separates digits, so a list of numbers one a line reads as one long number).
    for joiner, label in ((", ", "three, comma-separated"), ("\n", "three, one a line")):
        for name, texts in corpora.items():
            groups = [joiner.join(texts[i : i + 3]) for i in range(0, len(texts) - 2, 3)]
            print(f"  {label + ': ' + name:<49} {rate(groups):8.3%}")
    print("scrub_body on an order.placed CloudEvent:")
    number = 2_000 if args.quick else 20_000
    for name, body in typical_bodies().items():

        def scrub(b: bytes = body) -> bytes:  # what a lambda with a default did, typed
            return cards.scrub_body(b)

        seconds = min(timeit.repeat(scrub, number=number, repeat=5)) / number
        print(f"  {name:<49} {seconds * 1e6:8.2f} µs ({len(body)} bytes)")


if __name__ == "__main__":
    main()
