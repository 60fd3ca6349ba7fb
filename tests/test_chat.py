"""The rules both chat adapters share (bots/chat.py), tested once, without a platform."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib

import pytest
from photos import photo_png

from bots import chat
from bots.config import Settings
from bots.core import StyleService
from storage import JobState, TooManyActiveJobsError
from stylejax.errors import (
    ImageTooLargeError,
    InvalidRequestError,
    NotAnImageError,
    RateLimitedError,
    ServiceBusyError,
    UnknownStyleError,
)


@pytest.fixture()
def service(tmp_path):
    svc = StyleService(Settings(data_dir=tmp_path / "d", rate_per_minute=600, rate_burst=20))
    yield svc
    svc.close()


@pytest.mark.parametrize("text, style, strength", [
    ("starry 0.8", "starry-night", 0.8),
    ("Great Wave", "great-wave", None),
    ("@StyleBot wave 60%", "great-wave", 0.6),
    ("75", None, 0.75),
    ("", None, None),
    (None, None, None),
])
def test_captions(service, text, style, strength):
    req = chat.parse_caption(service, text, mention="StyleBot")
    assert req.style == style and req.strength == pytest.approx(strength)


def test_bad_captions_are_readable_errors(service):
    with pytest.raises(UnknownStyleError):
        chat.parse_caption(service, "cubism 0.5")
    with pytest.raises(InvalidRequestError):
        chat.parse_caption(service, "wave 250")


def test_strength_steps_stay_visible():
    assert chat.next_strength(1.0, +1) == 1.0
    assert chat.next_strength(0.75, +1) == 1.0
    assert chat.next_strength(1.0, -1) == 0.75
    assert chat.next_strength(0.25, -1) == 0.25  # never down to "no style at all"


def test_button_data_round_trip_and_forgeries():
    token = chat.photo_token(hashlib.sha256(b"x").hexdigest())
    for action in (chat.Action("up", "tI6W582eL-aFXXCZBFFgHg"), chat.Action("pick", token, "7"),
                   chat.Action("page", "", "2")):
        data = chat.encode_action(action)
        assert len(data.encode()) <= chat.MAX_CALLBACK_BYTES
        assert chat.decode_action(data) == action
    assert chat.photo_sha(token) == hashlib.sha256(b"x").hexdigest()
    for forged in ("", "rm:job:", "up:../../etc:", "up:a:b:c", "up:" + "a" * 70 + ":",
                   "pick:job:;drop"):
        assert chat.decode_action(forged) is None
    assert chat.photo_sha("not base64!") is None and chat.photo_sha("abcd") is None
    with pytest.raises(ValueError):
        chat.encode_action(chat.Action("up", "x" * 70))


def test_style_pages_cover_every_style_once(service):
    seen = []
    items, pages = chat.style_page(service, "en", 0, per_page=3)
    for page in range(pages):
        items, _ = chat.style_page(service, "en", page, per_page=3)
        seen += [i for i, _name in items]
    assert seen == list(range(len(service.styles)))
    assert chat.style_by_index(service, "0") == service.styles[0].id
    assert chat.style_by_index(service, "99") is None and chat.style_by_index(service, "x") is None


@pytest.mark.parametrize("err, needle", [
    (RateLimitedError(7), "7 s"),
    (TooManyActiveJobsError(2), "2 pictures"),
    (NotAnImageError("x"), "JPEG"),
    (ImageTooLargeError("50 megapixels"), "50 megapixels"),
    (ServiceBusyError(), "busy"),
    (RuntimeError("secret internals at 0xdead"), "went wrong"),
])
def test_error_texts(err, needle):
    text = chat.error_message(err, "en")
    assert needle in text and "0xdead" not in text
    assert chat.error_message(err, "zh") != text  # every error has a Chinese text too


def test_follow_job_reports_progress_then_returns_the_end(service):
    user = service.user("test", 1)
    job = service.submit(user, photo_png(64, 64, seed=1), style="wave")
    seen: list[tuple[str, float]] = []

    async def on_progress(j, _place):
        seen.append((j.state.value, j.progress))

    async def scenario():
        follower = asyncio.create_task(
            chat.follow_job(service, job.id, on_progress, poll_s=0.02, min_update_s=0.0))
        await asyncio.sleep(0.1)
        service.store.set_state(job.id, JobState.RUNNING)
        service.store.set_progress(job.id, 0.4)
        await asyncio.sleep(0.1)
        service.cancel(job.id, user)
        return await asyncio.wait_for(follower, 5)

    final = asyncio.run(scenario())
    assert final.state is JobState.CANCELLED
    assert seen[0] == ("queued", 0.0) and ("running", 0.4) in seen
    assert chat.outcome_text(service, final, "en") == "Cancelled."
    assert chat.progress_text(service.job(job.id), "en")


def test_stroke_setting_text_keyboard_and_labels(service):
    user = service.user("test", 1)
    assert "Stroke size: medium" in chat.settings_text(service, user, "en")
    user = chat.apply_setting(service, user, chat.Action("set", "stroke", "large"))
    assert user.settings == {"stroke": 1.6} and service.default_stroke(user) == 1.6
    assert "笔触大小：粗" in chat.settings_text(service, user, "zh")
    (row,) = [r for r in chat.settings_keyboard(service, user, "en") if r[0][1].job == "stroke"]
    assert [label for label, _ in row] == ["🖌 small", "🖌 medium", "✓ 🖌 large"]
    assert [a.arg for _, a in row] == ["small", "medium", "large"]
    assert chat.stroke_label(1.3, "zh") == "1.3"  # a factor set through the API: as a number
    assert service.submit(user, photo_png(), style="wave").params["stroke"] == 1.6


def test_what_each_change_button_does(service):
    """Stronger / weaker / keep colours / another style, decided once for both bots."""
    user = service.user("test", 21)
    job = service.submit(user, photo_png(64, 64, 1), style="wave", strength=0.75)
    assert chat.button_changes(service, job, "up") == {"strength": 1.0}
    assert chat.button_changes(service, job, "down") == {"strength": 0.5}
    assert chat.button_changes(service, job, "keep") == {"keep_colors": True}
    assert chat.button_changes(service, job, "style", "0") == {"style": service.styles[0].id}
    assert chat.button_changes(service, job, "style", "99") is None  # an old menu
    assert chat.button_changes(service, job, "del") is None
    assert set(chat.RESUBMIT_VERBS) <= set(chat.VERBS)


def test_refine_button_on_instant_custom_results(service, monkeypatch, tmp_path):
    """With the any-style model installed, a custom-style result offers "Refine": the same
    photo and style picture again, optimised on top of the instant result. Without the model
    (the custom style was optimised already), once refined, or on a pack style: no button."""
    from stylejax import style_vectors

    def verbs(job):
        return [a.verb for row in chat.result_keyboard(job, "en") for _, a in row]

    user = service.user("test", 22)
    custom = service.submit(user, photo_png(64, 64, 1), style_image=photo_png(48, 48, 2))
    pack = service.submit(service.user("test", 23), photo_png(64, 64, 3), style="wave")
    monkeypatch.setenv(style_vectors.MODEL_ENV, str(tmp_path / "none"))
    assert "refine" not in verbs(custom)
    assert chat.button_changes(service, custom, "refine") is None
    model = tmp_path / "model"
    model.mkdir()
    (model / "anystyle.json").write_text("{}")  # only its presence is looked at here
    monkeypatch.setenv(style_vectors.MODEL_ENV, str(model))
    assert "refine" in verbs(custom) and "refine" not in verbs(pack)
    assert [label for row in chat.result_keyboard(custom, "zh") for label, a in row
            if a.verb == "refine"] == ["✨ 精修（约 30 秒）"]
    action = chat.Action("refine", custom.id)
    assert chat.decode_action(chat.encode_action(action)) == action
    assert "refine" in chat.RESUBMIT_VERBS  # both adapters resubmit it like "stronger"
    changes = chat.button_changes(service, custom, "refine")
    assert changes == {"refine": True}
    refined = service.resubmit(user, custom.id, **changes)
    assert refined.request.refine and refined.input_sha == custom.input_sha
    assert refined.request.style_image == custom.request.style_image
    assert refined.request.strength == custom.request.strength
    assert "refine" not in verbs(refined)
    assert chat.button_changes(service, refined, "refine") is None  # an old button
    assert chat.button_changes(service, pack, "refine") is None


def test_region_buttons_resubmit_with_a_region_and_say_what_was_styled(tmp_path):
    """"Person only", "Background only", "Keep faces" and "Everywhere": one rule for both
    adapters (an "area" action whose arg names a REGION_CHOICES spec), resubmitted like
    "stronger"; the caption says what was styled; videos and custom styles get no such row."""
    from stylejax.errors import RegionNotFoundError
    from stylejax.request import RegionSpec

    service = StyleService(Settings(data_dir=tmp_path / "d", rate_per_minute=600,
                                    rate_burst=20, max_active_jobs=10))
    user = service.user("test", 31)
    job = service.submit(user, photo_png(64, 64, 1), style="wave")

    def row(j, lang="en"):
        return [(label, a.arg) for r in chat.result_keyboard(j, lang) for label, a in r
                if a.verb == "area"]

    assert row(job) == [("🧍 Person only", "person"), ("🏞 Background only", "bg"),
                        ("🙂 Keep faces", "faces")]
    assert [label for label, _ in row(job, "zh")] == ["🧍 只处理人物", "🏞 只处理背景",
                                                     "🙂 保留面部"]
    assert "area" in chat.RESUBMIT_VERBS
    for arg in chat.REGION_CHOICES:
        action = chat.Action("area", job.id, arg)
        data = chat.encode_action(action)
        assert chat.decode_action(data) == action and len(data) <= chat.MAX_CALLBACK_BYTES
    assert chat.button_changes(service, job, "area", "elbow") is None  # not ours: expired

    person = service.resubmit(user, job.id, **chat.button_changes(service, job, "area", "person"))
    assert person.request.regions == RegionSpec.create("person")
    assert person.params["regions"] == {"entries": [{"region": "person"}], "keep": [],
                                        "feather": 0.0}
    assert person.input_sha == job.input_sha and person.request.style == "great-wave"
    assert chat.region_choice(person.request) == "person"
    assert [arg for _, arg in row(person)] == ["bg", "faces", "all"]
    done = dataclasses.replace(service.job(person.id), state=JobState.DONE)
    assert chat.outcome_text(service, done, "en").endswith(
        "Only the person is styled; the background is as in the photo.")
    assert chat.outcome_text(service, done, "zh").endswith("只为人物添加了风格，背景保持原样。")

    # stronger keeps the region; "Everywhere" drops it
    stronger = service.resubmit(user, person.id,
                                **chat.button_changes(service, person, "down"))
    assert stronger.request.regions == person.request.regions
    assert chat.button_changes(service, person, "area", "all") == {"regions": ()}
    whole = service.resubmit(user, person.id, regions=())
    assert whole.request.regions is None and "regions" not in whole.params
    faces = service.resubmit(user, whole.id,
                             **chat.button_changes(service, whole, "area", "faces"))
    assert faces.request.regions.keep == ("face",)
    assert chat.region_text(faces.request, "en") == chat.t("styled_faces", "en")

    # a spec no button makes (the API's) is described as it is
    spec = RegionSpec.create([("background", "starry"), ("person", "wave", 0.5)], keep="faces")
    api = faces.request.with_changes(regions=spec)
    assert chat.region_text(api, "en") == ("Styled: background, person. "
                                           "Kept as in the photo: face.")

    # no region row for a custom style (StyleRequest.create refuses regions there)
    custom = service.submit(service.user("test", 32), photo_png(64, 64, 2),
                            style_image=photo_png(48, 48, 3))
    assert row(custom) == [] and chat.button_changes(service, custom, "area", "person") is None

    # the message of a photo without the region, as the worker records it
    err = RegionNotFoundError("No person found in this photo, so there is no person to style.")
    assert chat.error_message(err, "en") == ("Sorry, that did not work: No person found in "
                                             "this photo, so there is no person to style.")
    # the worker's own text (stylejax.compose) reaches a Chinese user in Chinese, both ways
    from stylejax.compose import NOT_FOUND

    for region, text in NOT_FOUND.items():
        zh = chat.error_message(RegionNotFoundError(text), "zh")
        assert zh.startswith("抱歉") and text not in zh and zh != chat.t("failed", "zh",
                                                                          reason=text), region
    failed = service.submit(service.user("test", 33), photo_png(64, 64, 4), style="wave")
    service.jobs.fail(failed.id, NOT_FOUND["sky"])
    text = chat.outcome_text(service, service.job(failed.id), "zh")
    assert "天空" in text and "sky" not in text
    assert "No sky found" in chat.outcome_text(service, service.job(failed.id), "en")
    service.close()
