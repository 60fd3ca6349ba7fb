"""The one job-following stream (storage/job_events.py) that SSE and the chat bots consume."""

from __future__ import annotations

import asyncio

from storage import JobKind, JobState, Store
from storage.job_events import job_events


def _new_job(store: Store) -> str:
    owner = store.get_or_create_user("test", 1).id
    return store.create_job(owner, JobKind.PACK, {"style": "wave"}, input_sha="a" * 64).id


def test_stream_reports_each_change_once_and_ends_with_the_final_state(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    job_id = _new_job(store)

    async def scenario():
        seen = []

        async def follow():
            async for event in job_events(store.get_job, job_id, poll_s=0.01, heartbeat_s=60):
                seen.append((event.job.state, event.job.progress, event.changed))

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.05)
        store.set_state(job_id, JobState.RUNNING)
        await asyncio.sleep(0.05)
        store.set_progress(job_id, 0.5)
        await asyncio.sleep(0.05)
        store.mark_done(job_id, "b" * 64)
        await asyncio.wait_for(task, 5)
        return seen

    seen = asyncio.run(scenario())
    assert seen == [(JobState.QUEUED, 0.0, True), (JobState.RUNNING, 0.0, True),
                    (JobState.RUNNING, 0.5, True), (JobState.DONE, 1.0, True)]
    store.close()


def test_quiet_job_gets_heartbeats_and_the_stream_stops_at_its_timeout(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    job_id = _new_job(store)

    async def scenario():
        return [e async for e in job_events(store.get_job, job_id, poll_s=0.01,
                                            heartbeat_s=0.05, timeout_s=0.3)]

    events = asyncio.run(scenario())
    assert events[0].changed and not events[0].is_last
    heartbeats = [e for e in events[1:] if not e.changed]
    assert heartbeats and len(heartbeats) == len(events) - 1
    assert all(e.job.state is JobState.QUEUED for e in events)
    store.close()


def test_a_deleted_job_ends_the_stream_with_gone(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    job_id = _new_job(store)

    async def scenario():
        events = []
        async for event in job_events(store.get_job, job_id, poll_s=0.01):
            events.append(event)
            if len(events) == 1:
                store.delete_jobs([job_id])
        return events

    events = asyncio.run(asyncio.wait_for(scenario(), 5))
    assert [e.job is None for e in events] == [False, True] and events[-1].is_last
    store.close()
