"""The Telegram bot, for real: PTB's `Application` against a fake Bot API server on loopback.

Each test runs `run_telegram` (polling) against `FakeTelegram`, with the service core and a real
`Worker` thread stylising pictures; the test plays the users and reads what the bot sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from fake_telegram import BOT_USERNAME, Call, FakeTelegram, transcript, user
from photos import photo_png
from PIL import Image

from bots.chat import MAX_CALLBACK_BYTES
from bots.config import Settings
from bots.core import StyleService
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

    The service's `custom_style_seconds` bounds the time, not the steps; a fixed 16 steps at one
    scale keeps these tests short and their pace (`step_delay_s`) under the test's control.
    """

    step_delay_s = 0.0  # > 0: each step takes at least this long (time to press Cancel)

    def run_custom(self, request, photo, style_image=None, *, config=None, progress=None,
                   **kw):
        config = config or CustomStyleConfig(size=512, steps=16, scales=(1.0,),
                                             scale_steps=(1.0,), time_budget_s=20.0)

        def paced(fraction: float, losses: dict) -> None:
            if progress is not None:
                progress(fraction, losses)
            time.sleep(self.step_delay_s)

        return super().run_custom(request, photo, style_image, config=config,
                                  progress=paced, **kw)


@pytest.fixture(scope="module")
def stylizer() -> Stylizer:
    return QuickStylizer(backend="onnx")


@dataclass
class Bot:
    """What a test holds: the fake Bot API (the users' side) and the service behind the bot."""

    fake: FakeTelegram
    service: StyleService
    workers: list[tuple[Worker, threading.Thread]] = field(default_factory=list)

    def start_worker(self, stylizer: Stylizer) -> None:
        worker = Worker.beside(self.service, stylizer=stylizer)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        self.workers.append((worker, thread))

    def stop_workers(self) -> None:
        for worker, thread in self.workers:
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
            m = fake.mark()
            fake.command(ADA, "/help")
            assert (await fake.reply("sendMessage", ADA["id"], after=m)).text == t("help", "en")
    run(scenario())


def _job_params(bot: Bot, user_id: int) -> list[dict]:
    """The user's jobs, newest first (what the bot asked the service to do)."""
    owner = bot.service.user("telegram", user_id)
    return [dict(j.params, state=j.state) for j in bot.service.history(owner)]


async def _result(fake: FakeTelegram, chat_id: int, after: int) -> Call:
    return await fake.reply("sendPhoto", chat_id, after=after, timeout=60)


@pytest.mark.slow
def test_photo_style_buttons_and_result_conversation(tmp_path, stylizer, caplog):
    """Photo → style keyboard → progress → picture; weaker, keep colours, another style, delete."""
    caplog.set_level(logging.DEBUG)
    photo = _sample_photo()

    async def scenario():
        async with running_bot(tmp_path, stylizer, max_side=256) as bot:
            fake = bot.fake
            m = fake.mark()
            sent = fake.photo(ADA, photo)
            menu = await fake.reply("sendMessage", ADA["id"], after=m)
            assert menu.text == t("choose_style", "en")
            assert menu.result["reply_to_message"]["message_id"] == sent["message_id"]
            labels = [label for label, _ in menu.buttons()]
            assert "Starry Night (van Gogh)" in labels and len(labels) == len(bot.service.styles)
            assert all(len(data.encode()) <= MAX_CALLBACK_BYTES for _, data in menu.buttons())

            m = fake.mark()
            fake.press(ADA, menu.result, menu.button("Starry Night"))
            status = await fake.wait_for(lambda c: c.method == "editMessageText"
                                         and c.params["message_id"] == menu.result["message_id"],
                                         after=m)
            assert status.text.startswith("⏳")
            result = await _result(fake, ADA["id"], m)
            assert result.text == t("done", "en", style="Starry Night (van Gogh)", strength=100)
            out, inp = decode(result.upload("photo")), decode(photo)
            assert out.shape == inp.shape
            assert np.abs(out.astype(float) - inp).mean() > 8  # stylised, not the photo
            await fake.wait_for(lambda c: c.method == "deleteMessage"
                                and c.params["message_id"] == menu.result["message_id"], after=m)
            assert [c.method for c in fake.answers(m)] == ["answerCallbackQuery"]

            # weaker: the same photo again at 75 %
            m = fake.mark()
            fake.press(ADA, result.result, result.button("Weaker"))
            weaker = await _result(fake, ADA["id"], m)
            assert "(75%)" in weaker.text
            assert _job_params(bot, ADA["id"])[0]["strength"] == 0.75
            assert np.abs(decode(weaker.upload("photo")).astype(float)
                          - decode(result.upload("photo"))).mean() > 2

            # keep colours: a toggle, the button says what it will do next
            m = fake.mark()
            fake.press(ADA, weaker.result, weaker.button("Keep colours"))
            kept = await _result(fake, ADA["id"], m)
            newest = _job_params(bot, ADA["id"])[0]
            assert newest["keep_colors"] is True and newest["strength"] == 0.75
            kept.button("Style colours")

            # another style: a picker, then the new picture
            m = fake.mark()
            fake.press(ADA, kept.result, kept.button("Another style"))
            picker = await fake.reply("sendMessage", ADA["id"], after=m,
                                      text=t("choose_style", "en"))
            fake.press(ADA, picker.result, picker.button("Great Wave"))
            waved = await _result(fake, ADA["id"], m)
            assert "The Great Wave" in waved.text
            assert _job_params(bot, ADA["id"])[0]["style"] == "great-wave"

            # delete: the picture and the job are gone
            m = fake.mark()
            fake.press(ADA, waved.result, waved.button("Delete"))
            await fake.wait_for(lambda c: c.method == "deleteMessage"
                                and c.params["message_id"] == waved.result["message_id"], after=m)
            assert fake.answers(m)[0].params.get("text") == t("deleted", "en")
            assert len(bot.service.history(bot.service.user("telegram", ADA["id"]))) == 3

            # the transcript of this conversation goes into the docs
            write_transcript(fake, photo, result)
        assert fake.calls and fake.unauthorised == 0

    run(scenario())
    logged = "\n".join(r.name + r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert caplog.records and TOKEN not in logged
    assert TOKEN.split(":")[1] not in logged


def write_transcript(fake: FakeTelegram, photo: bytes, result: Call) -> None:
    """With WRITE_TELEGRAM_DOCS=1: docs/telegram.md's sample conversation, from the recording."""
    if not os.environ.get("WRITE_TELEGRAM_DOCS"):
        return
    docs = Path(__file__).resolve().parent.parent / "docs"
    (docs / "images").mkdir(exist_ok=True)
    Image.fromarray(np.concatenate([decode(photo), decode(result.upload("photo"))], axis=1)
                    ).save(docs / "images" / "telegram_result.png")
    page = docs / "telegram.md"
    text = page.read_text(encoding="utf-8")
    start, end = "<!-- transcript:start -->\n", "<!-- transcript:end -->"
    head, rest = text.split(start)
    body = transcript(fake, {"Here is your picture in the style of Starry":
                             "images/telegram_result.png"})
    page.write_text(head + start + body + end + rest.split(end)[1], encoding="utf-8")


def _sample_photo() -> bytes:
    """A real photo (skimage's cat) when available: nicer in the docs; else a synthetic one."""
    try:
        from skimage import data
    except ImportError:
        return photo_png(96, 128, seed=3)
    buf = io.BytesIO()
    Image.fromarray(data.chelsea()).resize((256, 170), Image.LANCZOS).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_caption_shortcut_and_a_file_gets_the_full_resolution_file_back(tmp_path, stylizer):
    photo = photo_png(80, 112, seed=5)

    async def scenario():
        async with running_bot(tmp_path, stylizer) as bot:
            fake = bot.fake
            m = fake.mark()
            fake.document(ADA, photo, caption="starry 0.8")
            shown = await _result(fake, ADA["id"], m)
            assert shown.text == t("done", "en", style="Starry Night (van Gogh)", strength=80)
            full = await fake.reply("sendDocument", ADA["id"], after=m)
            assert decode(full.upload("document")).shape == decode(photo).shape
            params = _job_params(bot, ADA["id"])[0]
            assert params["style"] == "starry-night" and params["strength"] == 0.8
            assert not [c for c in fake.calls[m:] if c.method == "sendMessage"
                        and c.text == t("choose_style", "en")]  # no keyboard needed

            # a photo (not a file) gets a photo only; percent strength works too
            m = fake.mark()
            fake.photo(ADA, photo, caption="wave 60%")
            assert "(60%)" in (await _result(fake, ADA["id"], m)).text
            await asyncio.sleep(0.3)
            assert not [c for c in fake.calls[m:] if c.method == "sendDocument"]

            # with the "file" output setting, results come as (uncompressed) files only
            bot.service.update_settings(bot.service.user("telegram", ADA["id"]),
                                        settings={"output": "file"})
            m = fake.mark()
            fake.photo(ADA, photo, caption="wood")
            as_file = await fake.reply("sendDocument", ADA["id"], after=m, timeout=60)
            assert "Wood" in as_file.text and as_file.button("Stronger")
            assert decode(as_file.upload("document")).shape == decode(photo).shape
            assert not [c for c in fake.calls[m:] if c.method == "sendPhoto"]

            # /history: the list, and the last results as an album
            m = fake.mark()
            fake.command(ADA, "/history")
            listing = await fake.reply("sendMessage", ADA["id"], after=m)
            assert listing.text.startswith(t("history", "en"))
            assert listing.text.count("✅") == 3 and "Wood planks, 100%" in listing.text
            album = await fake.reply("sendMediaGroup", ADA["id"], after=m)
            assert [item["caption"][:40] for item in album.params["media"]] == [
                t("done", "en", style=s, strength=p)[:40] for s, p in
                (("Wood planks", 100), ("The Great Wave (Hokusai)", 60),
                 ("Starry Night (van Gogh)", 80))]
    run(scenario())


@pytest.mark.slow
def test_groups_need_a_mention_and_buttons_obey_only_their_owner(tmp_path, stylizer):
    photo = photo_png(64, 96, seed=7)

    async def scenario():
        async with running_bot(tmp_path, stylizer) as bot:
            fake = bot.fake
            m = fake.mark()
            fake.photo(ADA, photo, GROUP)                      # chatter, not for the bot
            fake.photo(ADA, photo, GROUP, caption="look at my cat")
            fake.photo(BEN, photo, GROUP, caption=f"@{BOT_USERNAME} wave 0.5")
            result = await _result(fake, GROUP, m)
            assert "(50%)" in result.text
            assert result.result["reply_to_message"]["from"]["id"] == BEN["id"]
            assert not any(c.chat_id == GROUP and c.method == "sendMessage"
                           and "cat" in c.text for c in fake.calls[m:])
            assert _job_params(bot, ADA["id"]) == []     # Ada's photos were ignored

            # Ada presses Ben's buttons: refused with an alert, nothing submitted
            m = fake.mark()
            fake.press(ADA, result.result, result.button("Stronger"))
            answer = await fake.wait_for(lambda c: c.method == "answerCallbackQuery", after=m)
            assert answer.params["text"] == t("not_yours", "en")
            assert len(_job_params(bot, BEN["id"])) == 1

            # a reply to the bot counts as addressing it: Ada gets a style keyboard…
            m = fake.mark()
            fake.photo(ADA, photo, GROUP, reply_to=result.result)
            menu = await fake.reply("sendMessage", GROUP, after=m, text=t("choose_style", "en"))
            # …which Ben cannot use
            fake.press(BEN, menu.result, menu.button("Wood"))
            answer = await fake.wait_for(lambda c: c.method == "answerCallbackQuery", after=m)
            assert answer.params["text"] == t("not_yours", "en")
            fake.press(ADA, menu.result, menu.button("Wood"))
            assert "(100%)" in (await _result(fake, GROUP, m)).text
            assert len(_job_params(bot, ADA["id"])) == 1 and len(_job_params(bot, BEN["id"])) == 1

            # forged or stale button data is refused too
            m = fake.mark()
            fake.press(ADA, menu.result, "up:../../etc:passwd")
            answer = await fake.wait_for(lambda c: c.method == "answerCallbackQuery", after=m)
            assert answer.params["text"] == t("expired_button", "en")
    run(scenario())


def test_bad_inputs_get_friendly_answers(tmp_path):
    big_side = Image.new("RGB", (17000, 20), "white")
    buf = io.BytesIO()
    big_side.save(buf, "PNG")

    async def scenario():
        async with running_bot(tmp_path) as bot:
            fake = bot.fake
            cases = [
                (lambda: fake.user_message(ADA, sticker={
                    "file_id": "S1", "file_unique_id": "s1", "type": "regular", "width": 512,
                    "height": 512, "is_animated": False, "is_video": False}),
                 t("not_a_photo_message", "en")),
                (lambda: fake.user_message(ADA, voice={"file_id": "V1", "file_unique_id": "v1",
                                                       "duration": 3}),
                 t("not_a_photo_message", "en")),
                (lambda: fake.document(ADA, b"%PDF-1.4 ...", mime_type="application/pdf",
                                       file_name="cv.pdf"), t("not_a_photo_message", "en")),
                (lambda: fake.document(ADA, b"this is not a png at all"), t("not_an_image", "en")),
                (lambda: fake.document(ADA, buf.getvalue()), "too large"),
                (lambda: fake.document(ADA, photo_png(), size=25 * 1024 * 1024),
                 t("file_too_big", "en", size_mb="26.2", limit_mb="20")),
                (lambda: fake.photo(ADA, photo_png(), caption="cubism"), "/styles"),
                (lambda: fake.photo(ADA, photo_png(), caption="wave 3000"), "Strength"),
            ]
            for send, expected in cases:
                m = fake.mark()
                send()
                answer = await fake.reply("sendMessage", ADA["id"], after=m)
                assert expected in answer.text, (expected, answer.text)
            # the oversized file was refused from its announced size, never downloaded
            huge = 20 * 1024 * 1024
            assert not any(c.method == "getFile" and fake.file_sizes[c.params["file_id"]] > huge
                           for c in fake.calls)
            # a caption naming no style is refused before the photo is downloaded
            assert len(fake.downloads) == 2
            assert bot.service.history(bot.service.user("telegram", ADA["id"])) == []
    run(scenario())


def test_busy_service_too_many_jobs_and_cancel(tmp_path, monkeypatch):
    """No worker runs here, so jobs stay queued until /cancel."""
    async def scenario():
        async with running_bot(tmp_path, max_active_jobs=1) as bot:
            fake = bot.fake
            m = fake.mark()
            fake.photo(ADA, photo_png(), caption="wave")
            status = await fake.reply("sendMessage", ADA["id"], after=m)
            assert status.text == t("queued", "en")
            assert status.buttons() == [(t("btn_cancel", "en"), status.buttons()[0][1])]

            # what a worker reports shows in the status message
            job = bot.service.history(bot.service.user("telegram", ADA["id"]))[0]
            bot.service.store.set_state(job.id, JobState.RUNNING)
            bot.service.store.set_progress(job.id, 0.4)
            await fake.wait_for(lambda c: c.method == "editMessageText"
                                and c.params["message_id"] == status.result["message_id"]
                                and c.text == "⏳ 40%", after=m)

            m = fake.mark()
            fake.photo(ADA, photo_png(seed=1), caption="wood")
            refusal = await fake.reply("sendMessage", ADA["id"], after=m)
            assert refusal.text == t("too_many_jobs", "en", count=1)

            m = fake.mark()
            fake.command(ADA, "/cancel")
            await fake.reply("sendMessage", ADA["id"], after=m, text=t("cancelled", "en"))
            edited = await fake.wait_for(
                lambda c: c.method == "editMessageText"
                and c.params["message_id"] == status.result["message_id"]
                and c.text == t("cancelled", "en"), after=m)
            assert "reply_markup" not in edited.params  # no cancel button on a cancelled job
            assert _job_params(bot, ADA["id"])[0]["state"] is JobState.CANCELLED

            m = fake.mark()
            fake.command(ADA, "/cancel")
            await fake.reply("sendMessage", ADA["id"], after=m, text=t("nothing_to_cancel", "en"))

            # the queue is down: the user hears "busy", nothing is left queued
            def broken(*args, **kwargs):
                raise ConnectionError("queue unreachable")
            monkeypatch.setattr(bot.service.queue, "enqueue", broken)
            m = fake.mark()
            fake.photo(ADA, photo_png(seed=2), caption="wood")
            assert (await fake.reply("sendMessage", ADA["id"], after=m)).text == t("busy", "en")
            assert len(_job_params(bot, ADA["id"])) == 1
    run(scenario())


def test_rate_limit_says_when_to_retry(tmp_path):
    async def scenario():
        async with running_bot(tmp_path, rate_per_minute=2, rate_burst=1) as bot:
            fake = bot.fake
            m = fake.mark()
            fake.photo(ADA, photo_png(), caption="wave")
            await fake.reply("sendMessage", ADA["id"], after=m, text="⏳")
            m = fake.mark()
            fake.photo(ADA, photo_png(), caption="wave")
            answer = await fake.reply("sendMessage", ADA["id"], after=m)
            assert answer.text.startswith("You are sending pictures faster")
            seconds = int(answer.text.split("Try again in ")[1].split()[0])
            assert 1 <= seconds <= 30
            # the status message's cancel button works as well
            status = next(c for c in fake.calls if c.text == t("queued", "en"))
            m = fake.mark()
            fake.press(ADA, status.result, status.button("Cancel"))
            await fake.wait_for(lambda c: c.method == "editMessageText"
                                and c.text == t("cancelled", "en"), after=m)
    run(scenario())


@pytest.mark.slow
def test_custom_style_in_two_messages_and_as_an_album(tmp_path, stylizer):
    photo, style = photo_png(64, 80, seed=11), _stripes(64)

    async def scenario():
        async with running_bot(tmp_path, stylizer, max_side=64) as bot:
            fake = bot.fake
            m = fake.mark()
            fake.command(ADA, "/custom")
            await fake.reply("sendMessage", ADA["id"], after=m, text=t("custom_send_photo", "en"))
            fake.photo(ADA, photo)
            await fake.reply("sendMessage", ADA["id"], after=m, text=t("custom_send_style", "en"))
            fake.photo(ADA, style)
            # the bundled any-style model answers at once: no "half a minute" promised
            await fake.reply("sendMessage", ADA["id"], after=m,
                             text=t("custom_working_instant", "en"))
            result = await _result(fake, ADA["id"], m)
            assert t("your_style", "en") in result.text
            out = decode(result.upload("photo"))
            assert out.shape[:2] == (51, 64)  # the photo's aspect, at the 64 px cap
            small = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB").resize((64, 51)))
            assert np.abs(out.astype(float) - small).mean() > 8
            job = bot.service.history(bot.service.user("telegram", ADA["id"]))[0]
            assert job.kind.value == "custom" and job.state is JobState.DONE

            # an album of the two pictures (photo first) does the same in one message
            m = fake.mark()
            fake.command(ADA, "/custom")
            fake.photo(ADA, photo, media_group_id="A1")
            fake.photo(ADA, style, media_group_id="A1")
            album = await _result(fake, ADA["id"], m)
            assert album.result["reply_to_message"]["photo"][0]["file_id"] == \
                fake.messages[(ADA["id"], album.result["reply_to_message"]["message_id"])][
                    "photo"][0]["file_id"]
            assert not [c for c in fake.calls[m:] if c.text == t("custom_send_style", "en")]
            jobs = bot.service.history(bot.service.user("telegram", ADA["id"]))
            assert len(jobs) == 2 and jobs[0].input_sha == jobs[1].input_sha

            # "Refine" under the instant result optimises on top of it; /cancel while the
            # optimisation runs: it stops, and no picture comes
            stylizer.step_delay_s = 0.25
            m = fake.mark()
            fake.press(ADA, album.result, album.button("Refine"))
            # a refine job first says 0 % (the model's pass); wait for the optimisation's own
            running = await fake.wait_for(lambda c: c.method == "editMessageText"
                                          and c.text.startswith("⏳ ")
                                          and c.text.endswith("%")
                                          and c.text[2:-1].isdigit()
                                          and int(c.text[2:-1]) > 0, after=m)
            assert 0 < int(running.text[2:-1]) < 100
            fake.command(ADA, "/cancel")
            await fake.wait_for(lambda c: c.method == "editMessageText"
                                and c.text == t("cancelled", "en"), after=m)
            job = bot.service.history(bot.service.user("telegram", ADA["id"]))[0]
            assert job.state is JobState.CANCELLED and job.progress < 0.9
            assert job.request.refine and job.input_sha == jobs[0].input_sha
            await asyncio.sleep(1.0)
            assert not [c for c in fake.calls[m:] if c.method == "sendPhoto"]
    try:
        run(scenario())
    finally:
        stylizer.step_delay_s = 0.0


def _stripes(side: int) -> bytes:
    """A bold, very un-photo-like style picture: diagonal red/blue stripes."""
    yy, xx = np.mgrid[0:side, 0:side]
    band = ((xx + yy) // 6) % 2
    img = np.stack([band * 230, 20 + 0 * band, (1 - band) * 230], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def test_settings_history_gallery_and_forget(tmp_path):
    async def scenario():
        async with running_bot(tmp_path) as bot:
            fake = bot.fake
            m = fake.mark()
            fake.command(ADA, "/settings")
            panel = await fake.reply("sendMessage", ADA["id"], after=m)
            assert "Default strength: 100%" in panel.text and "Output: photo" in panel.text
            assert "Stroke size: medium" in panel.text and "✓ 🖌 medium" in dict(panel.buttons())

            m = fake.mark()
            fake.press(ADA, panel.result, panel.button("50%"))
            edited = await fake.reply("editMessageText", ADA["id"], after=m)
            assert "Default strength: 50%" in edited.text
            assert fake.answers(m)[0].params["text"] == t("settings_saved", "en")
            for label, expect in (("Keep colours", "Keep colours: yes"),
                                  ("🖌 large", "Stroke size: large"),
                                  ("file", "Output: file"), ("中文", "笔触大小：粗")):
                m = fake.mark()
                fake.press(ADA, panel.result, panel.button(label))
                assert expect in (await fake.reply("editMessageText", ADA["id"], after=m)).text
            ada = bot.service.user("telegram", ADA["id"])
            assert ada.default_strength == 0.5 and ada.language == "zh"
            assert ada.settings == {"keep_colors": True, "output": "file", "stroke": 1.6}

            # the caption uses the new defaults; the answer is in Chinese
            m = fake.mark()
            fake.photo(ADA, photo_png(), caption="wave")
            await fake.reply("sendMessage", ADA["id"], after=m, text="⏳")
            assert _job_params(bot, ADA["id"])[0]["strength"] == 0.5
            assert _job_params(bot, ADA["id"])[0]["keep_colors"] is True
            assert _job_params(bot, ADA["id"])[0]["stroke"] == 1.6

            m = fake.mark()
            fake.command(ADA, "/history")
            history = await fake.reply("sendMessage", ADA["id"], after=m)
            assert history.text.startswith(t("history", "zh")) and "50%" in history.text

            m = fake.mark()
            fake.command(BEN, "/styles")
            album = await fake.reply("sendMediaGroup", BEN["id"], after=m)
            names = [item["caption"] for item in album.params["media"]]
            assert names == [s.name("en") for s in bot.service.styles]
            assert all(decode(album.upload_media(i)).shape[0] >= 32 for i in range(len(names)))
            m = fake.mark()
            fake.command(BEN, "/styles")  # the second time, Telegram's file ids are reused
            again = await fake.reply("sendMediaGroup", BEN["id"], after=m)
            assert not again.files and all(item["media"].startswith("F")
                                           for item in again.params["media"])

            m = fake.mark()
            fake.command(ADA, "/forget")
            confirm = await fake.reply("sendMessage", ADA["id"], after=m)
            assert confirm.text == t("forget_confirm", "zh")
            fake.press(ADA, confirm.result, confirm.button(t("btn_no", "zh")))
            await fake.reply("editMessageText", ADA["id"], after=m, text=t("forget_kept", "zh"))
            assert len(_job_params(bot, ADA["id"])) == 1
            m = fake.mark()
            fake.command(ADA, "/forget")
            confirm = await fake.reply("sendMessage", ADA["id"], after=m)
            fake.press(ADA, confirm.result, confirm.button(t("btn_yes_forget", "zh")))
            await fake.reply("editMessageText", ADA["id"], after=m, text=t("forgotten", "zh"))
            assert _job_params(bot, ADA["id"]) == []
            assert bot.service.user("telegram", ADA["id"]).settings == {}
    run(scenario())


@pytest.mark.slow
def test_two_users_at_once(tmp_path, stylizer):
    async def scenario():
        async with running_bot(tmp_path, stylizer) as bot:
            fake = bot.fake
            m = fake.mark()
            fake.photo(ADA, photo_png(64, 64, seed=1), caption="kandinsky")
            fake.photo(BEN, photo_png(96, 64, seed=2), caption="wood 0.5")
            ada, ben = await asyncio.gather(_result(fake, ADA["id"], m),
                                            _result(fake, BEN["id"], m))
            assert "Kandinsky" in ada.text and decode(ada.upload("photo")).shape == (64, 64, 3)
            assert "(50%)" in ben.text and decode(ben.upload("photo")).shape == (96, 64, 3)
    run(scenario())


def test_webhook_mode_when_a_webhook_url_is_set(tmp_path):
    """Telegram posts updates to us; only calls carrying the secret are accepted."""
    import socket

    import aiohttp

    from bots.telegram_bot import webhook_secret

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def scenario():
        fake = FakeTelegram(TOKEN)
        url = await fake.start()
        settings = Settings(data_dir=tmp_path / "data", telegram_bot_token=TOKEN,
                            telegram_api_url=url, telegram_webhook_port=port,
                            telegram_webhook_url="https://bot.example.test/hooks/telegram")
        service = StyleService(settings)
        stop = asyncio.Event()
        task = asyncio.create_task(run_telegram(service, settings, stop))
        try:
            hook = await fake.wait_for(lambda c: c.method == "setWebhook", timeout=20)
            assert hook.params["url"] == settings.telegram_webhook_url
            secret = hook.params["secret_token"]
            assert secret == webhook_secret(TOKEN) and TOKEN not in secret
            update = {"update_id": 7, "message": fake.command(ADA, "/start")}
            fake._updates.clear()  # delivered by webhook here, not by getUpdates
            target = f"http://127.0.0.1:{port}/hooks/telegram"
            async with aiohttp.ClientSession() as http:
                async with http.post(target, json=update) as forged:
                    assert forged.status == 403
                m = fake.mark()
                async with http.post(target, json=update, headers={
                        "X-Telegram-Bot-Api-Secret-Token": secret}) as real:
                    assert real.status == 200
            hello = await fake.reply("sendMessage", ADA["id"], after=m)
            assert t("welcome", "en") in hello.text
            assert fake.polls == 0
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
            await fake.stop()
            service.close()
    run(scenario())


def test_style_keyboard_pages_and_compact_button_data(tmp_path):
    """Many styles page with ◀ ▶; every button's data fits Telegram's 64 bytes."""
    from bots.chat import (
        Action,
        apply_setting,
        decode_action,
        encode_action,
        page_target,
        photo_token,
        result_keyboard,
        settings_keyboard,
        style_keyboard,
    )
    from stylejax.errors import InvalidRequestError

    service = StyleService(Settings(data_dir=tmp_path / "data"))
    try:
        token = photo_token("ab" * 32)
        pages = [style_keyboard(service, "en", "pick", token, p, per_page=3) for p in range(3)]
        navs = [[label for label, _ in kb[-1]] for kb in pages]
        assert navs == [["▶"], ["◀", "▶"], ["◀"]]
        shown = [a.arg for kb in pages for row in kb[:-1] for _, a in row]
        assert shown == [str(i) for i in range(len(service.styles))]
        assert page_target(pages[1][-1][1][1]) == ("pick", 2)
        assert page_target(Action("page", token, "x9")) is None

        ada = service.user("telegram", 1)
        job = service.submit(ada, photo_png(), style="wave")
        boards = [*pages, result_keyboard(job, "zh"), settings_keyboard(service, ada, "zh"),
                  style_keyboard(service, "zh", "style", job.id, 0)]
        for board in boards:
            for row in board:
                for _, action in row:
                    data = encode_action(action)
                    assert len(data.encode()) <= MAX_CALLBACK_BYTES
                    assert decode_action(data) == action
        with pytest.raises(InvalidRequestError):
            apply_setting(service, ada, Action("set", "strength", "37"))
        assert apply_setting(service, ada, Action("set", "output", "file")).settings == {
            "output": "file"}
        for forged in ("huge", "1.6", ""):  # only the offered presets are accepted
            with pytest.raises(InvalidRequestError):
                apply_setting(service, ada, Action("set", "stroke", forged))
        assert apply_setting(service, ada, Action("set", "stroke", "small")).settings == {
            "output": "file", "stroke": 0.6}
    finally:
        service.close()


@pytest.mark.slow
def test_video_gif_and_video_note_come_back_as_clips(tmp_path, stylizer):
    """A video with a caption, a GIF (an animation) through the style keyboard, and a video
    note: each result decoded (frames, duration, size, sound kept when the input had it)."""
    from test_video_service import assert_clip_result, assert_gif_result, clip_bytes, gif_bytes

    async def scenario():
        async with running_bot(tmp_path, stylizer) as bot:
            fake = bot.fake
            m = fake.mark()
            fake.video(ADA, clip_bytes(), caption="starry")
            sent = await fake.reply("sendVideo", ADA["id"], after=m, timeout=90)
            assert sent.text == t("done", "en", style="Starry Night (van Gogh)", strength=100)
            assert_clip_result(sent.upload("video"))
            assert sent.buttons()  # stronger / weaker / another style … as for photos

            m = fake.mark()
            fake.video(ADA, gif_bytes(), kind="animation")
            menu = await fake.reply("sendMessage", ADA["id"], after=m)
            assert menu.text == t("choose_style", "en")
            fake.press(ADA, menu.result, menu.button("Great Wave"))
            sent = await fake.reply("sendAnimation", ADA["id"], after=m, timeout=90)
            assert_gif_result(sent.upload("animation"))
            assert not [c for c in fake.calls[m:] if c.method == "sendDocument"]

            m = fake.mark()
            fake.video(ADA, clip_bytes(audio=False), kind="video_note", caption="wave")
            sent = await fake.reply("sendVideo", ADA["id"], after=m, timeout=90)
            assert_clip_result(sent.upload("video"), audio=False)

            m = fake.mark()
            fake.video(ADA, clip_bytes()[:3000], caption="wave")
            await fake.reply("sendMessage", ADA["id"], after=m, text=t("video_corrupt", "en"))
            assert bot.service.video_queue.pending_count() == 0

    run(scenario())
