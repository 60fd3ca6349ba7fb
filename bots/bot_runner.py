"""The chat bots `stylejax serve` runs: those whose tokens are configured, each on its own
asyncio loop in a thread (`bots/telegram_bot.py`, `bots/discord_bot.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from .config import Settings
from .worker_pool import join_all

log = logging.getLogger("stylejax.serve")


class ChatBots:
    """The chat bots whose tokens are configured, each on its own asyncio loop in a thread."""

    def __init__(self, service, settings: Settings):
        self.service, self.settings = service, settings
        self.threads: list[threading.Thread] = []
        self._stops: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._lock = threading.Lock()

    def configured(self) -> list[str]:
        names = []
        if self.settings.telegram_bot_token is not None:
            names.append("telegram")
        if self.settings.discord_bot_token is not None:
            names.append("discord")
        return names

    def _run(self, name: str) -> None:
        if name == "telegram":
            from .telegram_bot import run_telegram as run_bot
        else:
            from .discord_bot import run_discord as run_bot

        async def main() -> None:
            stop = asyncio.Event()
            with self._lock:
                self._stops.append((asyncio.get_running_loop(), stop))
            await run_bot(self.service, self.settings, stop)

        try:
            asyncio.run(main())
        except Exception as err:  # noqa: BLE001 - one broken bot must not stop the others
            # the repr of a platform error never holds the token (adapters use SecretStr)
            log.error("%s bot stopped on an error: %s", name, type(err).__name__)

    def start(self) -> None:
        for name in self.configured():
            t = threading.Thread(target=self._run, args=(name,), name=f"stylejax-{name}",
                                 daemon=True)
            t.start()
            self.threads.append(t)
            log.info("started the %s bot", name)

    def stop(self) -> None:
        """Ask every running bot to stop; safe to call again, and after a bot has ended."""
        with self._lock:
            for loop, stop in self._stops:
                with contextlib.suppress(RuntimeError):  # that bot's loop already closed
                    loop.call_soon_threadsafe(stop.set)

    def join(self, timeout_s: float) -> bool:
        return join_all(self.threads, timeout_s)
