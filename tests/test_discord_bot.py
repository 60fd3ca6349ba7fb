"""The Discord front end, for real: discord.py against a fake Discord (REST + gateway) on loopback.

Each test starts the fake, runs `run_discord` (login, gateway, command sync) with a service whose
worker thread really stylises (ONNX backend), sends interactions as Discord would, and checks
what the bot answered: the files it posted, the buttons it attached, its ephemeral refusals.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from fake_discord import EPHEMERAL, FakeDiscord, FakeUser, Sent
from photos import photo_png
from PIL import Image

from bots.config import Settings
from bots.core import StyleService
from bots.discord_bot import run_discord
from bots.frontend import decode_action
from bots.worker import Worker
from storage import JobState
from stylejax.stylizer import Stylizer

TOKEN = "MTE4.fake-discord-token.for-tests-only-0123456789"
ALICE = FakeUser(101, "alice")
BOB = FakeUser(202, "bob")
LI = FakeUser(303, "li", locale="zh-CN")
DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def stylizer() -> Stylizer:
    return Stylizer(backend="onnx")


@contextlib.asynccontextmanager
async def running_bot(tmp_path: Path, stylizer: Stylizer | None,
                      **overrides) -> AsyncIterator[tuple[FakeDiscord, StyleService]]:
    """The fake Discord, a service (+ a worker thread unless `stylizer` is None) and the bot."""
    async with FakeDiscord(TOKEN) as fake:
        values = dict(data_dir=tmp_path / "data", rate_per_minute=600, rate_burst=20,
                      max_side=256, max_active_jobs=3, custom_style_seconds=6.0,
                      custom_style_size=64, discord_api_url=fake.api_url,
                      DISCORD_BOT_TOKEN=TOKEN)
        values.update(overrides)
        settings = Settings(**values)
        service = StyleService(settings)
        worker = thread = None
        if stylizer is not None:
            worker = Worker(service, stylizer=stylizer)
            thread = threading.Thread(target=worker.run, daemon=True)
            thread.start()
        stop = asyncio.Event()
        bot = asyncio.create_task(run_discord(service, settings, stop))
        try:
            await asyncio.wait_for(asyncio.gather(fake.identified.wait(), fake.synced.wait()),
                                   10)
            yield fake, service
        finally:
            stop.set()
            await asyncio.wait_for(bot, 10)
            if worker is not None:
                worker.stop.set()
                thread.join(30)
            service.close()


def run(coro) -> None:
    asyncio.run(asyncio.wait_for(coro, 80))


def _rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.float32)


def _components(message: dict) -> dict[str, dict]:
    """verb → component of a message the bot posted."""
    return {decode_action(c["custom_id"]).verb: c for row in message["components"]
            for c in row["components"]}


def _callback_type(fake: FakeDiscord, sent: Sent) -> int:
    call = fake.callback(sent)
    assert call is not None, "no interaction callback"
    return call.json["type"]


async def _stylized(fake: FakeDiscord, sent: Sent, photo: bytes) -> tuple[dict, np.ndarray]:
    msg = await fake.result_of(sent)
    (att,) = msg["attachments"]
    out = _rgb(fake.file(att))
    src = _rgb(photo)
    assert out.shape == src.shape                       # the photo's size, not the model's
    assert np.abs(out - src).mean() > 8                 # stylised, not the photo
    assert msg["embeds"][0]["image"]["url"] == f"attachment://{att['filename']}"
    return msg, out
