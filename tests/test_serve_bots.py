"""`stylejax serve` starts the chat bots whose tokens are set: both bots, run by the real
service process (with a worker process), against the fake Telegram and Discord servers."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from fake_discord import FakeDiscord, FakeUser
from fake_telegram import FakeTelegram, user
from photos import photo_png
from PIL import Image
from service_process import Server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

TELEGRAM_TOKEN = "123456789:AAH-serve-test-token-not-for-logs"
DISCORD_TOKEN = "MTIzNDU2Nzg5.serve-test.discord-token-not-for-logs"


def _rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32)


def test_serve_runs_the_configured_bots(tmp_path):
    async def scenario() -> str:
        telegram = FakeTelegram(TELEGRAM_TOKEN)
        telegram_url = await telegram.start()
        async with FakeDiscord(DISCORD_TOKEN) as discord:
            srv = await asyncio.to_thread(
                Server, tmp_path, 1, TELEGRAM_BOT_TOKEN=TELEGRAM_TOKEN,
                STYLEJAX_TELEGRAM_API_URL=telegram_url, DISCORD_BOT_TOKEN=DISCORD_TOKEN,
                STYLEJAX_DISCORD_API_URL=discord.api_url)
            try:
                await asyncio.wait_for(discord.synced.wait(), 60)
                await telegram.wait_for(lambda c: c.method == "setMyCommands", timeout=60)

                photo = photo_png(96, 128, seed=5)
                ada = user(101, "Ada")
                mark = telegram.mark()
                telegram.photo(ada, photo, caption="starry 0.8")
                sent = await telegram.reply("sendPhoto", ada["id"], after=mark, timeout=90)
                out = _rgb(sent.upload("photo"))
                assert out.shape == _rgb(photo).shape and np.abs(out - _rgb(photo)).mean() > 8

                alice = FakeUser(7, "alice")
                asked = await discord.slash(alice, "stylize", image=discord.upload("p.png", photo),
                                            style="great-wave")
                msg = await discord.result_of(asked, timeout=90)
                (att,) = msg["attachments"]
                out = _rgb(discord.file(att))
                assert out.shape == _rgb(photo).shape and np.abs(out - _rgb(photo)).mean() > 8
            finally:
                code = await asyncio.to_thread(srv.stop)
                await telegram.stop()
            assert code == 0, srv.log()
            return srv.log()

    log = asyncio.run(scenario())
    assert "started the telegram bot" in log and "started the discord bot" in log
    assert TELEGRAM_TOKEN not in log and DISCORD_TOKEN not in log
    assert TELEGRAM_TOKEN.split(":")[1] not in log
