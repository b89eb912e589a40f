"""Shared fixtures. Trio tests are marked ``@pytest.mark.trio`` one by one (no trio_mode), so the
Textual tests, which run on asyncio, stay apart."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from aggregator.config import Config
from aggregator.service import Running, serve


@dataclasses.dataclass
class Server:
    """An in-process aggregator on 127.0.0.1:0 and an HTTP client for it."""

    config: Config
    running: Running
    client: httpx.AsyncClient

    async def stats(self) -> dict[str, Any]:
        response = await self.client.get("/stats")
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    async def publish(self, body: Any, **kwargs: Any) -> httpx.Response:
        return await self.client.post("/publish", json=body, **kwargs)

    async def all_events(self, **params: Any) -> list[dict[str, Any]]:
        response = await self.client.get("/events", params={"limit": 1000, **params})
        assert response.status_code == 200
        events: list[dict[str, Any]] = response.json()
        return events


@asynccontextmanager
async def open_server(data_dir: Path, **settings: Any) -> AsyncIterator[Server]:
    """Serve until the block ends, then shut down gracefully (as SIGTERM would)."""
    config = Config(port=0, data_dir=data_dir, **settings)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        running: Running = await nursery.start(partial(serve, config, shutdown=shutdown))
        async with httpx.AsyncClient(base_url=running.url, timeout=30) as client:
            yield Server(config, running, client)
        shutdown.set()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with open_server(tmp_path / "data") as server:
        yield server
