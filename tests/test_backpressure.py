"""Back-pressure (issue 17, finding 10): every waiting job knows its place in line and an
estimate, and a full line refuses new jobs with a friendly 503 + Retry-After.

The service core runs with a real embedded queue and no worker, so jobs stay queued; the job
book gets "recent durations" by running jobs through their states with a chosen clock. The
HTTP API, the web page (Chromium) and the Telegram adapter (its fake Bot API) are the real ones.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from photos import photo_png
from service_process import Server, assert_json_error, post_photo

from bots import chat
from bots import core as core_mod
from bots.config import Settings
from bots.core import QueuePlace, StyleService
from bots.i18n import ordinal, t
from storage import JobState, Store
from stylejax.errors import QueueFullError
from stylejax.request import StyleRequest

RESULT_SHA = "ab" * 32


def record_durations(db: Path, seconds: float, n: int = 3, *, video: bool = False) -> None:
    """`n` done jobs of a lane that each took `seconds` (start to finish), just now."""
    now = [time.time() - n * seconds - 1]
    with Store(db, clock=lambda: now[0]) as store:
        owner = store.get_or_create_user("test", "earlier-jobs")
        request = StyleRequest.create(style="great-wave")
        if video:
            request = request.with_changes(media="video")
        for _ in range(n):
            job = store.create_job(owner.id, "pack", request.to_params(), RESULT_SHA)
            store.set_state(job.id, JobState.RUNNING)
            now[0] += seconds
            assert store.mark_done(job.id, RESULT_SHA)


@pytest.fixture()
def service(tmp_path, monkeypatch):
    """One local worker slot (1 worker × batch 1), none running: jobs stay in line."""
    monkeypatch.setattr(core_mod, "LANE_STATS_TTL_S", 0.0)  # estimates see new durations now
    svc = StyleService(Settings(data_dir=tmp_path / "d", workers=1, max_batch=1,
                                rate_per_minute=600, rate_burst=50, max_active_jobs=20,
                                max_queued_jobs=5))
    yield svc
    svc.close()


def _submit(service: StyleService, n: int, seed: int = 0) -> list:
    user = service.user("test", "alice")
    return [service.submit(user, photo_png(64, 64, seed=seed + i), style="wave")
            for i in range(n)]


def _positions(service: StyleService, jobs) -> list[int | None]:
    return [service.store.queue_position(j.id) for j in jobs]


def test_places_follow_the_line_and_lanes_are_separate(service):
    jobs = _submit(service, 4)
    assert _positions(service, jobs) == [1, 2, 3, 4]
    # no job has finished yet: an honest "don't know" rather than a guess
    assert [service.place(j) for j in jobs] == [QueuePlace(p, None) for p in (1, 2, 3, 4)]

    user = service.user("test", "alice")
    service.cancel(jobs[1].id, user)                           # a cancelled job leaves the line
    assert _positions(service, jobs) == [1, None, 2, 3]
    service.store.set_state(jobs[0].id, JobState.RUNNING)      # the next one is taken
    assert _positions(service, jobs) == [None, None, 1, 2]
    assert service.place(service.job(jobs[1].id)) is None      # ended: no place, no estimate

    # the video lane has its own line: a clip waits behind clips only
    video = StyleRequest.create(style="great-wave").with_changes(media="video")
    clip = service.store.create_job(user.id, "pack", video.to_params(), jobs[0].input_sha)
    assert service.store.queue_position(clip.id) == 1
    assert _positions(service, jobs) == [None, None, 1, 2]
    assert service.store.queued_count(video=True) == 1
    assert service.store.queued_count(video=False) == 2


def test_places_are_the_same_with_the_redis_queue(tmp_path):
    """The line is read from the job book: a Redis queue (a real redis-server) gives the same
    places, and a job a worker claims from the stream leaves the line."""
    from redis_server import RedisServer, require_redis_server

    with RedisServer(tmp_path / "redis", require_redis_server()) as srv:
        svc = StyleService(Settings(data_dir=tmp_path / "d", queue=srv.url, rate_burst=50,
                                    rate_per_minute=600, max_active_jobs=20))
        try:
            jobs = _submit(svc, 3)
            assert _positions(svc, jobs) == [1, 2, 3]
            claimed = svc.queue.claim("w1", block_s=1.0, max_items=1)
            assert [d.job_id for d in claimed] == [jobs[0].id]
            svc.jobs.begin(claimed[0].job_id)          # what a worker does first
            assert _positions(svc, jobs) == [None, 1, 2]
        finally:
            svc.close()


def test_estimates_appear_once_jobs_have_finished(service):
    jobs = _submit(service, 3)
    assert service.place(jobs[0]).eta_s is None
    record_durations(service.store.path, 2.0)  # median 2 s, one slot, nothing running
    # the first starts at once (2 s); each next one waits one more round
    assert [service.place(j).eta_s for j in jobs] == [2, 4, 6]

    service.store.set_state(jobs[0].id, JobState.RUNNING)
    # the running job ends in about d - elapsed; the line waits for it (d/2 on average)
    assert service.place(service.job(jobs[0].id)) == QueuePlace(None, 2)
    assert [service.place(j) for j in jobs[1:]] == [QueuePlace(1, 3), QueuePlace(2, 5)]
    service.store.set_progress(jobs[0].id, 0.5)  # its own progress wins once it reports some
    assert service.place(service.job(jobs[0].id)) == QueuePlace(None, 1)

    # the video lane has its own durations: none yet
    assert service.estimate_s(1, video=True) is None


def test_a_full_line_refuses_before_anything_is_stored(service):
    jobs = _submit(service, 5)                  # max_queued_jobs=5
    def stored() -> list[str]:
        return sorted(p.name for p in Path(service.blobs.root).rglob("*") if len(p.name) == 64)

    blobs_before = stored()
    with pytest.raises(QueueFullError) as err:
        _submit(service, 1, seed=99)
    assert err.value.retry_after_s == core_mod.RETRY_AFTER_UNKNOWN_S  # no durations yet
    assert "5 pictures are already waiting" in str(err.value)
    assert len(service.history(service.user("test", "alice"), limit=50)) == 5
    assert stored() == blobs_before
    # Retry-After comes from the estimate once there are durations: a tenth of the line
    record_durations(service.store.path, 40.0)
    with pytest.raises(QueueFullError) as err:
        _submit(service, 1, seed=99)
    assert err.value.retry_after_s == 40
    service.cancel(jobs[0].id, service.user("test", "alice"))  # room again
    assert service.store.queue_position(_submit(service, 1, seed=99)[0].id) == 5


def test_chat_texts_show_the_place_in_both_languages(service):
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 103)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "103rd"]
    job = _submit(service, 1)[0]
    assert chat.progress_text(job, "en") == t("queued", "en")
    assert chat.progress_text(job, "en", QueuePlace(1, None)) == "⏳ Next in line"
    assert chat.progress_text(job, "en", QueuePlace(3, 38)) == "⏳ 3rd in line, about 40 s"
    assert chat.progress_text(job, "en", QueuePlace(12, 130)) == "⏳ 12th in line, about 3 min"
    assert chat.progress_text(job, "zh", QueuePlace(3, 38)) == "⏳ 排在第 3 位，大约 40 秒"
    full = QueueFullError(200, 12)
    assert chat.error_message(full, "en") == (
        "I'm very busy right now: 200 pictures are already waiting. "
        "Please try again in 12 s.")
    assert "200" in chat.error_message(full, "zh") and "12 秒" in chat.error_message(full, "zh")


def test_follow_job_reports_moves_in_the_line(service):
    jobs = _submit(service, 3)
    record_durations(service.store.path, 10.0)
    seen: list[str] = []

    async def on_progress(job, place):
        seen.append(chat.progress_text(job, "en", place))

    async def scenario():
        follower = asyncio.create_task(
            chat.follow_job(service, jobs[2].id, on_progress, poll_s=0.02, min_update_s=0.0))
        await asyncio.sleep(0.2)
        user = service.user("test", "alice")
        service.cancel(jobs[0].id, user)
        await asyncio.sleep(0.2)
        service.cancel(jobs[2].id, user)
        return await asyncio.wait_for(follower, 5)

    assert asyncio.run(scenario()).state is JobState.CANCELLED
    assert seen == ["⏳ 3rd in line, about 30 s", "⏳ 2nd in line, about 20 s"]


# -- the HTTP API, a real `stylejax serve` process without workers -----------------------------
def _sse_first_data(client: httpx.Client, job_id: str) -> dict:
    with client.stream("GET", f"/api/v1/jobs/{job_id}/events", timeout=10) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: "):
                return json.loads(line[len("data: "):])
    raise AssertionError("no event")


def test_http_places_estimates_and_the_503(tmp_path):
    srv = Server(tmp_path, 0, STYLEJAX_MAX_QUEUED_JOBS="3", STYLEJAX_RATE_BURST="30",
                 STYLEJAX_RATE_PER_MINUTE="600", STYLEJAX_MAX_ACTIVE_JOBS="10")
    try:
        record_durations(srv.data_dir / "meta.db", 12.0)  # no worker: one slot is assumed
        c = srv.client
        accepted = [post_photo(c, photo_png(64, 64, seed=i), style="wave") for i in range(3)]
        assert [r.status_code for r in accepted] == [202] * 3
        bodies = [r.json() for r in accepted]
        assert [(b["queue_position"], b["eta_s"]) for b in bodies] == [(1, 12), (2, 24), (3, 36)]
        ids = [b["id"] for b in bodies]
        status = c.get(f"/api/v1/jobs/{ids[2]}").json()
        assert (status["state"], status["queue_position"], status["eta_s"]) == ("queued", 3, 36)
        event = _sse_first_data(c, ids[2])
        assert (event["state"], event["queue_position"], event["eta_s"]) == ("queued", 3, 36)

        refused = post_photo(c, photo_png(64, 64, seed=9), style="wave")
        message = assert_json_error(refused, 503)
        assert refused.headers["Retry-After"] == "12"   # from the estimate, not a constant
        assert "3 pictures are already waiting" in message and "12 s" in message

        assert c.delete(f"/api/v1/jobs/{ids[0]}").json() == {"deleted": ids[0]}
        moved = c.get(f"/api/v1/jobs/{ids[1]}").json()
        assert (moved["queue_position"], moved["eta_s"]) == (1, 12)
        again = post_photo(c, photo_png(64, 64, seed=9), style="wave")
        assert again.status_code == 202 and again.json()["queue_position"] == 3
        assert "line is full" in srv.log()
    finally:
        assert srv.stop() == 0, srv.log()


# -- a chat adapter end to end: the real telegram Application, the fake Bot API ----------------
def test_telegram_status_message_shows_the_place(tmp_path, monkeypatch):
    from test_telegram_bot import ADA, BEN, run, running_bot

    monkeypatch.setattr(core_mod, "LANE_STATS_TTL_S", 0.0)

    async def scenario():
        async with running_bot(tmp_path, workers=1, max_batch=1) as bot:  # no worker runs
            fake, service = bot.fake, bot.service
            record_durations(service.store.path, 10.0)
            m = fake.mark()
            fake.photo(BEN, photo_png(seed=1), caption="wave")
            await fake.reply("sendMessage", BEN["id"], after=m)
            m = fake.mark()
            fake.photo(ADA, photo_png(seed=2), caption="wave")
            status = await fake.reply("sendMessage", ADA["id"], after=m)
            mine = status.result["message_id"]
            await fake.wait_for(lambda c: c.method == "editMessageText"
                                and c.params["message_id"] == mine
                                and c.text == "⏳ 2nd in line, about 20 s", after=m)
            ben_job = service.history(service.user("telegram", BEN["id"]))[0]
            service.cancel(ben_job.id, service.user("telegram", BEN["id"]))
            await fake.wait_for(lambda c: c.method == "editMessageText"
                                and c.params["message_id"] == mine
                                and c.text == "⏳ Next in line, about 10 s", after=m)
    run(scenario())


# -- the web page in Chromium ------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_web_page_shows_the_place_while_waiting(tmp_path):
    from test_web_page import CHROMIUM, SAMPLE, Tab

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing")
    from playwright.sync_api import sync_playwright

    srv = Server(tmp_path, 0, STYLEJAX_RATE_BURST="30", STYLEJAX_MAX_ACTIVE_JOBS="10")
    try:
        record_durations(srv.data_dir / "meta.db", 8.0)
        ahead = [post_photo(srv.client, photo_png(64, 64, seed=i), style="wave").json()["id"]
                 for i in range(2)]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            try:
                with Tab(browser, srv, viewport={"width": 1280, "height": 800},
                         locale="en-US") as tab:
                    page = tab.page
                    page.set_input_files("#photo", str(SAMPLE))
                    page.click("label[for=style-starry-night]")
                    page.click("#go")
                    page.wait_for_function("() => document.getElementById('status').textContent"
                                           " === '3rd in line, about 25 s'", timeout=15_000)
                    page.screenshot(path="/tmp/backpressure_web_queued.png")
                    srv.client.delete(f"/api/v1/jobs/{ahead[0]}")  # the line moves: SSE says so
                    page.wait_for_function("() => document.getElementById('status').textContent"
                                           " === '2nd in line, about 20 s'", timeout=15_000)
                    assert page.get_attribute("#stage", "data-queue-position") == "2"
                    assert page.is_visible("#cancel") and not tab.js_errors, tab.js_errors
                with Tab(browser, srv, viewport={"width": 1280, "height": 800},
                         locale="zh-CN") as tab:
                    page = tab.page
                    page.set_input_files("#photo", str(SAMPLE))
                    page.click("label[for=style-starry-night]")
                    page.click("#go")
                    page.wait_for_function("() => document.getElementById('status').textContent"
                                           ".includes('，大约 ')", timeout=15_000)
                    job = srv.client.get(
                        f"/api/v1/jobs/{page.get_attribute('#stage', 'data-job-id')}").json()
                    text = page.inner_text("#status")
                    assert text.startswith(f"排在第 {job['queue_position']} 位，大约 "), text
                    assert text.endswith(" 秒"), text
                    assert not tab.js_errors, tab.js_errors
            finally:
                browser.close()
    finally:
        assert srv.stop() == 0, srv.log()
