"""Workers: take jobs from the queue, stylise, store the result, acknowledge.

Delivery is at-least-once (a worker that dies mid-job leaves the job to be redelivered), and the
result is recorded exactly once: `Store.mark_done` succeeds for one caller only, and a redelivered
job that is already finished is simply acknowledged. Pack jobs claimed together that share a
style and options run as one batch through the engine.

Video jobs (clips, animated GIF / WebP) come from a second queue, the video lane
(`Settings.video_queue_url`): a worker with the lane (`video_queue`) claims from it only when
no photo is waiting, so photos never wait behind clips, and `stylejax serve` leaves one worker
of two or more without it, so a photo always finds a free worker. A clip runs
`stylejax.video.stylize_video` from a temporary file, reports progress per frame batch,
checks cancellation between batches and keeps its lease with the same heartbeat as every job.
3D model jobs (a GLB) share the video lane: `stylejax.mesh_textures.stylize_model` with the
service's model limits, progress per texture, cancellation checked before each texture.
The job's `StyleRequest` (`job.request`, its stored payload) goes to the stylizer unchanged.

A worker needs only a queue, a job book (`bots.jobbook`: the local stores, or the serving
machine's internal API for workers on other machines) and a Stylizer; it never builds the
front-end core. Dead letters (jobs the queue gave up on) are not a worker's business: the janitor
of `stylejax serve` (`bots.janitor`) fails them, also for workers on other machines.
"""

from __future__ import annotations

import functools
import logging
import signal
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from storage import BlobStore, Job, JobKind, Store
from storage.queue import Delivery, JobQueue, new_consumer_name, open_queue
from stylejax.custom_style import CustomStyleConfig
from stylejax.errors import GENERIC_ERROR, JobCancelledError, StyleJAXError
from stylejax.imageio import decode_image, encode_image
from stylejax.mesh_textures import ZIP_MAGIC, stylize_model, unpack_model_zip, zip_folder
from stylejax.stylizer import Stylizer
from stylejax.video import probe_video, stylize_video

from .config import Settings, queue_options
from .jobbook import JobBook, LocalJobBook, RemoteJobBook

log = logging.getLogger("stylejax.worker")

__all__ = ["GENERIC_ERROR", "Worker"]

QUEUE_RETRY_S = (0.5, 10.0)  # back-off range while the queue (e.g. Redis) is unreachable


class _Heartbeat:
    """Renews the leases of the deliveries being worked on, so long jobs are not redelivered.

    A worker that dies stops renewing: its jobs go back to the queue one lease later.
    """

    def __init__(self, queue, deliveries: list[Delivery], every_s: float):
        self.queue, self.deliveries, self.every_s = queue, deliveries, every_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stylejax-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._done.wait(self.every_s):
            for d in self.deliveries:
                try:
                    self.queue.touch(d)
                except Exception as err:  # noqa: BLE001 - a missed beat only risks a redelivery
                    log.warning("heartbeat for job %s failed: %r", d.job_id, err)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


class Worker:
    """One consumer of the queue; `run()` loops until stopped (or `max_jobs` are handled)."""

    def __init__(self, queue: JobQueue, book: JobBook, stylizer: Stylizer | None = None, *,
                 settings: Settings, consumer: str | None = None, max_batch: int = 4,
                 video_queue: JobQueue | None = None):
        """Jobs from `queue`, read and recorded through `book`, stylised by `stylizer` (one for
        `settings.pack` when not given); video jobs from `video_queue` when given (None: this
        worker takes photos only). See `beside`, `local` and `remote` for the usual three."""
        self.settings = settings
        self.queue = queue
        self.video_queue = video_queue
        self.book = book
        self.stylizer = stylizer or Stylizer(settings.pack)
        self.consumer = consumer or new_consumer_name()
        self.max_batch = max_batch
        self.stop = threading.Event()
        self.handled = 0

    @classmethod
    def beside(cls, service, *, video: bool = True, **kwargs) -> Worker:
        """A worker in the serving process (worker threads, tests): the service's queues, job
        book (`service.jobs`) and settings; nothing else of the service is used. `video`:
        whether it also takes the video lane."""
        return cls(service.queue, service.jobs, settings=service.settings,
                   video_queue=service.video_queue if video else None, **kwargs)

    @staticmethod
    def _video_lane(settings: Settings) -> JobQueue | None:
        """The video lane's queue for a worker of its own process (`settings.worker_video`)."""
        if not settings.worker_video:
            return None
        return open_queue(settings.video_queue_url, **queue_options(settings))

    @classmethod
    def local(cls, settings: Settings, **kwargs) -> Worker:
        """A worker process sharing the service's disk (`stylejax worker`, the processes of
        `stylejax serve`): the queue and the stores under `settings.data_dir`."""
        data = Path(settings.data_dir)
        data.mkdir(parents=True, exist_ok=True)
        book = LocalJobBook(Store(data / "meta.db"), BlobStore(data / "blobs"))
        queue = open_queue(settings.queue_url, **queue_options(settings))
        return cls(queue, book, settings=settings, video_queue=cls._video_lane(settings),
                   **kwargs)

    @classmethod
    def remote(cls, settings: Settings, server_url: str, **kwargs) -> Worker:
        """A worker on another machine: jobs from the shared (Redis) queue, job records and
        pictures through the serving machine's internal API."""
        if settings.worker_key is None:
            raise ValueError("a remote worker needs STYLEJAX_WORKER_KEY (the server's too)")
        book = RemoteJobBook(server_url, settings.worker_key.get_secret_value())
        queue = open_queue(settings.queue_url, **queue_options(settings))
        return cls(queue, book, settings=settings, video_queue=cls._video_lane(settings),
                   **kwargs)

    def close(self) -> None:
        """Close the queues and the job book (of a `local` or `remote` worker; one `beside` the
        service leaves them to the service)."""
        self.queue.close()
        if self.video_queue is not None:
            self.video_queue.close()
        self.book.close()

    # -- one job ----------------------------------------------------------------------------------
    def _finish(self, d: Delivery, job: Job, image, queue: JobQueue | None = None) -> None:
        data = image if isinstance(image, bytes) else encode_image(image, "png")
        if self.book.finish(job, data):  # the one call that records it, however many deliveries
            log.info("job %s done (attempt %d)", job.id, d.attempts)
        self._ack(d, queue)

    def _ack(self, d: Delivery, queue: JobQueue | None = None) -> None:
        """Ack, tolerating a queue outage: the job is recorded, so a redelivery is a no-op."""
        try:
            (queue or self.queue).ack(d)
        except Exception as err:  # noqa: BLE001
            log.warning("could not ack job %s (%r); its redelivery will be skipped",
                        d.job_id, err)

    def _fail(self, d: Delivery, job: Job, err: BaseException,
              queue: JobQueue | None = None) -> None:
        queue = queue or self.queue
        if isinstance(err, StyleJAXError):
            self.book.fail(job.id, str(err))
            self._ack(d, queue)
        elif d.attempts >= queue.max_attempts:
            log.exception("job %s failed for good", job.id, exc_info=err)
            self.book.fail(job.id, GENERIC_ERROR)
            self._ack(d, queue)
        else:
            log.warning("job %s failed (attempt %d), will retry: %r", job.id, d.attempts, err)
            self.book.requeue(job.id)
            queue.release(d)

    def _hand_back(self, d: Delivery, job: Job, queue: JobQueue | None = None) -> None:
        """Shutting down: the job goes to the next worker; stopping is not its fault."""
        log.info("job %s handed back: worker stopping", job.id)
        self.book.requeue(job.id)
        (queue or self.queue).release(d, count_attempt=False)

    def _run_long(self, d: Delivery, job: Job, work: Callable[[Callable[[], bool]], bytes]
                  ) -> None:
        """A video-lane job: `work(should_stop)` makes the result bytes. A cancelled job is
        acknowledged, a stopping worker hands the job back, any other failure is recorded."""
        queue = self.video_queue
        cancelled = functools.partial(self.book.is_cancelled, job.id)
        try:
            result = work(lambda: self.stop.is_set() or cancelled())
            self._finish(d, job, result, queue)
        except JobCancelledError:
            if cancelled():
                self._ack(d, queue)
            else:
                self._hand_back(d, job, queue)
        except Exception as err:  # noqa: BLE001 - every failure is recorded for the user
            self._fail(d, job, err, queue)

    def _run_video(self, d: Delivery, job: Job) -> None:
        """One clip or animation: the upload to a temporary file, `stylize_video` to another
        (MP4; GIF / WebP stay GIF / WebP), the result recorded like a photo's."""

        def work(should_stop: Callable[[], bool]) -> bytes:
            limits = self.settings.video_limits
            with tempfile.TemporaryDirectory(prefix="stylejax-video-") as tmp:
                data = self.book.photo(job)
                info = probe_video(data, limits)
                src = Path(tmp, "upload")
                src.write_bytes(data)
                del data
                suffix = info.container if info.container in ("gif", "webp") else "mp4"
                dst = Path(tmp, f"result.{suffix}")
                stylize_video(self.stylizer, job.request, src, dst, limits=limits, info=info,
                              progress=lambda f: self.book.progress(job.id, 0.99 * f),
                              should_stop=should_stop)
                return dst.read_bytes()

        self._run_long(d, job, work)

    def _run_model(self, d: Delivery, job: Job) -> None:
        """One 3D model: a GLB to a temporary file and `stylize_model` to another GLB; a zip
        (a .gltf or an .obj with its files) unpacked, the model stylised beside itself as
        `styled-<name>` (so its references to the other files still hold) and the folder
        zipped again. The result is recorded like a photo's; a bad model (a StyleJAXError)
        fails the job with its message at once; progress is reported per texture."""

        def work(should_stop: Callable[[], bool]) -> bytes:
            limits = self.settings.model_limits
            with tempfile.TemporaryDirectory(prefix="stylejax-model-") as tmp:
                data = self.book.photo(job)
                if data[:4] == ZIP_MAGIC:
                    folder = Path(tmp, "model")
                    src = unpack_model_zip(data, folder, limits)
                    dst = src.with_name(f"styled-{src.name}")
                else:
                    folder = None
                    src, dst = Path(tmp, "upload.glb"), Path(tmp, "result.glb")
                    src.write_bytes(data)
                del data
                self.book.progress(job.id, 0.05)
                stylize_model(src, dst, self.stylizer, job.request, limits=limits,
                              progress=lambda i, n, _r: self.book.progress(
                                  job.id, 0.05 + 0.94 * (i + 1) / n),
                              should_stop=should_stop)
                return dst.read_bytes() if folder is None else zip_folder(folder)

        self._run_long(d, job, work)

    def _run_custom(self, d: Delivery, job: Job) -> None:
        cancelled = functools.partial(self.book.is_cancelled, job.id)
        try:
            settings = self.settings
            size = min(settings.custom_style_size, settings.max_side)
            result = self.stylizer.run_custom(
                job.request, self.book.photo(job), self.book.style_picture(job),
                config=CustomStyleConfig(size=size, time_budget_s=settings.custom_style_seconds),
                progress=lambda f, _losses: self.book.progress(job.id, 0.99 * f),
                should_stop=lambda: self.stop.is_set() or cancelled())
            if cancelled():
                self._ack(d)
            elif self.stop.is_set() and result.stopped_early:
                # shutting down: hand the job to the next worker rather than keep the service
                # waiting ~30 s or deliver a half-learnt style
                self._hand_back(d, job)
            else:
                self._finish(d, job, result.image)
        except Exception as err:  # noqa: BLE001 - every failure is recorded for the user
            self._fail(d, job, err)

    def _mask(self, job: Job):
        """The job's hand-painted mask (the region "mask") decoded at `max_side` at most, as
        the stylizer takes it (it scales it to the photo); None when the job has none."""
        data = self.book.mask_picture(job)
        return None if data is None else decode_image(data, max_side=self.settings.max_side).rgb

    def _run_pack_batch(self, items: list[tuple[Delivery, Job]]) -> None:
        request = items[0][1].request  # the batch shares it (StyleRequest.batch_key)
        try:
            photos = [self.book.photo(job) for _, job in items]
            mask = self._mask(items[0][1])  # the batch shares it too (batch_key has its sha)
            for _, job in items:
                self.book.progress(job.id, 0.1)
            images = self.stylizer.run_many(request, photos, max_size=self.settings.max_side,
                                            mask=mask)
        except Exception as err:  # noqa: BLE001 - one bad photo must not fail its batch mates
            if len(items) > 1:
                for item in items:
                    self._run_pack_batch([item])
            else:
                self._fail(*items[0], err)
            return
        for (d, job), image in zip(items, images):
            try:
                self._finish(d, job, image)
            except Exception as err:  # noqa: BLE001
                self._fail(d, job, err)

    def handle(self, deliveries: list[Delivery], queue: JobQueue | None = None) -> None:
        """Run a claimed set (from `queue`, the photo queue by default): pack jobs grouped by
        style and options, custom jobs and videos one by one. The heartbeat renews their
        leases meanwhile, however long a clip takes."""
        queue = queue or self.queue
        every = max(0.2, queue.visibility_s / 3)
        with _Heartbeat(queue, deliveries, every):
            self._handle(deliveries, queue)
        self.handled += len(deliveries)

    def _handle(self, deliveries: list[Delivery], queue: JobQueue) -> None:
        groups: dict[tuple, list[tuple[Delivery, Job]]] = defaultdict(list)
        for d in deliveries:
            job = self.book.begin(d.job_id)
            if job is None:
                self._ack(d, queue)  # redelivery of finished work: nothing to do
                continue
            if job.request.long_lane:
                if queue is not self.video_queue:  # not this lane's job (queued before lanes)
                    self._fail(d, job, RuntimeError("a long job in the photo queue"), queue)
                elif job.request.is_model:
                    self._run_model(d, job)
                else:
                    self._run_video(d, job)
            elif job.kind is JobKind.CUSTOM:
                self._run_custom(d, job)
            else:
                groups[job.request.batch_key()].append((d, job))
        for items in groups.values():
            self._run_pack_batch(items)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, *, max_jobs: int | None = None, idle_exit_s: float | None = None) -> int:
        """Claim and handle jobs until `stop` is set; returns how many deliveries it handled."""
        idle_since = time.monotonic()
        backoff = QUEUE_RETRY_S[0]
        while not self.stop.is_set():
            if max_jobs is not None and self.handled >= max_jobs:
                break
            try:
                batch, lane = self._claim()
            except Exception as err:  # noqa: BLE001 - e.g. Redis restarting: wait, then retry
                log.warning("worker %s: queue unavailable (%r); retrying in %.1f s",
                            self.consumer, err, backoff)
                self.stop.wait(backoff)
                backoff = min(QUEUE_RETRY_S[1], backoff * 2)
                continue
            backoff = QUEUE_RETRY_S[0]
            if batch:
                try:
                    self.handle(batch, lane)
                except Exception as err:  # noqa: BLE001 - leases expire: the jobs come back
                    log.warning("worker %s: batch interrupted (%r); its jobs will be "
                                "redelivered", self.consumer, err)
                idle_since = time.monotonic()
            elif idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                break
        return self.handled

    def _claim(self) -> tuple[list[Delivery], JobQueue]:
        """The next deliveries and their queue: photos first; a clip from the video lane only
        when no photo waits. claim() also takes over deliveries whose worker died (expired
        leases)."""
        queue = self.queue
        if self.video_queue is None:
            batch = queue.claim(self.consumer, block_s=1.0, max_items=self.max_batch)
        else:
            batch = queue.claim(self.consumer, block_s=0, max_items=self.max_batch)
            if not batch:
                clip = self.video_queue.claim(self.consumer, block_s=0, max_items=1)
                if clip:
                    return clip, self.video_queue
                batch = queue.claim(self.consumer, block_s=0.5, max_items=self.max_batch)
        wait = self.settings.batch_wait_s
        if batch and len(batch) < self.max_batch and wait > 0:
            # a burst is often still arriving: a short wait fills the batch
            batch += queue.claim(self.consumer, block_s=wait,
                                 max_items=self.max_batch - len(batch))
        return batch, queue

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: finish the current jobs, claim no more, exit the loop."""
        def handler(signum, _frame):
            log.info("worker %s: %s received, finishing current work", self.consumer,
                     signal.Signals(signum).name)
            self.stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handler)
