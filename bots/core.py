"""The service core: what every front end (HTTP, Telegram, Discord) does, in one place.

Front ends translate their platform's events into calls here and turn the results and typed
errors (all in `stylejax.errors`) into their own messages (`bots.i18n`). The core validates
input before anything is queued (bad input gets a clear error and is never stored), records the
job durably, and hands it to the queue; workers (`bots.worker`) do the stylising.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import math
import statistics
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from storage import BlobStore, Job, JobKind, JobState, Store, User
from storage.job_events import JobEvent, job_events
from storage.queue import JobQueue, open_queue
from stylejax.errors import (
    GENERIC_ERROR,
    CorruptImageError,
    InvalidRequestError,
    JobNotFoundError,
    ModelTooLargeError,
    NotAModelError,
    NotAnImageError,
    QueueFullError,
    RateLimitedError,
    ServiceBusyError,
    UnsupportedImageError,
)
from stylejax.imageio import ImageLimits, decode_image, picture_shape
from stylejax.mesh_textures import (
    GLB_MAGIC,
    MODEL_SUFFIXES,
    ZIP_MAGIC,
    ModelLimits,
    ModelSummary,
    check_model,
    size_text,
    unpack_model_zip,
)
from stylejax.pack import StyleInfo, default_pack_dir, find_style, read_pack_styles
from stylejax.request import RegionSpec, StyleRequest
from stylejax.stroke import parse_stroke
from stylejax.video import is_video_file, probe_video

from .config import Settings, queue_options
from .jobbook import LocalJobBook
from .ratelimit import TokenBucket

log = logging.getLogger("stylejax.service")

def check_regions(request: StyleRequest) -> None:
    """The service's own rule on top of `StyleRequest.create`: the region "mask" needs its
    picture, sent as the job's `mask` file (a request naming "mask" carries its reference)."""
    if request.regions is not None and request.regions.uses_mask and request.mask is None:
        raise InvalidRequestError("The region 'mask' needs a mask picture: send it as the "
                                  "'mask' file with the photo (white = the region).")


# How far a mask's aspect ratio may be from its photo's (beyond half a pixel of rounding).
MASK_ASPECT_TOLERANCE = 0.03


def job_stroke(job: Job) -> float:
    """A job's stroke size (`job.request.stroke`; old jobs read as medium)."""
    return job.request.stroke


# What a stored result is, from its first bytes: (media type, file suffix, "photo" | "video" |
# "animation" | "model"); photos' results are PNG.
_RESULT_FORMATS = ((b"GIF8", 0, ("image/gif", ".gif", "animation")),
                   (b"WEBP", 8, ("image/webp", ".webp", "animation")),
                   (b"ftyp", 4, ("video/mp4", ".mp4", "video")),
                   (GLB_MAGIC, 0, ("model/gltf-binary", ".glb", "model")),
                   (ZIP_MAGIC, 0, ("application/zip", ".zip", "model")))


def result_format(data: bytes) -> tuple[str, str, str]:
    """(media type, suffix, kind) of a job's result bytes: PNG for photos, MP4 for clips, GIF
    or WebP for animated pictures (a video job keeps an animation an animation), GLB for 3D
    models sent as GLB, a zip for those sent as a zip."""
    for magic, at, fmt in _RESULT_FORMATS:
        if data[at:at + len(magic)] == magic:
            return fmt
    return ("image/png", ".png", "photo")


def _upload_size(upload: bytes | Path) -> int:
    """The bytes of an upload given as bytes or as its stored file."""
    return len(upload) if isinstance(upload, bytes) else upload.stat().st_size


def _check_model_upload(upload: bytes | Path, tmp: Path, limits: ModelLimits) -> ModelSummary:
    """`check_model` on a model upload (bytes or the stored file): a GLB as it is, a zip
    unpacked into `tmp` first (`unpack_model_zip`)."""
    if isinstance(upload, Path):
        with open(upload, "rb") as f:
            is_zip = f.read(4) == ZIP_MAGIC
        if not is_zip:
            return check_model(upload, limits)
        upload = upload.read_bytes()
    if upload[:4] == ZIP_MAGIC:
        return check_model(unpack_model_zip(upload, tmp / "model", limits), limits)
    path = tmp / "upload.glb"
    path.write_bytes(upload)
    return check_model(path, limits)


# ISO-BMFF brands of still pictures (AVIF, HEIF): an "ftyp" box, but photos, not clips.
_STILL_BRANDS = (b"avif", b"heic", b"heix", b"mif1")


# What a result PNG adds to its raw pixels at most (headers, chunks), for `result_estimate`.
_RESULT_OVERHEAD = 64 * 1024

# The reference of a custom style picture that arrives as bytes, until it is kept (its sha).
_UPLOAD = "upload"

# Models' summaries kept by content sha (`StyleService.check_model`): the submit checks a model
# and then estimates its result (and those of the owner's active jobs) from the same summary.
MODEL_SUMMARY_CACHE = 256

# Estimates (`StyleService.place`): the median of this many recent durations of the lane,
# re-read at most this often (one follower polls every 0.2 s; the line's speed moves slowly).
DURATION_SAMPLE = 20
LANE_STATS_TTL_S = 2.0
# Retry-After of a full line: the time the line needs to take a tenth of its cap, within these.
RETRY_AFTER_RANGE_S = (5, 300)
RETRY_AFTER_UNKNOWN_S = 30


@dataclass(frozen=True, slots=True)
class QueuePlace:
    """Where an active job stands: its place in its lane's line (1 = next; None once it
    runs) and the estimated seconds until it is done (None while there is nothing to base
    an estimate on)."""

    position: int | None
    eta_s: int | None


class StyleService:
    """Jobs, users and their data; shared by every front end of one deployment."""

    def __init__(self, settings: Settings, *, store: Store | None = None,
                 blobs: BlobStore | None = None, queue: JobQueue | None = None,
                 video_queue: JobQueue | None = None):
        self.settings = settings
        data = Path(settings.data_dir)
        data.mkdir(parents=True, exist_ok=True)
        self.store = store or Store(data / "meta.db")
        self.blobs = blobs or BlobStore(data / "blobs",
                                        max_bytes_per_user=settings.user_quota_bytes or None)
        self.jobs = LocalJobBook(self.store, self.blobs)  # what workers read and record
        self.queue = queue or open_queue(settings.queue_url, **queue_options(settings))
        # the video lane (docs/video.md "Service"): clips never hold up the photos' queue
        self.video_queue = (video_queue if video_queue is not None else
                            open_queue(settings.video_queue_url, **queue_options(settings)))
        # the pack's folder is decided here once; ids and names only: the front never needs
        # the weights
        self.pack_dir = Path(settings.pack) if settings.pack is not None else default_pack_dir()
        self.styles: list[StyleInfo] = read_pack_styles(self.pack_dir)
        self.limits = ImageLimits(max_bytes=settings.max_upload_bytes)
        # a few threads of their own: the bound holds for concurrent uploads, and the memory a
        # decode frees stays with those threads' allocator arenas (not one per request thread)
        self._decoder = ThreadPoolExecutor(settings.decode_concurrency,
                                           thread_name_prefix="stylejax-decode")
        self.video_limits = settings.video_limits
        self.model_limits = settings.model_limits
        self._model_summaries: dict[str, ModelSummary] = {}  # by content sha, newest last
        self._summaries_lock = threading.Lock()  # request threads share the dict
        self.rate = TokenBucket(settings.rate_per_minute / 60.0, settings.rate_burst)
        # per lane (video?): (monotonic time read, median duration, running) for `place`
        self._stats: dict[bool, tuple[float, float | None, int]] = {}

    # -- users ------------------------------------------------------------------------------------
    def user(self, platform: str, platform_user_id: str | int,
             language: str | None = None) -> User:
        return self.store.get_or_create_user(platform, platform_user_id, language)

    def style_id(self, query: str) -> str:
        """A style id, unambiguous prefix or word of an id → the id (UnknownStyleError else)."""
        return self.styles[find_style(self.styles, query)].id

    def style_info(self, style_id: str) -> StyleInfo | None:
        """The pack style with exactly this id (names, thumbnail), or None."""
        return next((s for s in self.styles if s.id == style_id), None)

    def style_name(self, style_id: str, lang: str | None = "en") -> str:
        """The display name of a pack style in the user's language (the id if unknown)."""
        info = self.style_info(style_id)
        return info.name(lang or "en") if info is not None else style_id

    def style_label(self, job: Job, lang: str | None = "en") -> str | None:
        """The pack style's display name of a job, or None for a custom-style job."""
        request = job.request
        if request.is_custom:
            return None
        if request.style is not None:
            return self.style_name(request.style, lang)
        return " + ".join(self.style_name(sid, lang) for sid, _ in request.blend)

    def default_strength(self, owner: User) -> float:
        return owner.default_strength if owner.default_strength is not None else 1.0

    def default_stroke(self, owner: User) -> float:
        """The user's stroke-size setting (a chat /settings choice); medium when unset."""
        return parse_stroke(owner.settings.get("stroke"))

    # -- jobs -------------------------------------------------------------------------------------
    def check_upload(self, data: bytes, name: str | None = None) -> str:
        """Recognise an upload by its content and check it: "photo" (`decode_image`, the photo
        limits), "video" (a clip or an animated GIF / WebP: `probe_video`, the video
        limits) or "model" (a GLB: `check_model`, the model limits); the StyleJAXError a user
        reads when it does not fit. A zip is taken as a model (a .gltf or an .obj with its
        files). `name`, the file's name if known, only words the error of a file named like a
        model that is none."""
        if data[:4] in (GLB_MAGIC, ZIP_MAGIC):
            self.check_model(data)
            return "model"
        if name is not None and Path(name).suffix.lower() in MODEL_SUFFIXES:
            raise NotAModelError("That file is not a GLB 3D model; this service takes 3D "
                                 "models as .glb files (binary glTF).")
        if data[8:12] not in _STILL_BRANDS and is_video_file(data):
            probe_video(data, self.video_limits)
            return "video"
        self.check_picture(data)
        return "photo"

    def check_picture(self, data: bytes) -> tuple[int, int]:
        """Decode a photo or style picture to check it, as the worker will (at `max_side`),
        `decode_concurrency` at a time: a burst of large uploads must not exhaust memory.
        Returns its (height, width) at that size, turned as the camera says."""
        decoded = self._decoder.submit(decode_image, data, limits=self.limits,
                                       max_side=self.settings.max_side).result()
        return decoded.rgb.shape[:2]

    def check_mask(self, mask: bytes, photo: bytes) -> None:
        """A hand-painted mask (the region "mask") must be a picture with the photo's aspect
        ratio (any size: the worker scales it to the photo): InvalidRequestError else. The
        photo was checked already: only its header is read again, for its shape."""
        try:
            mh, mw = self.check_picture(mask)
        except (NotAnImageError, CorruptImageError, UnsupportedImageError):
            raise InvalidRequestError("The mask is not a picture we can read; send a PNG, "
                                      "white where the style goes.") from None
        ph, pw = picture_shape(photo)
        off = abs((mw / mh) / (pw / ph) - 1.0)
        if off > MASK_ASPECT_TOLERANCE + 0.5 / min(mw, mh):  # + rounding to whole pixels
            raise InvalidRequestError(f"The mask ({mw}×{mh}) does not have the photo's shape "
                                      f"({pw}×{ph}); paint it over this photo.")

    def check_model(self, upload: bytes | Path) -> ModelSummary:
        """Check a GLB or a model's zip as the worker will read it (`mesh_textures.
        check_model`: references, limits, texture sizes from their headers, no decoding), in
        the decode pool; returns its textures and their pixels (for the result's estimate).
        A stored upload (a blob's file, named by its sha) or bytes already checked are not
        read again: the summaries are kept by content sha."""
        size = _upload_size(upload)
        limit = self.model_limits.max_bytes
        if size > limit:
            raise ModelTooLargeError(f"The model is {size_text(size)}; models up to "
                                     f"{size_text(limit)} are taken.", limit)
        key = hashlib.sha256(upload).hexdigest() if isinstance(upload, bytes) else upload.name
        with self._summaries_lock:
            summary = self._model_summaries.get(key)
        if summary is None:
            with tempfile.TemporaryDirectory(prefix="stylejax-model-") as tmp:
                summary = self._decoder.submit(_check_model_upload, upload, Path(tmp),
                                               self.model_limits).result()
            with self._summaries_lock:
                self._model_summaries[key] = summary
                while len(self._model_summaries) > MODEL_SUMMARY_CACHE:
                    self._model_summaries.pop(next(iter(self._model_summaries)))
        return summary

    def stage_photo(self, owner: User, photo: bytes) -> str:
        """Check and keep a photo (or a video) before its style is chosen; returns its sha for
        `submit`.

        Lets a chat front end show a style keyboard without holding the photo in memory: the
        button carries the sha, and a bot restart in between loses nothing.
        """
        self.check_upload(photo)
        return self.blobs.put(photo, owner=str(owner.id))

    def make_request(self, owner: User, *, style: str | None = None,
                     style_image: str | None = None, strength: float | None = None,
                     keep_colors: bool | None = None,
                     stroke: float | str | None = None,
                     refine: bool | None = None, regions: Any = None, keep: Any = None,
                     feather: float | str | None = None,
                     mask: str | None = None) -> StyleRequest:
        """A front end's options as a validated StyleRequest; what was left out (None) is the
        user's setting. `style_image` is the custom picture's reference (its sha, once kept).
        `refine` (custom pictures: optimise on top of the instant result) is off unless asked.
        `regions` / `keep` / `feather`: where the style goes (`RegionSpec.create`; None: the
        whole photo); `mask`: the reference of the region "mask"'s picture."""
        request = StyleRequest.create(
            refine=bool(refine),
            style=style, style_image=style_image,
            strength=self.default_strength(owner) if strength is None else strength,
            keep_colors=(bool(owner.settings.get("keep_colors", False)) if keep_colors is None
                         else keep_colors),
            stroke=self.default_stroke(owner) if stroke is None else stroke,
            regions=regions, keep=keep, feather=feather, mask=mask)
        check_regions(request)
        return request

    def submit(self, owner: User, photo: bytes | None = None, *, photo_sha: str | None = None,
               style: str | None = None, style_image: bytes | None = None,
               style_sha: str | None = None, strength: float | None = None,
               keep_colors: bool | None = None, stroke: float | str | None = None,
               refine: bool | None = None, regions: Any = None, keep: Any = None,
               feather: float | str | None = None, mask: bytes | None = None,
               filename: str | None = None) -> Job:
        """Validate, store and queue one request; raises a StyleJAXError a user can read.

        The photo comes as bytes or as the sha of a staged/earlier upload (`stage_photo`);
        likewise a custom style picture (`style_image` or `style_sha`). `stroke` is a preset
        name or a factor (stylejax.stroke); None, like the other options, means the user's
        setting. `regions` / `keep` / `feather`: a style per region (docs/regions.md);
        `mask`: the picture of the region "mask" (white = the region), stored with the job.
        The options become a StyleRequest (`make_request`), checked there once. `filename`:
        the upload's name, for the message of a non-model named .glb (`check_upload`).
        """
        self._take_token(owner)
        custom = style_image is not None or style_sha is not None
        request = self.make_request(owner, style=style,
                                    style_image=(style_sha or _UPLOAD) if custom else None,
                                    strength=strength, keep_colors=keep_colors, stroke=stroke,
                                    refine=refine, regions=regions, keep=keep, feather=feather,
                                    mask=None if mask is None else _UPLOAD)
        return self._store_and_queue(owner, request, photo, photo_sha, style_image, mask,
                                     filename=filename)

    def submit_request(self, owner: User, request: StyleRequest, photo: bytes | None = None,
                       *, photo_sha: str | None = None,
                       style_image: bytes | None = None) -> Job:
        """Store and queue a request a front end built itself (`StyleRequest.create`): a custom
        request names its picture by sha, or the picture comes as `style_image` bytes."""
        self._take_token(owner)
        check_regions(request)
        return self._store_and_queue(owner, request, photo, photo_sha, style_image)

    def _take_token(self, owner: User) -> None:
        wait = self.rate.try_acquire(f"user:{owner.id}")
        if wait:
            raise RateLimitedError(max(1, round(wait + 0.5)))

    def _store_and_queue(self, owner: User, request: StyleRequest, photo: bytes | None,
                         photo_sha: str | None, style_image: bytes | None,
                         mask: bytes | None = None, filename: str | None = None) -> Job:
        if (photo is None) == (photo_sha is None):
            raise InvalidRequestError("Send one photo.")
        # refuse bad input before anything is stored
        if photo is None:
            self._check_blob(photo_sha)
            media = request.media if request.media != "photo" else \
                self.check_upload(self.blobs.get(photo_sha))
        else:
            media = self.check_upload(photo, filename)
        if media != request.media:
            request = request.with_changes(media=media)  # video/model + custom style: refused
        self._check_line(video=request.long_lane)  # before anything is stored
        if not request.is_custom:
            request = request.resolved(self.styles)
        elif style_image is not None:
            self.check_picture(style_image)
            request = dataclasses.replace(
                request, style_image=self.blobs.put(style_image, owner=str(owner.id)))
        else:
            self._check_blob(request.style_image)
        if mask is not None:
            self.check_mask(mask, photo if photo is not None else self.blobs.get(photo_sha))
        elif request.mask is not None:  # a resubmit: the earlier job's mask
            self._check_blob(request.mask)
        self._check_room(owner, request, photo, photo_sha, style_image, mask)
        if mask is not None:
            request = dataclasses.replace(request, mask=self.blobs.put(mask, owner=str(owner.id)))
        kind = JobKind(request.kind)
        input_sha = photo_sha if photo is None else self.blobs.put(photo, owner=str(owner.id))
        job = self.store.create_job(owner.id, kind, request.to_params(), input_sha,
                                    max_active=self.settings.max_active_jobs)
        try:
            self._enqueue(job)
        except Exception as err:  # noqa: BLE001 - an unqueued job must not linger as "queued"
            log.error("queue unavailable, job %s dropped: %r", job.id, err)
            self._drop(job)
            raise ServiceBusyError() from None
        log.info("job %s queued (%s, %s) for user %d", job.id, kind.value, request.media,
                 owner.id)
        return job

    def lane(self, request: StyleRequest) -> JobQueue:
        """The queue a job goes to: the video lane for the long jobs (clips, animations, 3D
        models: their run takes seconds to minutes, so photos must not wait behind them), the
        photo queue otherwise."""
        return self.video_queue if request.long_lane else self.queue

    def _enqueue(self, job: Job) -> None:
        request = job.request
        self.lane(request).enqueue(job.id, {"kind": job.kind.value, "media": request.media})

    # -- storage quota: checked before the work, so a result is never refused after it ------------
    def result_estimate(self, request: StyleRequest, upload: bytes | Path) -> int:
        """About how many bytes the job's result will take, from its upload (bytes, or the
        stored file): a photo's result as raw RGB at the size it is stylised at (a PNG is
        rarely larger), a clip's as large as the clip, a 3D model's as the model plus its
        textures as raw RGBA (a stylised texture compresses worse than a smooth original)."""
        if request.is_model:
            size = _upload_size(upload)
            try:
                pixels = self.check_model(upload).texture_pixels
            except Exception:  # noqa: BLE001 - unreadable now (it was checked): the largest
                pixels = self.model_limits.max_textures * self.model_limits.max_texture_pixels
            return size + pixels * 4 + _RESULT_OVERHEAD
        if request.is_video:
            return _upload_size(upload)
        side = self.settings.max_side
        if request.is_custom:
            side = min(side, self.settings.custom_style_size)
        try:
            with Image.open(io.BytesIO(upload) if isinstance(upload, bytes) else upload) as im:
                w, h = im.size  # the header only: nothing is decoded
        except Exception:  # noqa: BLE001 - unreadable here: assume the largest result
            w = h = side
        scale = min(1.0, side / max(w, h, 1))
        return round(w * scale) * round(h * scale) * 3 + _RESULT_OVERHEAD

    def _check_room(self, owner: User, request: StyleRequest, photo: bytes | None,
                    photo_sha: str | None, style_image: bytes | None,
                    mask: bytes | None = None) -> None:
        """JobOverQuotaError unless the owner's storage can take this job's uploads and its
        result, next to the results of their jobs still in progress."""
        if self.blobs.max_bytes_per_user is None:
            return
        upload = photo if photo is not None else self.blobs.path(photo_sha)
        reserve = self.result_estimate(request, upload)
        for job in self.store.list_jobs(owner.id, limit=self.settings.max_active_jobs + 50):
            if not job.state.is_terminal and self.blobs.exists(job.input_sha):
                reserve += self.result_estimate(job.request, self.blobs.path(job.input_sha))
        uploads = [b for b in (photo, style_image, mask) if b is not None]
        self.blobs.check_room(str(owner.id), uploads, reserve)

    # -- the line: places, estimates, the cap (docs/service.md "Queue") -------------------------
    def worker_slots(self, *, video: bool) -> int:
        """Jobs this deployment's own workers run at once in a lane: `workers` × `max_batch`
        for photos (a worker claims a batch), one per video-taking worker for clips (all but
        one worker when there are two or more: bots.worker_pool.takes_video). Workers on other
        machines are not known here; `place` also counts the jobs seen running."""
        n = self.settings.workers
        if video:
            return n - 1 if n >= 2 else n
        return n * self.settings.max_batch

    def _lane_stats(self, video: bool) -> tuple[float | None, int]:
        """(median recent duration or None, jobs running now) of a lane, cached briefly."""
        now = time.monotonic()
        cached = self._stats.get(video)
        if cached is not None and now - cached[0] < LANE_STATS_TTL_S:
            return cached[1], cached[2]
        durations = self.store.recent_durations(video=video, limit=DURATION_SAMPLE)
        median = statistics.median(durations) if durations else None
        running = self.store.lane_counts(video=video)[1]
        self._stats[video] = (now, median, running)
        return median, running

    def estimate_s(self, position: int, *, video: bool) -> int | None:
        """Seconds until the job at `position` of a lane's line is done; None without data.

        A rough model, from the job book only: d is the median start-to-finish time of the
        lane's last DURATION_SAMPLE done jobs (a batch's jobs count from their claim, so d is
        a worker's round), and s the jobs the lane runs at once (the larger of the local
        `worker_slots` and the jobs running now, at least 1; free = s - running). A job that
        finds a free slot starts at once and takes d. The others wait for the first slot to
        open (the jobs running now end in d/2 on average; with none running, the ones just
        started end in d), then the line moves s jobs per d:
        eta = (d/2 if running else d) + ceil((position - free) / s) × d.
        Rounded up to whole seconds, at least 1.
        """
        median, running = self._lane_stats(video)
        if median is None:
            return None
        slots = max(1, running, self.worker_slots(video=video))
        free = slots - running
        if position <= free:
            eta = median
        else:
            first = median / 2 if running else median
            eta = first + math.ceil((position - free) / slots) * median
        return max(1, math.ceil(eta))

    def place(self, job: Job) -> QueuePlace | None:
        """The job's place in line and its estimate (`QueuePlace`); None once it has ended.

        Queued: its position (`Store.queue_position`, one indexed COUNT) and `estimate_s`.
        Running: the time left, from its own progress when it reports some (elapsed × (1 - p)
        / p), else the lane's median duration less the time it has run (None once past it).
        """
        video = job.request.long_lane
        if job.state is JobState.QUEUED:
            position = self.store.queue_position(job.id)
            if position is not None:
                return QueuePlace(position, self.estimate_s(position, video=video))
            job = self.store.get_job(job.id) or job  # it just started (or ended)
        if job.state is not JobState.RUNNING:
            return None
        elapsed = max(0.0, time.time() - (job.started_at or time.time()))
        if job.progress >= 0.02:
            return QueuePlace(None, max(1, math.ceil(elapsed * (1 - job.progress)
                                                     / job.progress)))
        median, _running = self._lane_stats(video)
        left = None if median is None else median - elapsed
        return QueuePlace(None, max(1, math.ceil(left)) if left is not None and left > 0
                          else None)

    def _check_line(self, *, video: bool) -> None:
        """Refuse a job (QueueFullError) when its lane's line is at its cap. One COUNT before
        the job is stored; parallel submits may pass it together, so the line can overshoot
        the cap by the number of requests in flight (bounded by the server's concurrency)."""
        cap = self.settings.max_queued_videos if video else self.settings.max_queued_jobs
        queued = self.store.queued_count(video=video)
        if queued < cap:
            return
        low, high = RETRY_AFTER_RANGE_S
        eta = self.estimate_s(max(1, cap // 10), video=video)
        retry = RETRY_AFTER_UNKNOWN_S if eta is None else min(high, max(low, eta))
        log.warning("the %s line is full (%d queued, cap %d): refusing a job",
                    "video" if video else "photo", queued, cap)
        raise QueueFullError(queued, retry)

    def _check_blob(self, sha: str | None) -> None:
        """A picture named by its sha (staged or from an earlier job) must still be stored."""
        try:
            if sha is not None and self.blobs.exists(sha):
                return
        except ValueError:  # not a sha at all
            pass
        raise InvalidRequestError("That picture is no longer available; please send it again.")

    def resubmit(self, owner: User, job_id: str, *, style: str | None = None,
                 strength: float | None = None, keep_colors: bool | None = None,
                 stroke: float | str | None = None, refine: bool | None = None,
                 regions: RegionSpec | tuple | None = None) -> Job:
        """The same photo again with some options changed (stronger, another style, refine,
        person only…).

        A new style turns a custom-style job into a pack-style one; otherwise the previous
        job's style (pack id or custom picture) is kept. Options left out are kept too.
        `regions`: a RegionSpec for "person only" and the like, `()` for the whole photo again.
        """
        prev = self.job(job_id, owner)
        request = prev.request.with_changes(style=style, strength=strength,
                                            keep_colors=keep_colors, stroke=stroke,
                                            refine=refine, regions=regions)
        return self.submit_request(owner, request, photo_sha=prev.input_sha)

    def delete_job(self, job_id: str, owner: User) -> None:
        """Remove one job, whatever its state, with its photo, style picture and result (a
        chat's "delete" button, `DELETE /api/v1/jobs/{id}`); its bytes leave the owner's quota.

        A picture another job still uses stays on disk (and charged to whoever still uses
        it). A job being stylised is stopped by its removal: its worker sees it gone, and a
        result it still delivers is thrown away (`LocalJobBook.finish`), never recorded.
        """
        job = self.job(job_id, owner)
        if not self._drop(job):  # deleted meanwhile (a second DELETE)
            raise JobNotFoundError()
        log.info("job %s deleted by user %d", job.id, owner.id)

    def _drop(self, job: Job) -> bool:
        """Delete the job's row, the files no other job needs and the owner's charges for the
        rest; False if it was already gone."""
        unused = self.store.delete_job(job.id)
        if unused is None:
            return False
        self.jobs.discard(job.owner, unused)
        return True

    def job(self, job_id: str, owner: User | None = None) -> Job:
        job = self.store.get_job(job_id)
        if job is None or (owner is not None and job.owner != owner.id):
            raise JobNotFoundError()
        return job

    def events(self, job_id: str, owner: User | None = None, **follow) -> AsyncIterator[JobEvent]:
        """The job's changes (`storage.job_events`), as only its owner may see them: the one
        stream that the SSE endpoint and the chat bots follow. Each event's `watched` is the
        job's `QueuePlace` (None once it ended); a move in the line counts as a change."""

        def read(job_id: str) -> Job | None:
            job = self.store.get_job(job_id)
            return None if job is None or (owner is not None and job.owner != owner.id) else job

        follow.setdefault("watch", self.place)
        return job_events(read, job_id, **follow)

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

    def sweep_expired(self) -> dict[str, int]:
        """Retention: finished jobs older than `retention_days` go, with their pictures, and so
        do stored pictures no job refers to (e.g. photos staged but never stylized)."""
        days = self.settings.retention_days
        jobs = 0
        while old := self.store.jobs_older_than(days, limit=500):
            for job in old:  # one at a time: each owner's charges go with their job
                self._drop(job)
            jobs += len(old)
        blobs = self.blobs.sweep(days * 86400.0, keep=self.store.referenced_blobs())
        if jobs or blobs:
            log.info("retention: removed %d job(s) and %d picture(s) older than %g days",
                     jobs, blobs, days)
        return {"jobs": jobs, "blobs": blobs}

    def reap_dead_letters(self) -> int:
        """Fail the jobs the queue gave up on (they crashed every worker), so users hear of it."""
        n = 0
        for queue in (self.queue, self.video_queue):
            for dead in queue.dead_letters():
                if self.jobs.fail(dead.job_id, GENERIC_ERROR):
                    log.error("job %s failed for good after %d deliveries", dead.job_id,
                              dead.attempts)
                    n += 1
                queue.remove_dead(dead)
        return n

    def reconcile(self, min_age_s: float = 0.0) -> int:
        """Put back on its lane every active job the queues lost; returns how many.

        The job book is the source of truth. A job it calls queued or running that neither
        queue holds (`JobQueue.job_ids`: Redis restarted without persistence, a queue file
        replaced) would otherwise wait forever and count against its owner's active-job
        limit. Only jobs unchanged for `min_age_s` are considered, so a submission between
        recording and enqueueing (or a worker that just reported progress) is left alone; each
        job is re-read before it is enqueued. Idempotent: a job a queue holds is never added
        again; a worker still holding a lost delivery finishes it and the new delivery is then
        acknowledged as done (`Store.mark_done` records one result). A running job that lost
        its last allowed delivery fails, as the dead letters would have.
        """
        cutoff = time.time() - max(0.0, min_age_s)
        stale = [job for state in (JobState.QUEUED, JobState.RUNNING)
                 for job in self.store.jobs_in_state(state, updated_before=cutoff,
                                                     limit=100_000)]
        if not stale:
            return 0
        held = self.queue.job_ids() | self.video_queue.job_ids()  # either lane: never twice
        requeued = failed = 0
        for job in stale:
            if job.id in held:
                continue
            current = self.store.get_job(job.id)
            if current is None or current.state.is_terminal:
                continue  # finished (or deleted) since the first read
            queue = self.lane(current.request)
            if current.state is JobState.RUNNING and current.attempts >= queue.max_attempts:
                failed += self.jobs.fail(current.id, GENERIC_ERROR)
                continue
            self._enqueue(current)
            requeued += 1
        if requeued or failed:
            log.warning("reconcile: %d job(s) the queue had lost were queued again, %d out of "
                        "attempts failed", requeued, failed)
        return requeued

    def close(self) -> None:
        self._decoder.shutdown(wait=False, cancel_futures=True)
        self.queue.close()
        self.video_queue.close()
        self.store.close()
