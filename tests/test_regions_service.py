"""A style per region in the service and the bots, end to end (issue 16, docs/regions.md).

The HTTP API as a real `bots.serve serve` process; Telegram with PTB's real `Application` against
the fake Bot API; Discord with the real discord.py client against the fake Discord. Each runs a
real worker, so the region masks and the composition are the product's own, on a real photo
with a person (KPhotoAlbum's `anne_helene.jpg`, 256 px so the tests stay quick).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import test_discord_bot as dc
import test_telegram_bot as tg
from photos import photo_png
from PIL import Image
from service_process import Server, assert_json_error, post_photo, wait_done

from bots.chat import decode_action, outcome_text
from bots.config import Settings
from bots.core import StyleService
from bots.i18n import t
from bots.worker import Worker
from storage import JobState
from stylejax import regions
from stylejax.stylizer import Stylizer

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[1]
PERSON_PHOTO = ROOT.parent / "shared" / "data" / "content" / "people_kphotoalbum_anne_helene.jpg"
NO_PERSON = "No person found in this photo"


def _person_photo(side: int = 256) -> bytes:
    """The beach photo with a person, at most `side` px, as PNG (lossless: the result's
    unstyled pixels must equal the photo's)."""
    if not PERSON_PHOTO.is_file():
        pytest.skip(f"{PERSON_PHOTO} is not here")
    im = Image.open(PERSON_PHOTO).convert("RGB")
    im.thumbnail((side, side), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.float32)


def assert_person_only(result: bytes, photo: bytes) -> None:
    """The photo outside the person mask (stylejax.regions), the style inside it."""
    out, src = _rgb(result), _rgb(photo)
    assert out.shape == src.shape
    person = regions.person_mask(src.astype(np.uint8))
    outside, inside = person < 0.01, person > 0.99
    assert outside.mean() > 0.3 and inside.mean() > 0.2  # the photo has both
    diff = np.abs(out - src).max(axis=-1)
    assert np.percentile(diff[outside], 99) <= 2.0, np.percentile(diff[outside], 99)
    assert diff[inside].mean() > 10, diff[inside].mean()


# -- the HTTP API ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("regions-api"), workers=1,
                 STYLEJAX_RATE_PER_MINUTE="600", STYLEJAX_RATE_BURST="30",
                 STYLEJAX_MAX_ACTIVE_JOBS="10", STYLEJAX_MAX_UPLOAD_BYTES="400000")
    yield srv
    code = srv.stop()
    assert code == 0, srv.log()


@pytest.mark.slow
def test_api_person_only_styles_the_person_and_leaves_the_rest(server):
    c = server.client
    photo = _person_photo()
    resp = post_photo(c, photo, style="wave", regions="person")
    assert resp.status_code == 202, resp.text
    body = resp.json()
    spec = {"entries": [{"region": "person"}], "keep": [], "feather": 0.0}
    assert body["regions"] == spec
    status = wait_done(c, body["id"], timeout_s=120)
    assert status["state"] == "done", status
    assert status["regions"] == spec
    result = c.get(body["result_url"])
    assert result.status_code == 200 and result.headers["content-type"] == "image/png"
    assert_person_only(result.content, photo)

    # the same photo, the whole of it: differs outside the person too
    whole = wait_done(c, post_photo(c, photo, style="wave").json()["id"], timeout_s=120)
    assert whole["state"] == "done" and whole["regions"] is None
    out = _rgb(c.get(f"/api/v1/jobs/{whole['id']}/result").content)
    person = regions.person_mask(_rgb(photo).astype(np.uint8))
    assert np.abs(out - _rgb(photo)).max(axis=-1)[person < 0.01].mean() > 10


@pytest.mark.slow
def test_api_two_styles_keep_feather_and_json(server):
    """The short syntax with a style and a strength per region, keep and feather; JSON too."""
    c = server.client
    photo = _person_photo(160)
    resp = post_photo(c, photo, regions="background=starry,person=wave:0.7", keep="faces",
                      feather="2")
    assert resp.status_code == 202, resp.text
    assert resp.json()["regions"] == {
        "entries": [{"region": "background", "style": "starry-night"},
                    {"region": "person", "style": "great-wave", "strength": 0.7}],
        "keep": ["face"], "feather": 2.0}
    status = wait_done(c, resp.json()["id"], timeout_s=120)
    assert status["state"] == "done", status
    entries = [{"region": "background", "style": "starry"}, ["person", "wave", 0.5]]
    resp = post_photo(c, photo, regions=json.dumps(entries))
    assert resp.status_code == 202, resp.text
    assert resp.json()["regions"]["entries"] == [
        {"region": "background", "style": "starry-night"},
        {"region": "person", "style": "great-wave", "strength": 0.5}]
    assert wait_done(c, resp.json()["id"], timeout_s=120)["state"] == "done"


@pytest.mark.slow
def test_api_region_mistakes_are_friendly_json(server):
    c = server.client
    photo = _person_photo(96)
    cases = [
        ({"style": "wave", "regions": "nose"}, "Unknown region 'nose'"),
        ({"style": "wave", "regions": "person=wave:2"}, "strength of person"),
        ({"style": "wave", "regions": "person,person"}, "given twice"),
        ({"style": "wave", "regions": "person", "keep": "person"}, "both styled and kept"),
        ({"style": "wave", "regions": "[1,"}, "not valid JSON"),
        ({"style": "wave", "keep": "elbow"}, "Unknown region 'elbow' to keep"),
        ({"style": "wave", "regions": "person", "feather": "wide"}, "feather radius"),
        ({"style": "wave", "regions": "person", "feather": "500"}, "feather radius"),
        ({"regions": "person"}, "Choose a style for every region"),
        ({"style": "wave", "regions": "mask"}, "needs a mask picture"),
        ({"style": "nope", "regions": "person"}, "nope"),
        ({"style": "wave", "regions": "person=nope"}, "nope"),
    ]
    for form, words in cases:
        message = assert_json_error(post_photo(c, photo, **form), (400, 422))
        assert words in message, (form, message)
    # a style picture of one's own, or a video, with regions: StyleRequest.create's refusal
    resp = c.post("/api/v1/jobs", data={"regions": "person"},
                  files={"image": ("p.png", photo, "image/png"),
                         "style_image": ("s.png", photo_png(64, 64, 3), "image/png")})
    assert "style picture of your own" in assert_json_error(resp, 422)
    from test_video_service import clip_bytes

    resp = c.post("/api/v1/jobs", data={"style": "wave", "regions": "background"},
                  files={"image": ("clip.mp4", clip_bytes(), "video/mp4")})
    assert "Regions work on photos" in assert_json_error(resp, 422)


@pytest.mark.slow
def test_api_a_region_missing_from_the_photo_fails_with_its_message(server):
    c = server.client
    resp = post_photo(c, photo_png(120, 160, 1), style="wave", regions="person")
    assert resp.status_code == 202, resp.text
    status = wait_done(c, resp.json()["id"], timeout_s=120)
    assert status["state"] == "failed" and status["error"].startswith(NO_PERSON), status


# -- the worker: one engine batch per spec, a photo without the region fails alone ---------------
@pytest.fixture(scope="module")
def stylizer() -> Stylizer:
    return Stylizer(backend="onnx")


def test_worker_batches_equal_specs_and_fails_only_the_photo_without_the_region(
        tmp_path, stylizer):
    service = StyleService(Settings(data_dir=tmp_path / "d", rate_per_minute=600,
                                    rate_burst=20, max_active_jobs=10, max_side=128,
                                    max_batch=4))
    try:
        owner = service.user("test", 1)
        person = service.submit(owner, _person_photo(128), style="wave", regions=["person"])
        empty = service.submit(owner, photo_png(96, 128, 1), style="wave", regions=["person"])
        whole = service.submit(owner, photo_png(96, 128, 2), style="wave")
        keys = {j.id: service.job(j.id).request.batch_key() for j in (person, empty, whole)}
        assert keys[person.id] == keys[empty.id] != keys[whole.id]  # read back from the payload
        worker = Worker.beside(service, stylizer=stylizer)
        worker.run(max_jobs=3, idle_exit_s=5)
        done = {j.id: service.job(j.id) for j in (person, empty, whole)}
        assert done[person.id].state is JobState.DONE
        assert done[whole.id].state is JobState.DONE
        assert done[empty.id].state is JobState.FAILED
        assert done[empty.id].error.startswith(NO_PERSON)
        assert_person_only(service.result(person.id), _person_photo(128))
    finally:
        service.close()


# -- Telegram -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_telegram_person_only_background_only_and_back(tmp_path, stylizer):
    photo = _person_photo()

    async def scenario():
        async with tg.running_bot(tmp_path, stylizer, max_side=256) as bot:
            fake, ada = bot.fake, tg.ADA
            m = fake.mark()
            fake.photo(ada, photo)
            menu = await fake.reply("sendMessage", ada["id"], after=m)
            m = fake.mark()
            fake.press(ada, menu.result, menu.button("Great Wave"))
            result = await tg._result(fake, ada["id"], m)
            wave = bot.service.style_name("great-wave", "en")
            assert result.text == t("done", "en", style=wave, strength=100)
            labels = [label for label, _ in result.buttons()]
            assert {t("btn_region_person", "en"), t("btn_region_bg", "en"),
                    t("btn_region_faces", "en")} <= set(labels)
            assert t("btn_region_all", "en") not in labels  # it is everywhere already

            m = fake.mark()
            fake.press(ada, result.result, result.button("Person only"))
            person = await tg._result(fake, ada["id"], m)
            assert person.text.endswith(t("styled_person", "en")), person.text
            assert "Great Wave" in person.text
            newest = tg._job_params(bot, ada["id"])[0]
            assert newest["regions"] == {"entries": [{"region": "person"}], "keep": [],
                                         "feather": 0.0}
            assert newest["style"] == "great-wave"
            assert_person_only(person.upload("photo"), photo)
            labels = [label for label, _ in person.buttons()]
            assert t("btn_region_all", "en") in labels
            assert t("btn_region_person", "en") not in labels

            # stronger/weaker keep the region; "Everywhere" goes back to the whole photo
            m = fake.mark()
            fake.press(ada, person.result, person.button("Weaker"))
            weaker = await tg._result(fake, ada["id"], m)
            assert "(75%)" in weaker.text and weaker.text.endswith(t("styled_person", "en"))
            m = fake.mark()
            fake.press(ada, weaker.result, weaker.button("Everywhere"))
            whole = await tg._result(fake, ada["id"], m)
            assert whole.text == t("done", "en", style=wave, strength=75)
            assert "regions" not in tg._job_params(bot, ada["id"])[0]

    tg.run(scenario())


@pytest.mark.slow
def test_telegram_person_only_without_a_person_says_so_in_chinese_too(tmp_path, stylizer):
    async def scenario():
        async with tg.running_bot(tmp_path, stylizer) as bot:
            fake, zhou = bot.fake, tg.ZHOU
            m = fake.mark()
            fake.photo(zhou, photo_png(96, 128, 2), caption="wave")
            result = await tg._result(fake, zhou["id"], m)
            assert t("btn_region_faces", "zh") in [label for label, _ in result.buttons()]
            m = fake.mark()
            fake.press(zhou, result.result, result.button(t("btn_region_person", "zh")))
            no_person_zh = t("no_region_person", "zh")  # the worker's English text, translated
            failed = await fake.wait_for(lambda c: c.method == "editMessageText"
                                         and no_person_zh in c.text, after=m, timeout=60)
            assert failed.text.startswith(t("failed", "zh", reason="")), failed.text
            assert NO_PERSON not in failed.text
            owner = bot.service.user("telegram", zhou["id"])
            job = bot.service.history(owner)[0]
            assert outcome_text(bot.service, job, "zh") == failed.text

    tg.run(scenario())


# -- Discord --------------------------------------------------------------------------------------
def _area_button(message: dict, arg: str) -> dict:
    (button,) = [c for row in message["components"] for c in row["components"]
                 if (a := decode_action(c.get("custom_id"))) and a.verb == "area"
                 and a.arg == arg]
    return button


@pytest.mark.slow
def test_discord_background_only_button(tmp_path, stylizer):
    photo = _person_photo()

    async def scenario() -> None:
        async with dc.running_bot(tmp_path, stylizer) as (fake, service):
            msg = await dc._result(fake, dc.ALICE, photo, style="starry-night")
            labels = {c.get("label") for row in msg["components"] for c in row["components"]}
            assert {t("btn_region_person", "en"), t("btn_region_bg", "en"),
                    t("btn_region_faces", "en")} <= labels
            button = _area_button(msg, "bg")
            assert button["label"] == t("btn_region_bg", "en")

            # not Bob's to press
            pressed = await fake.press(dc.BOB, msg, button["custom_id"])
            assert await fake.ephemeral_text(pressed) == t("not_yours", "en")

            pressed = await fake.press(dc.ALICE, msg, button["custom_id"])
            bg = await fake.result_of(pressed, timeout=60)
            assert bg["id"] != msg["id"]
            assert bg["embeds"][0]["description"].endswith(t("styled_bg", "en"))
            alice = service.user("discord", dc.ALICE.id)
            newest = service.history(alice)[0]
            assert newest.params["regions"]["entries"] == [{"region": "background"}]
            (att,) = bg["attachments"]
            out, src = _rgb(fake.file(att)), _rgb(photo)
            person = regions.person_mask(src.astype(np.uint8))
            diff = np.abs(out - src).max(axis=-1)
            assert np.percentile(diff[person > 0.99], 99) <= 2.0  # the person as in the photo
            assert diff[person < 0.01].mean() > 10                # the background styled
            assert _area_button(bg, "all")["label"] == t("btn_region_all", "en")

    dc.run(scenario())
