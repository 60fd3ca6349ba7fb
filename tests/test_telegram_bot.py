"""The Telegram bot, for real: PTB's `Application` against a fake Bot API server on loopback.

Each test runs `run_telegram` (polling) against `FakeTelegram`, with the service core and a real
`Worker` thread stylising pictures; the test plays the users and reads what the bot sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fake_telegram import BOT_USERNAME, Call, FakeTelegram, user
from photos import photo_png
from PIL import Image

from bots.config import Settings
from bots.core import StyleService
from bots.frontend import MAX_CALLBACK_BYTES
from bots.i18n import t
from bots.telegram_bot import run_telegram
from bots.worker import Worker
from storage import JobState
from stylejax.custom_style import CustomStyleConfig
from stylejax.stylizer import Stylizer

TOKEN = "123456789:AAH-test-token-never-to-be-logged_xyz"
ADA, BEN = user(101, "Ada"), user(202, "Ben")
ZHOU = user(303, "Zhou", "zh-hans")
GROUP = -1001


class QuickStylizer(Stylizer):
    """Custom styles in a few steps at one scale: the optimisation path, without the wait.

    The service has no setting for the custom-style time budget (the worker always uses the
    30 s default), so the tests shorten it here.
    """

    def stylize_with_image(self, photo, style_image, *, max_size=512, config=None, **kw):
        config = config or CustomStyleConfig(size=max_size, steps=16, scales=(1.0,),
                                             scale_steps=(1.0,), time_budget_s=20.0)
        return super().stylize_with_image(photo, style_image, max_size=max_size,
                                          config=config, **kw)


@pytest.fixture(scope="module")
def stylizer() -> Stylizer:
    return QuickStylizer(backend="onnx")


@dataclass
class Bot:
    fake: FakeTelegram
    service: StyleService

    def start_worker(self, stylizer: Stylizer) -> None:
        worker = Worker(self.service, stylizer=stylizer)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        self._workers.append((worker, thread))

    def __post_init__(self) -> None:
        self._workers: list[tuple[Worker, threading.Thread]] = []

    def stop_workers(self) -> None:
        for worker, thread in self._workers:
            worker.stop.set()
            thread.join(30)


@contextlib.asynccontextmanager
async def running_bot(tmp_path: Path, stylizer: Stylizer | None = None,
                      **overrides) -> AsyncIterator[Bot]:
    """The fake Bot API, the service (with a worker unless `stylizer` is None) and the bot."""
    fake = FakeTelegram(TOKEN)
    url = await fake.start()
    values = dict(data_dir=tmp_path / "data", telegram_bot_token=TOKEN, telegram_api_url=url,
                  rate_per_minute=600, rate_burst=50, max_side=128, max_active_jobs=4)
    settings = Settings(**{**values, **overrides})
    service = StyleService(settings)
    bot = Bot(fake, service)
    if stylizer is not None:
        bot.start_worker(stylizer)
    stop = asyncio.Event()
    task = asyncio.create_task(run_telegram(service, settings, stop, poll_timeout=1))
    try:
        await fake.wait_for(lambda c: c.method == "setMyCommands", timeout=20)
        while fake.polls == 0:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        yield bot
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        bot.stop_workers()
        await fake.stop()
        service.close()


def run(coro) -> None:
    asyncio.run(asyncio.wait_for(coro, 120))


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# -- tests -----------------------------------------------------------------------------------------
def test_start_greets_in_the_users_language_and_sets_the_menu(tmp_path):
    async def scenario():
        async with running_bot(tmp_path) as bot:
            fake = bot.fake
            menus = {c.params.get("language_code"): c.params["commands"]
                     for c in fake.calls if c.method == "setMyCommands"}
            assert {"en", "zh"} <= set(menus)
            assert {c["command"] for c in menus["en"]} >= {"start", "styles", "custom",
                                                          "settings", "history", "forget"}
            assert menus["zh"][0]["description"] == t("cmd_start", "zh")

            m = fake.mark()
            fake.command(ADA, "/start")
            hello = await fake.reply("sendMessage", ADA["id"], after=m)
            assert t("welcome", "en") in hello.text and "/styles" in hello.text
            fake.command(ZHOU, "/start")
            hello = await fake.reply("sendMessage", ZHOU["id"], after=m)
            assert t("welcome", "zh") in hello.text
            fake.command(ADA, "/help")
            assert (await fake.reply("sendMessage", ADA["id"], after=m,
                                     text="/forget")).text == t("help", "en")
    run(scenario())
