"""Every error a user may see, in one module: the library's, the job book's and the service's.

Front ends catch `StyleJAXError` and translate: the CLI prints `str(err)`, the HTTP API picks a
status per class (bots/http_api.py), the chat bots a message id per class (bots/chat.py
`error_message`). Anything else is a bug and gets `GENERIC_ERROR`. Keep messages short,
concrete and free of paths or internals. Internal failures that users never read (an illegal
state change, a damaged database) are `storage.errors.StorageError`s.
"""

from __future__ import annotations


class StyleJAXError(Exception):
    """Base of every error a user may see."""


ECHO_LIMIT = 40


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """User input as quoted in a message: at most `limit` characters, then "…" (a 100 kB style
    id must not come back as a 100 kB error)."""
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


class NotAnImageError(StyleJAXError):
    """The bytes are not a picture we can read."""


class ImageTooLargeError(StyleJAXError):
    """The picture exceeds a pixel, dimension or byte limit."""


class ImageTooSmallError(StyleJAXError):
    """The picture is below the minimum side length (too few pixels to stylise)."""


class CorruptImageError(StyleJAXError):
    """The file claims to be a picture but cannot be decoded (truncated, damaged)."""


class UnsupportedImageError(StyleJAXError):
    """A real picture in a form we do not handle (e.g. an animation when one frame is needed)."""


class WeightsError(StyleJAXError):
    """A weights file or style pack is missing, damaged or does not match the network."""


class UnknownStyleError(StyleJAXError):
    """The requested style id is not in the pack."""


class InvalidRequestError(StyleJAXError, ValueError):
    """A parameter out of range (strength, blend weights, sizes): the user can fix it."""


GENERIC_ERROR = "Something went wrong on our side; please try again."


# -- the service's (raised by storage and the service core; every front end may show them) ------
class JobNotFoundError(StyleJAXError, LookupError):
    """The job id is unknown, or not the asker's (never existed, expired, deleted)."""

    def __init__(self, job_id: str | None = None) -> None:
        super().__init__("No such picture job (it may have expired or been deleted).")
        self.job_id = job_id


class TooManyActiveJobsError(StyleJAXError):
    """The user already has as many queued or running jobs as allowed."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"You already have {limit} picture(s) in progress. "
            "Please wait for one to finish and try again."
        )
        self.limit = limit


class QuotaExceededError(StyleJAXError):
    """Storing this blob would take the owner past their storage quota."""

    def __init__(self, used: int, size: int, limit: int) -> None:
        super().__init__(
            f"Your storage is full ({_mb(used)} of {_mb(limit)} used; this file needs "
            f"{_mb(size)}). Delete some history or wait for old pictures to expire."
        )
        self.used = used
        self.size = size
        self.limit = limit


class JobOverQuotaError(QuotaExceededError):
    """Checked before a job is accepted: its upload plus the estimated size of its result
    would not fit in the owner's storage quota (so no work is done for a result that could
    not be kept)."""

    def __init__(self, used: int, size: int, limit: int) -> None:
        StyleJAXError.__init__(
            self,
            f"Your storage cannot take this picture: it needs about {_mb(size)} with its "
            f"result, and {_mb(max(0, limit - used))} of {_mb(limit)} is free. Delete some "
            "pictures or wait for old ones to expire.")
        self.used = used
        self.size = size
        self.limit = limit


class RateLimitedError(StyleJAXError):
    """Too many requests: `retry_after_s` says when the next one will be accepted."""

    def __init__(self, retry_after_s: int):
        super().__init__(f"Too many requests; try again in {retry_after_s} s.")
        self.retry_after_s = retry_after_s


class ServiceBusyError(StyleJAXError):
    """The queue cannot take jobs right now (e.g. Redis unreachable); nothing was kept."""

    def __init__(self) -> None:
        super().__init__("The service is busy right now; please try again in a minute.")


class QueueFullError(StyleJAXError):
    """The line of waiting jobs is at its cap (`max_queued_jobs`); nothing was kept.
    `retry_after_s` is the estimated time for the line to make room."""

    def __init__(self, queued: int, retry_after_s: int) -> None:
        super().__init__(f"The service is very busy: {queued} pictures are already waiting. "
                         f"Please try again in {retry_after_s} s.")
        self.queued = queued
        self.retry_after_s = retry_after_s


def _mb(n: int) -> str:
    """Bytes as a short human figure for messages."""
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.0f} kB"


# -- videos and animated pictures (stylejax.video) ----------------------------------------------
class VideoError(StyleJAXError):
    """Base of the video errors: a clip or animated picture we cannot take."""


class NotAVideoError(VideoError):
    """The bytes are not a video or animated picture we can read."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or "That file is not a video or animated picture we can read.")


class CorruptVideoError(VideoError):
    """A video file that cannot be decoded (truncated, damaged, no picture frames)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or "That video seems damaged or incomplete; "
                                    "we could not read its frames.")


class UnsupportedVideoError(VideoError):
    """A real media file in a form we do not handle (sound only, an unknown codec)."""


class VideoTooLongError(VideoError):
    """The clip exceeds the duration or frame-count limit (the limit is in the message)."""

    def __init__(self, message: str, limit: float) -> None:
        super().__init__(message)
        self.limit = limit


class VideoTooLargeError(VideoError):
    """The clip exceeds the per-frame pixel limit or the file size limit."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class JobCancelledError(StyleJAXError):
    """The work was stopped before the end because `should_stop()` said so."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or "Stopped before the end, as asked.")


class RegionNotFoundError(InvalidRequestError):
    """A region the request styles (person, face, sky ...) is not in this photo."""


# -- 3D models (stylejax.mesh_textures) ---------------------------------------------------------
class ModelError(StyleJAXError):
    """Base of the 3D model errors: a glTF / GLB / OBJ file we cannot take."""


class NotAModelError(ModelError):
    """The file is not a glTF, GLB or OBJ model we can read."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or "That file is not a 3D model we can read. "
                                    "Send a .glb, .gltf or .obj (with its .mtl and textures).")


class NoTexturesError(ModelError):
    """The model reads fine but no material uses a base-colour texture."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or "This model has no textures to stylise.")


class BrokenModelError(ModelError):
    """The model refers to textures or data it does not contain (missing files, bad indices,
    undecodable images)."""


class ModelTooLargeError(ModelError):
    """The model or one of its textures exceeds a size limit (the limit is in the message)."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit
