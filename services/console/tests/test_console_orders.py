"""Order look-up in the console: by address or by the shop's order id, license keys masked until an
operator reveals them, and each search, view and reveal an audited action."""

from __future__ import annotations

import uuid

from console_helpers import System, csrf_of, logged_in


async def test_look_up_an_order_and_reveal_its_keys(system: System) -> None:
    buyer = f"mua-{uuid.uuid4().hex[:8]}@example.vn"
    shop_id = await system.place_order(buyer)
    [key] = await system.license_keys(shop_id)
    email = await system.operator()
    async with logged_in(system, email) as client:
        by_email = await client.get("/orders", params={"q": buyer.upper()})
        assert by_email.status_code == 200 and shop_id in by_email.text
        by_id = await client.get("/orders", params={"q": shop_id})
        assert shop_id in by_id.text
        [link] = [line for line in by_id.text.splitlines() if 'href="/orders/' in line]
        order_path = link.split('href="')[1].split('"')[0]

        page = await client.get(order_path)
        assert page.status_code == 200 and buyer in page.text
        assert key not in page.text and key.rsplit("-", 1)[-1] in page.text  # masked to its last group
        assert page.headers["cache-control"] == "no-store"

        # Without the form's token nothing is revealed.
        forged = await client.post(f"{order_path}/reveal", data={"csrf_token": "forged"})
        assert forged.status_code == 403 and key not in forged.text
        revealed = await client.post(f"{order_path}/reveal", data={"csrf_token": csrf_of(page.text)})
        assert revealed.status_code == 200 and key in revealed.text
        assert key not in (await client.get(order_path)).text  # masked again

        nothing = await client.get("/orders", params={"q": "FS-0000-NOTHING"})
        assert nothing.status_code == 200 and "Không tìm thấy đơn hàng nào." in nothing.text
        bad = await client.get("/orders", params={"q": "not@an address"})
        assert bad.status_code == 422

    order_target = f"orders.order:{order_path.rsplit('/', 1)[-1]}"
    actions = [(a["action"], a["target"]) for a in await system.actions(email)][1:]
    assert actions[:5] == [
        ("orders.searched", f"orders.search:{buyer.upper()}"),
        ("orders.searched", f"orders.search:{shop_id}"),
        ("order.viewed", order_target),
        ("license_keys.revealed", order_target),
        ("order.viewed", order_target),
    ]
