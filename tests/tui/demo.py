"""Fixed, realistic data for the snapshot test and the README screenshot.

``python -m tests.tui.demo docs/tui.svg`` writes the screenshot; the snapshot test renders the
same screen, so the picture in the README is what the tests check.
"""

from __future__ import annotations

import sys
from typing import Any

from textual.pilot import Pilot

from tests.tui.fake import FakeAggregator, run
from tui.app.app import DashboardApp

SIZE = (160, 40)
TOPICS = {  # topic: (source, events per round, duplicates per round)
    "auth.login": ("auth-service", 9, 2),
    "orders.created": ("order-service", 6, 1),
    "payment.captured": ("payment-service", 4, 1),
    "inventory.reserved": ("stock-service", 5, 0),
    "email.sent": ("mailer", 3, 1),
    "search.query": ("search-api", 11, 4),
}
ROUNDS = (1, 3, 2, 4, 6, 5, 8, 7, 9, 6, 10, 8)  # load multipliers, one per refresh


def payload(topic: str) -> Any:
    def make(seq: int) -> dict[str, Any]:
        if topic == "auth.login":
            return {
                "user": f"u{seq * 37 % 1000:03d}",
                "ok": seq % 7 != 0,
                "ip": f"10.0.3.{seq % 250}",
            }
        if topic == "orders.created":
            return {"order": f"o-{seq:06d}", "items": seq % 5 + 1, "total": seq % 97 + 0.99}
        if topic == "payment.captured":
            return {"order": f"o-{seq:06d}", "amount": seq % 300 + 0.5, "currency": "EUR"}
        if topic == "inventory.reserved":
            return {"sku": f"SKU-{seq % 113:04d}", "qty": seq % 3 + 1}
        if topic == "email.sent":
            return {"template": "receipt", "to": f"user{seq % 50}@example.com"}
        return {"q": ["trio", "sqlite wal", "textual", "dedup"][seq % 4], "hits": seq % 40}

    return make


def event_id(topic: str, seq: int) -> str:
    return f"{seq * 2654435761 % 16**8:08x}-{seq % 9973:04x}"


def load(fake: FakeAggregator, multiplier: int) -> None:
    for _ in range(multiplier):
        for topic, (source, events, duplicates) in TOPICS.items():
            fake.publish(
                topic, events, duplicates, source=source, payload=payload(topic), event_id=event_id
            )


def demo_aggregator() -> FakeAggregator:
    fake = FakeAggregator(uptime=3725.0)
    for _ in range(30):
        load(fake, 10)
    return fake


def demo_app() -> tuple[DashboardApp, FakeAggregator]:
    fake = demo_aggregator()
    return DashboardApp(http=fake.client(), interval=3600.0, tail_size=60), fake


def warm_up(fake: FakeAggregator) -> Any:
    """A ``run_before`` for ``snap_compare``: one refresh per round of load, a second apart."""

    async def run_before(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, DashboardApp)
        await app.workers.wait_for_complete()
        for multiplier in ROUNDS:
            fake.uptime += 1.0
            load(fake, multiplier)
            await app.refresh_now()
        await pilot.pause()

    return run_before


async def screenshot(path: str) -> None:
    app, fake = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await warm_up(fake)(pilot)
        app.save_screenshot(path)


if __name__ == "__main__":
    run(screenshot(sys.argv[1] if len(sys.argv) > 1 else "docs/tui.svg"))
