"""The service core: what every front end (HTTP, Telegram, Discord) does, in one place.

Front ends translate their platform's events into calls here and turn the results and typed
errors into their own messages (`bots.i18n`). The core validates input before anything is
queued (bad input gets a clear error and is never stored), records the job durably, and hands it
to the queue; workers (`bots.worker`) do the stylising.
"""

from __future__ import annotations

import logging
from pathlib import Path

from storage import STYLE_SHA_PARAM, BlobStore, Job, JobKind, JobState, Store, User
from storage.queue import JobQueue, open_queue
from stylejax.errors import InvalidRequestError, StyleJAXError
from stylejax.imageio import ImageLimits, decode_image
from stylejax.pack import StyleInfo, default_pack_dir, find_style, read_pack_styles

from .config import Settings
from .ratelimit import TokenBucket

log = logging.getLogger("stylejax.service")


class RateLimitedError(StyleJAXError):
    """Too many requests: `retry_after_s` says when the next one will be accepted."""

    def __init__(self, retry_after_s: int):
        super().__init__(f"Too many requests; try again in {retry_after_s} s.")
        self.retry_after_s = retry_after_s


class JobNotFoundError(StyleJAXError):
    def __init__(self) -> None:
        super().__init__("No such picture job (it may have expired or been deleted).")


class StyleService:
    """Jobs, users and their data; shared by every front end of one deployment."""

    def __init__(self, settings: Settings, *, store: Store | None = None,
                 blobs: BlobStore | None = None, queue: JobQueue | None = None):
        self.settings = settings
        data = Path(settings.data_dir)
        data.mkdir(parents=True, exist_ok=True)
        self.store = store or Store(data / "meta.db")
        self.blobs = blobs or BlobStore(data / "blobs")
        self.queue = queue or open_queue(settings.queue_url)
        # ids and names only: the service front never needs the weights
        self.styles: list[StyleInfo] = read_pack_styles(settings.pack or default_pack_dir())
        self.limits = ImageLimits(max_bytes=settings.max_upload_bytes)
        self.rate = TokenBucket(settings.rate_per_minute / 60.0, settings.rate_burst)

    # -- users ------------------------------------------------------------------------------------
    def user(self, platform: str, platform_user_id: str | int,
             language: str | None = None) -> User:
        return self.store.get_or_create_user(platform, platform_user_id, language)

    def style_id(self, query: str) -> str:
        """A style id, unambiguous prefix or word of an id → the id (UnknownStyleError else)."""
        return self.styles[find_style(self.styles, query)].id

    # -- jobs -------------------------------------------------------------------------------------
    def submit(self, owner: User, photo: bytes, *, style: str | None = None,
               style_image: bytes | None = None, strength: float | None = None,
               keep_colors: bool | None = None) -> Job:
        """Validate, store and queue one request; raises a StyleJAXError a user can read."""
        wait = self.rate.try_acquire(f"user:{owner.id}")
        if wait:
            raise RateLimitedError(max(1, round(wait + 0.5)))
        if (style is None) == (style_image is None):
            raise InvalidRequestError("Choose either a style or a style picture.")
        if strength is None:
            strength = owner.default_strength if owner.default_strength is not None else 1.0
        if not 0.0 <= float(strength) <= 1.0:
            raise InvalidRequestError(f"Strength must be between 0 and 1, got {strength}.")
        if keep_colors is None:
            keep_colors = bool(owner.settings.get("keep_colors", False))
        decode_image(photo, limits=self.limits)  # refuse bad input before anything is stored
        params: dict = {"strength": float(strength), "keep_colors": bool(keep_colors)}
        if style is not None:
            kind = JobKind.PACK
            params["style"] = self.style_id(style)
        else:
            kind = JobKind.CUSTOM
            decode_image(style_image, limits=self.limits)
            params[STYLE_SHA_PARAM] = self.blobs.put(style_image, owner=str(owner.id))
        input_sha = self.blobs.put(photo, owner=str(owner.id))
        job = self.store.create_job(owner.id, kind, params, input_sha,
                                    max_active=self.settings.max_active_jobs)
        self.queue.enqueue(job.id, {"kind": kind.value})
        log.info("job %s queued (%s) for user %d", job.id, kind.value, owner.id)
        return job

    def job(self, job_id: str, owner: User | None = None) -> Job:
        job = self.store.get_job(job_id)
        if job is None or (owner is not None and job.owner != owner.id):
            raise JobNotFoundError()
        return job

    def result(self, job_id: str, owner: User | None = None) -> bytes:
        job = self.job(job_id, owner)
        if job.state is not JobState.DONE or job.result_sha is None:
            raise InvalidRequestError("The picture is not ready yet.")
        return self.blobs.get(job.result_sha)

    def cancel(self, job_id: str, owner: User) -> Job:
        job = self.job(job_id, owner)
        if job.state.is_terminal:
            return job
        return self.store.set_state(job.id, JobState.CANCELLED)

    def history(self, owner: User, limit: int = 10) -> list[Job]:
        return self.store.list_jobs(owner.id, limit)

    def update_settings(self, owner: User, **changes) -> User:
        return self.store.update_user_settings(owner.id, **changes)

    def forget(self, owner: User) -> dict[str, int]:
        """Delete the user's jobs, pictures and settings; returns what was removed."""
        report = self.store.delete_user_data(owner.id)
        for sha in report.orphaned_shas:
            self.blobs.delete(sha)
        self.blobs.release(str(owner.id))
        return dict(report.counts)

    def close(self) -> None:
        self.queue.close()
        self.store.close()
