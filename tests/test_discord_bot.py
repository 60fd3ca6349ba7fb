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
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import discord
import numpy as np
import pytest
from fake_discord import EPHEMERAL, FakeDiscord, FakeUser, Sent
from photos import photo_png
from PIL import Image

from bots.chat import decode_action
from bots.config import Settings
from bots.core import StyleService
from bots.discord_bot import run_discord
from bots.i18n import t
from bots.worker import Worker
from storage import JobState
from stylejax.stylizer import Stylizer

TOKEN = "MTE4.fake-discord-token.for-tests-only-0123456789"
ALICE = FakeUser(101, "alice")
BOB = FakeUser(202, "bob")
LI = FakeUser(303, "li", locale="zh-CN")
ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SAMPLE = ROOT / "stylejax" / "assets" / "sample.jpg"


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
            worker = Worker.beside(service, stylizer=stylizer)
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


# -- the main flow --------------------------------------------------------------------------------
@pytest.mark.slow
def test_stylize_defers_shows_progress_and_posts_the_stylized_picture(tmp_path, stylizer,
                                                                      caplog):
    caplog.set_level(logging.DEBUG)  # discord.py's debug logs too: the token must be in none

    async def scenario() -> None:
        async with running_bot(tmp_path, stylizer, max_side=640) as (fake, service):
            assert {c["name"] for c in fake.commands} == {
                "stylize", "styles", "custom", "settings", "forget", "Stylize"}
            photo = SAMPLE.read_bytes()  # a real photo (640×360 JPEG)
            upload = fake.upload("kingfisher.jpg", photo, "image/jpeg")
            sent = await fake.slash(ALICE, "stylize", image=upload, style="great-wave",
                                    strength=0.75, keep_colors=False)
            msg, _ = await _stylized(fake, sent, photo)
            calls = fake.calls_for(sent)
            # deferred ("thinking…") first, within Discord's 3 s, then edits of that reply
            assert calls[0].path.endswith("/callback") and calls[0].json["type"] == 5
            assert calls[0].at - sent.at < 3
            assert all(c.method == "PATCH" and c.path.endswith("/messages/@original")
                       for c in calls[1:])
            assert fake.downloads == ["kingfisher.jpg"]
            progress = [c.json["content"] for c in calls[1:-1]]
            assert progress and all(p.startswith("⏳") for p in progress)
            assert "Great Wave" in msg["embeds"][0]["description"]
            assert "75%" in msg["embeds"][0]["description"]
            buttons = _components(msg)
            assert set(buttons) == {"up", "down", "keep", "area", "del", "style"}
            assert buttons["style"]["type"] == 3  # a select menu of the other styles
            labels = [o["label"] for o in buttons["style"]["options"]]
            assert len(labels) == len(service.styles)
            (job,) = service.history(service.user("discord", ALICE.id))
            assert job.state is JobState.DONE and job.params == {
                "strength": 0.75, "keep_colors": False, "style": "great-wave", "stroke": 1.0}
            if os.environ.get("WRITE_DISCORD_DOCS"):
                _write_docs(fake, sent, msg)

    run(scenario())
    assert TOKEN not in caplog.text
    assert "Shard ID 0 has connected" in caplog.text  # the debug log really was captured


def _write_docs(fake: FakeDiscord, sent: Sent, msg: dict) -> None:
    """`WRITE_DISCORD_DOCS=1 pytest -k posts_the_stylized`: the recording in docs/discord.md."""
    (DOCS / "images" / "discord_result.png").write_bytes(fake.file(msg["attachments"][0]))
    lines = []
    for row in fake.transcript(sent):
        if "gateway" in row:
            lines.append(f"<- gateway {row['gateway']} {_compact(row['d'])}")
            continue
        body = {k: v for k, v in row["json"].items() if k != "tts"}
        files = "".join(f" + file {name} {size}" for name, size in row.get("files", {}).items())
        lines.append(f"-> {row['request']}{files}\n     {_compact(body)}")
    text = (DOCS / "discord.md").read_text()
    start, end = "<!-- exchange:start -->\n", "<!-- exchange:end -->"
    head, rest = text.split(start)
    recording = "```text\n" + "\n".join(lines).replace(fake.base, "http://127.0.0.1:PORT")
    (DOCS / "discord.md").write_text(head + start + recording + "\n```\n" + end
                                     + rest.split(end)[1])


def _compact(value) -> str:
    """JSON on one line, long lists (menu options) cut to their first four items."""
    def cut(v):
        if isinstance(v, dict):
            return {k: cut(x) for k, x in v.items()}
        if isinstance(v, list):
            return [cut(x) for x in v[:4]] + (["…"] if len(v) > 4 else [])
        return v
    return json.dumps(cut(value), ensure_ascii=False)


async def _result(fake: FakeDiscord, user: FakeUser, photo: bytes, style: str = "wood",
                  **options) -> dict:
    sent = await fake.slash(user, "stylize", image=fake.upload("p.png", photo), style=style,
                            **options)
    msg, _ = await _stylized(fake, sent, photo)
    return msg


@pytest.mark.slow
def test_buttons_stronger_another_style_and_delete_only_for_the_owner(tmp_path, stylizer):
    async def scenario() -> None:
        async with running_bot(tmp_path, stylizer) as (fake, service):
            alice = service.user("discord", ALICE.id)
            photo = photo_png(64, 96, seed=2)
            msg = await _result(fake, ALICE, photo, strength=0.5, stroke="large")
            assert service.history(alice)[0].params["stroke"] == 1.6
            buttons = _components(msg)

            # someone else's press: refused, only to them, and nothing is queued
            pressed = await fake.press(BOB, msg, buttons["up"]["custom_id"])
            assert await fake.ephemeral_text(pressed) == t("not_yours", "en")
            assert _callback_type(fake, pressed) == 4
            assert len(service.history(alice)) == 1

            # stronger: a new job on the same photo, one step up, posted as a new reply
            pressed = await fake.press(ALICE, msg, buttons["up"]["custom_id"])
            stronger, _ = await _stylized(fake, pressed, photo)
            assert stronger["id"] != msg["id"]
            newest = service.history(alice)[0]
            assert newest.params["strength"] == 0.75 and newest.params["style"] == "wood"
            assert newest.input_sha == service.history(alice)[1].input_sha

            # another style from the menu (values are style indexes)
            menu = _components(stronger)["style"]
            wave = next(o["value"] for o in menu["options"] if "Great Wave" in o["label"])
            pressed = await fake.press(ALICE, stronger, menu["custom_id"], values=[wave])
            restyled, _ = await _stylized(fake, pressed, photo)
            newest = service.history(alice)[0]
            assert newest.params == {"strength": 0.75, "keep_colors": False,
                                     "style": "great-wave", "stroke": 1.6}  # kept throughout
            assert "Great Wave" in restyled["embeds"][0]["description"]

            # delete: the job and its message go; Bob cannot delete Alice's
            pressed = await fake.press(BOB, restyled, _components(restyled)["del"]["custom_id"])
            assert await fake.ephemeral_text(pressed) == t("not_yours", "en")
            pressed = await fake.press(ALICE, restyled,
                                       _components(restyled)["del"]["custom_id"])
            assert await fake.ephemeral_text(pressed) == t("deleted", "en")
            assert int(restyled["id"]) in fake.deleted
            assert newest.id not in {j.id for j in service.history(alice)}

    run(scenario())


@pytest.mark.slow
def test_two_users_at_once_each_get_their_own_picture(tmp_path, stylizer):
    async def scenario() -> None:
        async with running_bot(tmp_path, stylizer) as (fake, _service):
            photos = {ALICE: photo_png(64, 80, seed=3), BOB: photo_png(80, 64, seed=4)}
            sent = {u: await fake.slash(u, "stylize", image=fake.upload("p.png", p),
                                        style="starry")
                    for u, p in photos.items()}
            results = await asyncio.gather(*(_stylized(fake, sent[u], photos[u])
                                             for u in photos))
            (msg_a, out_a), (msg_b, out_b) = results
            assert msg_a["id"] != msg_b["id"] and out_a.shape != out_b.shape

    run(scenario())


@pytest.mark.slow
def test_a_result_over_the_upload_limit_is_sent_as_jpeg(tmp_path, stylizer):
    async def scenario() -> None:
        async with running_bot(tmp_path, stylizer) as (fake, _service):
            fake.upload_limit = 30_000  # the server's limit, announced in each interaction
            photo = photo_png(160, 200, seed=8)
            sent = await fake.slash(ALICE, "stylize", image=fake.upload("p.png", photo),
                                    style="psychedelic")
            msg, _ = await _stylized(fake, sent, photo)
            (att,) = msg["attachments"]
            assert att["filename"] == "stylized.jpg" and len(fake.file(att)) <= 30_000

    run(scenario())


@pytest.mark.slow
def test_context_menu_offers_styles_then_stylizes(tmp_path, stylizer):
    async def scenario() -> None:
        async with running_bot(tmp_path, stylizer) as (fake, service):
            photo = photo_png(72, 72, seed=5)
            posted = fake.user_message(BOB, "look at this", [fake.upload("dog.png", photo)])
            sent = await fake.message_command(ALICE, "Stylize", posted)
            picker = await fake.wait_for(
                lambda: (m := fake.original(sent)) and m["components"] and m)
            assert picker["flags"] & EPHEMERAL and picker["content"] == t("choose_style", "en")
            menu = _components(picker)["pick"]
            assert len(menu["options"]) == len(service.styles)
            chosen = await fake.press(ALICE, picker, menu["custom_id"], values=["2"])
            msg, _ = await _stylized(fake, chosen, photo)
            assert not msg["flags"] & EPHEMERAL  # the result is for everyone to see
            (job,) = service.history(service.user("discord", ALICE.id))
            assert job.params["style"] == service.styles[2].id

            text_only = fake.user_message(BOB, "no picture here", [])
            sent = await fake.message_command(ALICE, "Stylize", text_only)
            assert await fake.ephemeral_text(sent) == t("not_a_photo_message", "en")

    run(scenario())


@pytest.mark.slow
def test_custom_style_shows_progress_and_posts_the_result(tmp_path, stylizer):
    async def scenario() -> None:
        async with running_bot(tmp_path, stylizer) as (fake, service):
            photo, style = photo_png(48, 64, seed=6), photo_png(64, 64, seed=7)
            sent = await fake.slash(ALICE, "custom", content=fake.upload("me.png", photo),
                                    style=fake.upload("paint.png", style))
            msg = await fake.result_of(sent, timeout=60)
            texts = [c.json.get("content") for c in fake.calls_for(sent)
                     if c.method == "PATCH"]
            assert texts[0].startswith(t("custom_working_instant", "en") + "\n⏳")
            out, src = _rgb(fake.file(msg["attachments"][0])), _rgb(photo)
            assert out.shape == src.shape and np.abs(out - src).mean() > 8
            (job,) = service.history(service.user("discord", ALICE.id))
            assert job.kind.value == "custom" and job.state is JobState.DONE
            assert t("your_style", "en") in msg["embeds"][0]["description"]

    run(scenario())


# -- cheap commands (no worker) -------------------------------------------------------------------
def test_autocomplete_styles_gallery_and_translations(tmp_path):
    async def scenario() -> None:
        async with running_bot(tmp_path, None) as (fake, service):
            sent = await fake.autocomplete(ALICE, "stylize", "style", style="wav")
            call = await fake.wait_for(lambda: fake.callback(sent))
            assert call.json["type"] == 8
            assert call.json["data"]["choices"] == [
                {"name": "The Great Wave (Hokusai)", "value": "great-wave"}]
            sent = await fake.autocomplete(LI, "stylize", "style", style="梵高")
            call = await fake.wait_for(lambda: fake.callback(sent))
            assert [c["value"] for c in call.json["data"]["choices"]] == [
                "starry-night", "night-cafe"]

            sent = await fake.slash(ALICE, "styles")
            call = await fake.wait_for(lambda: fake.callback(sent))
            data = call.json["data"]
            assert data["flags"] & EPHEMERAL and len(data["embeds"]) == len(service.styles)
            assert len(call.files) == len(service.styles)
            for embed in data["embeds"]:
                name = embed["thumbnail"]["url"].removeprefix("attachment://")
                assert Image.open(io.BytesIO(call.files[name])).size[0] >= 32

            stylize_cmd = next(c for c in fake.commands if c["name"] == "stylize")
            assert stylize_cmd["description_localizations"]["zh-CN"] == t("cmd_stylize", "zh")
            style_opt = next(o for o in stylize_cmd["options"] if o["name"] == "style")
            assert style_opt["autocomplete"] is True
            strength = next(o for o in stylize_cmd["options"] if o["name"] == "strength")
            assert (strength["min_value"], strength["max_value"]) == (0.0, 1.0)
            for name in ("stylize", "custom", "settings"):
                command = next(c for c in fake.commands if c["name"] == name)
                stroke = next(o for o in command["options"] if o["name"] == "stroke")
                assert not stroke.get("required")
                assert [c["value"] for c in stroke["choices"]] == ["small", "medium", "large"]
                assert [c["name_localizations"]["zh-CN"] for c in stroke["choices"]] == [
                    "细", "中", "粗"]
            menu = next(c for c in fake.commands if c["name"] == "Stylize")
            assert menu["type"] == 3 and menu["name_localizations"]["zh-CN"] == "艺术风格化"

    run(scenario())


def test_bad_inputs_get_friendly_ephemeral_errors(tmp_path):
    async def scenario() -> None:
        async with running_bot(tmp_path, None, max_upload_bytes=50_000, rate_burst=3,
                               rate_per_minute=1) as (fake, service):
            async def error_for(user: FakeUser, upload: dict, style: str = "wood") -> str:
                sent = await fake.slash(user, "stylize", image=upload, style=style)
                text = await fake.ephemeral_text(sent)
                reply = fake.original(sent)  # no public "thinking…" left behind
                assert reply is None or reply["flags"] & EPHEMERAL
                return text

            text = await error_for(ALICE, fake.upload("notes.txt", b"hello", "text/plain"))
            assert text == t("not_an_image", "en")
            text = await error_for(ALICE, fake.upload("x.png", b"not a png at all"))
            assert text == t("not_an_image", "en")
            big = fake.upload("huge.png", photo_png(16, 16), size=2_000_000)
            assert await error_for(ALICE, big) == t("file_too_big", "en", size_mb="2.0",
                                                    limit_mb="0")
            assert "huge.png" not in fake.downloads  # refused from its size alone
            buf = io.BytesIO()
            Image.new("L", (20000, 16)).save(buf, "PNG")
            text = await error_for(ALICE, fake.upload("wide.png", buf.getvalue()))
            assert text.startswith(t("too_large", "en", detail=""))
            text = await error_for(ALICE, fake.upload("p.png", photo_png()), style="cubism")
            assert "/styles" in text
            dan = FakeUser(404, "dan")  # Alice's requests are used up
            sent = await fake.slash(dan, "stylize", image=fake.upload("p.png", photo_png()),
                                    style="wood", stroke="huge")  # not one of the choices
            text = await fake.ephemeral_text(sent)
            assert "Stroke size must be small, medium, large or a number" in text
            assert service.history(service.user("discord", dan.id)) == []

            # Bob's three requests pass, the fourth is told when to come back
            for _ in range(3):
                sent = await fake.slash(BOB, "stylize", image=fake.upload("p.png", photo_png()),
                                        style="wood")
                await fake.wait_for(lambda s=sent: len(fake.calls_for(s)) >= 2)
            text = await error_for(BOB, fake.upload("p.png", photo_png()))
            assert "Try again in" in text and text.rstrip(" s.").split()[-1].isdigit()

            def down(*_a, **_k):
                raise ConnectionError("queue unreachable")
            service.queue.enqueue = down
            text = await error_for(LI, fake.upload("p.png", photo_png()))
            assert text == t("busy", "zh")

    run(scenario())


def test_settings_and_forget_with_confirmation(tmp_path):
    async def scenario() -> None:
        async with running_bot(tmp_path, None) as (fake, service):
            sent = await fake.slash(ALICE, "settings", strength=0.5, keep_colors=True,
                                    stroke="large")
            text = await fake.ephemeral_text(sent)
            assert text.startswith(t("settings_saved", "en")) and "50%" in text
            assert "Stroke size: large" in text
            alice = service.user("discord", ALICE.id)
            assert alice.default_strength == 0.5 and alice.settings["keep_colors"] is True
            job = service.submit(alice, photo_png(), style="wood")
            assert job.params == {"strength": 0.5, "keep_colors": True, "style": "wood",
                                  "stroke": 1.6}

            # the same settings as buttons: a press stores it and redraws the message
            reply = fake.original(sent)
            sets = {(a.job, a.arg): c["custom_id"] for row in reply["components"]
                    for c in row["components"] if (a := decode_action(c["custom_id"]))}
            assert set(sets) == {("strength", "25"), ("strength", "50"), ("strength", "75"),
                                 ("strength", "100"), ("keep", "0"), ("stroke", "small"),
                                 ("stroke", "medium"), ("stroke", "large")}
            pressed = await fake.press(ALICE, reply, sets["strength", "75"])
            await fake.wait_for(lambda: fake.callback(pressed))
            assert _callback_type(fake, pressed) == 7
            assert service.user("discord", ALICE.id).default_strength == 0.75
            assert "75%" in fake.original(sent)["content"]
            pressed = await fake.press(ALICE, fake.original(sent), sets["stroke", "small"])
            await fake.wait_for(lambda: fake.callback(pressed))
            assert service.user("discord", ALICE.id).settings["stroke"] == 0.6
            assert "Stroke size: small" in fake.original(sent)["content"]

            sent = await fake.slash(ALICE, "forget")
            confirm = await fake.wait_for(lambda: fake.original(sent))
            assert confirm["flags"] & EPHEMERAL
            buttons = {decode_action(c["custom_id"]).arg: c["custom_id"]
                       for c in confirm["components"][0]["components"]}
            pressed = await fake.press(ALICE, confirm, buttons["no"])
            await fake.wait_for(lambda: fake.callback(pressed))
            assert fake.original(sent)["content"] == t("forget_kept", "en")
            assert service.history(alice) != [] and fake.original(sent)["components"] == []

            sent = await fake.slash(ALICE, "forget")
            confirm = await fake.wait_for(lambda: fake.original(sent))
            pressed = await fake.press(ALICE, confirm, buttons["yes"])
            await fake.wait_for(lambda: fake.original(sent)["content"] == t("forgotten", "en"))
            assert _callback_type(fake, pressed) == 7 and fake.original(sent)["components"] == []
            assert service.history(alice) == [] and not service.blobs.exists(job.input_sha)

    run(scenario())


def test_cancel_button_while_the_picture_is_queued(tmp_path):
    async def scenario() -> None:
        async with running_bot(tmp_path, None) as (fake, service):  # no worker: stays queued
            sent = await fake.slash(ALICE, "stylize", image=fake.upload("p.png", photo_png()),
                                    style="kandinsky")
            waiting = await fake.wait_for(
                lambda: (m := fake.original(sent)) and m["components"] and m)
            assert waiting["content"] == t("queue_next", "en")  # first in line
            cancel = _components(waiting)["cancel"]["custom_id"]
            pressed = await fake.press(BOB, waiting, cancel)
            assert await fake.ephemeral_text(pressed) == t("not_yours", "en")
            pressed = await fake.press(ALICE, waiting, cancel)
            await fake.wait_for(lambda: fake.original(sent)["content"] == t("cancelled", "en"))
            assert _callback_type(fake, pressed) == 6 and fake.original(sent)["components"] == []
            (job,) = service.history(service.user("discord", ALICE.id))
            assert job.state is JobState.CANCELLED

    run(scenario())


def test_guild_sync_wrong_token_and_clean_stop(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)

    async def scenario() -> None:
        async with running_bot(tmp_path, None, discord_guild_id=777) as (fake, _service):
            (put,) = [c for c in fake.calls if c.method == "PUT"]
            assert put.path == f"/applications/{fake.app_id}/guilds/777/commands"
            assert put.authorized
        async with FakeDiscord(TOKEN.replace("fake", "eeee")) as other:
            settings = Settings(data_dir=tmp_path / "d2", discord_api_url=other.api_url,
                                DISCORD_BOT_TOKEN=TOKEN)
            service = StyleService(settings)
            try:
                with pytest.raises(discord.LoginFailure):
                    await run_discord(service, settings, asyncio.Event())
            finally:
                service.close()

    run(scenario())
    assert TOKEN not in caplog.text


@pytest.mark.slow
def test_video_and_gif_attachments_come_back_as_files(tmp_path, stylizer):
    """/stylize with an mp4 (sound kept) and the context menu on a GIF: the result attached as
    stylejax.mp4 (playing as the attachment) / stylejax.gif (shown in the embed), decoded."""
    from test_video_service import assert_clip_result, assert_gif_result, clip_bytes, gif_bytes

    async def scenario() -> None:
        async with running_bot(tmp_path, stylizer) as (fake, service):
            upload = fake.upload("clip.mp4", clip_bytes(), "video/mp4")
            sent = await fake.slash(ALICE, "stylize", image=upload, style="starry-night",
                                    stroke="large")
            msg = await fake.result_of(sent, timeout=90)
            (att,) = msg["attachments"]
            assert att["filename"] == "stylejax.mp4"
            assert_clip_result(fake.file(att))
            assert "image" not in msg["embeds"][0]
            assert set(_components(msg)) == {"up", "down", "keep", "del", "style"}

            posted = fake.user_message(BOB, "loop", [fake.upload("loop.gif", gif_bytes(),
                                                                 "image/gif")])
            sent = await fake.message_command(ALICE, "Stylize", posted)
            picker = await fake.wait_for(
                lambda: (m := fake.original(sent)) and m["components"] and m)
            menu = _components(picker)["pick"]
            chosen = await fake.press(ALICE, picker, menu["custom_id"], values=["1"])
            msg = await fake.result_of(chosen, timeout=90)
            (att,) = msg["attachments"]
            assert att["filename"] == "stylejax.gif"
            assert msg["embeds"][0]["image"]["url"] == "attachment://stylejax.gif"
            assert_gif_result(fake.file(att))

            bad = fake.upload("cut.mp4", clip_bytes()[:3000], "video/mp4")
            sent = await fake.slash(ALICE, "stylize", image=bad, style="wood")
            assert await fake.ephemeral_text(sent) == t("video_corrupt", "en")
            assert service.video_queue.pending_count() == 0

    run(scenario())
