"""The HTTP API: a thin FastAPI front over `StyleService`.

Every error answers JSON `{"error": message}` (never a stack trace or an HTML page): user errors
(`StyleJAXError`) with their own message, anything else with a generic one. Blocking work (image
decoding in `submit`, SQLite reads) runs in the threadpool: those endpoints are plain `def`s.

Identity: with `settings.api_keys` set, every `/api/v1` call needs a valid `X-API-Key` header and
the user is ("api", HMAC-SHA256 of the key under a server secret, `key_digest`); otherwise the
user is ("web", client address).

Browser defences (pure ASGI middleware around the app): `_SecurityHeaders` gives every response
`nosniff` and every HTML one the page's CSP; `_OriginCheck` refuses state-changing requests from
other web sites (CSRF); `_BodyLimit` bounds the size of a body and the time it may take to arrive.

Layout: `create_app` puts the service and the API key digests on `app.state` and includes one
router per concern, each built by a small function: `pages_router` (health check, web page),
`styles_router` (public config, styles, thumbnails) and `jobs_router` (submit, state, result,
delete, events); the endpoints get the service and the user through the `Service` and
`ApiUser` dependencies. The worker endpoints are `bots.worker_api.worker_router`.

No `from __future__ import annotations` here: FastAPI must see the real annotations of the
endpoints.
"""

import asyncio
import hashlib
import hmac
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, File, Form, Header, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from storage import Job, JobState, User
from stylejax.errors import (
    GENERIC_ERROR,
    ImageTooLargeError,
    InvalidRequestError,
    JobNotFoundError,
    ModelError,
    ModelTooLargeError,
    QueueFullError,
    QuotaExceededError,
    RateLimitedError,
    ServiceBusyError,
    StyleJAXError,
    TooManyActiveJobsError,
    UnsupportedVideoError,
    VideoTooLargeError,
    VideoTooLongError,
)
from stylejax.request import parse_regions
from stylejax.style_vectors import installed as anystyle_installed

from .config import ConfigError, origin_of
from .core import QueuePlace, StyleService, result_format

log = logging.getLogger("stylejax.http")

API = "/api/v1"
SSE_POLL_S = 0.2
SSE_MAX_S = 300.0
SSE_KEEPALIVE_S = 15.0
_MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
                ".webp": "image/webp"}
WEB_DIR = Path(__file__).resolve().with_name("web")  # the web page: index.html + /static assets
# The 3D viewer (bots/web/vendor/model-viewer.min.js) reads its models and their embedded
# textures from blob: URLs (connect-src blob:) and puts one fixed <style> element in its shadow
# root: that one is allowed by its hash (tests/test_web_regions.py recomputes it from the file).
# Its meshopt decoder compiles a WebAssembly module when the bundle loads ('wasm-unsafe-eval':
# WebAssembly only, no eval() of JavaScript); refused, that is an uncaught error on the page.
MODEL_VIEWER_STYLE = "sha256-PXtZZkJMMyc18o/DN1ZEFOJ2qEGq95IQbVaJFMOXOb0="
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' blob: data:; "
                                "media-src 'self' blob:; connect-src 'self' blob:; "
                                "script-src 'self' 'wasm-unsafe-eval'; "
                                f"style-src 'self' '{MODEL_VIEWER_STYLE}'; "
                                "object-src 'none'; base-uri 'none'; form-action 'self'; "
                                "frame-ancestors 'none'"),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class ApiError(Exception):
    """An HTTP answer with a status and a user-facing message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # nosniff here too: a 500 is answered outside the middleware (Starlette's error middleware)
    return JSONResponse({"error": message}, status_code=status,
                        headers={"X-Content-Type-Options": "nosniff", **(headers or {})})


class _BodyRefused(Exception):
    """Raised from `_BodyLimit`'s receive: the body took too long or grew too large."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


BODY_TIMEOUT_ERROR = "The upload took too long to arrive; please try again."
BODY_TOO_LARGE_ERROR = "The upload is too large."


class _BodyLimit:
    """Pure ASGI middleware: bound a request body's size and the time it takes to arrive.

    A declared length far past any valid upload is refused at once (413); a body that grows past
    it anyway (chunked) or is not complete `timeout_s` after the request started is cut off
    (413 / 408, `Connection: close`), so a stalled or slow upload cannot hold a connection and
    its parser for long. Exact per-file limits are checked in the endpoint (413 too).

    The refusal replaces whatever the app answers once its `receive` failed (FastAPI turns any
    error while reading a form into a 400 of its own).
    """

    def __init__(self, app, max_body: int, timeout_s: float = 20.0):
        self.app = app
        self.max_body = max_body
        self.timeout_s = timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            await _error(413, BODY_TOO_LARGE_ERROR)(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        body_done = False
        received = 0
        refusal: _BodyRefused | None = None
        started = replaced = False

        async def guarded_receive():
            nonlocal body_done, received, refusal
            if refusal is not None:  # the body is abandoned: nothing more will come of it
                return {"type": "http.disconnect"}
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except TimeoutError:
                refusal = _BodyRefused(408, BODY_TIMEOUT_ERROR)
                raise refusal from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    refusal = _BodyRefused(413, BODY_TOO_LARGE_ERROR)
                    raise refusal
                body_done = not message.get("more_body", False)
            return message

        async def refuse() -> None:
            nonlocal started, replaced
            started = replaced = True
            log.info("refused a request body on %s %s: %s", scope.get("method"),
                     scope.get("path"), refusal.message)
            await _error(refusal.status, refusal.message, {"Connection": "close"})(
                scope, receive, send)

        async def guarded_send(message):
            nonlocal started
            if replaced:
                return
            if message["type"] == "http.response.start" and refusal is not None and not started:
                await refuse()
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except _BodyRefused:
            if not started:
                await refuse()


# State-changing methods: a page on another web site must not send these in a visitor's name.
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CROSS_SITE_ERROR = ("Requests from other web sites are refused; use this service's own page, "
                    "or ask its operator to allow your site.")


def _own_origin(scope) -> str:
    """The origin the browser addressed: scheme (X-Forwarded-Proto if trusted) + Host header."""
    host = Headers(scope=scope).get("host")
    if not host:
        server_host, server_port = scope.get("server") or ("", None)
        host = f"{server_host}:{server_port}" if server_port else server_host
    return origin_of(scope.get("scheme", "http"), host)


class _OriginCheck:
    """Pure ASGI middleware against cross-site request forgery.

    Without API keys a visitor's identity is their address, so any web page they open could
    post jobs in their name. Browsers say where a request comes from: a state-changing request
    whose `Origin` is neither this service's own nor one of `allowed_origins` (or, with no
    Origin, whose `Sec-Fetch-Site` is `cross-site`) is refused with a 403. Clients that are not
    browsers send neither header and are not affected.
    """

    def __init__(self, app, allowed_origins: list[str]):
        self.app = app
        self.allowed = frozenset(allowed_origins)

    def _refused(self, scope) -> bool:
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None:
            return headers.get("sec-fetch-site", "").lower() == "cross-site"
        if origin.strip().lower() == "null":  # sandboxed frames, file: pages, some redirects
            return True
        scheme, sep, netloc = origin.strip().partition("://")
        claimed = origin_of(scheme, netloc) if sep else origin
        return claimed != _own_origin(scope) and claimed not in self.allowed

    async def __call__(self, scope, receive, send):
        if (scope["type"] == "http" and scope.get("method", "GET").upper() in _UNSAFE_METHODS
                and self._refused(scope)):
            log.info("refused a cross-site %s %s", scope.get("method"), scope.get("path"))
            await _error(403, CROSS_SITE_ERROR)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class _SecurityHeaders:
    """Pure ASGI middleware: `nosniff` on every response and the page's CSP (which forbids
    framing) on every HTML one, whichever route or static file it came from."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                if headers.get("content-type", "").lower().startswith("text/html"):
                    for name, value in _PAGE_HEADERS.items():
                        headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _place_json(place: QueuePlace | None) -> dict:
    """`queue_position` (1 = next; null unless queued) and `eta_s` (estimated seconds until
    done; null without recent durations, or once ended): `StyleService.place`."""
    return {"queue_position": place.position if place else None,
            "eta_s": place.eta_s if place else None}


def _regions_json(job: Job) -> dict | None:
    """Where the style goes: null (everywhere) or {"entries": [{"region", "style"?,
    "strength"?}], "keep": [...], "feather": px}, as stored (`RegionSpec.to_params`)."""
    spec = job.request.regions
    return None if spec is None else spec.to_params()


def _job_json(job: Job, place: QueuePlace | None = None) -> dict:
    return {"id": job.id, "state": job.state.value, "progress": round(float(job.progress), 4),
            "error": job.error, "stroke": job.request.stroke, "refine": job.request.refine,
            "media": job.request.media, "regions": _regions_json(job), **_place_json(place)}


STROKE_FIELD = ("Brush stroke size relative to the picture: small, medium (the default), large, "
                "or a factor from 0.25 to 4 (1 = medium). The job's JSON gives it as the factor.")
REGIONS_FIELD = ("Style only some regions: comma-separated REGION[=STYLE[:STRENGTH]] as the "
                 "CLI's --region, e.g. 'person' or 'background=starry,person=wave:0.7', or a "
                 "JSON list of {region, style, strength}. Regions: everywhere, background, "
                 "sky, person, clothing, face, and mask (the `mask` file). Photos with a "
                 "gallery style only.")
KEEP_FIELD = "Regions left as in the photo, e.g. 'faces' or 'face,clothing' (or 'mask')."
MASK_FIELD = ("A hand-painted mask for the region 'mask' (name it in `regions` or `keep`): a "
              "picture, white = in the region, black = not (grey: partly; colours count by "
              "their brightness). Any size with the photo's aspect ratio (within 3 %): it is "
              "scaled to the photo. Stored with the job and deleted with it.")
FEATHER_FIELD = "Widen the region borders by about this many pixels (0 to 100, default 0)."
REFINE_FIELD = ("With a style picture: optimise on top of the instant any-style result (slower, "
                "about 30 s). Refused with a gallery style.")


def _read_upload(upload: UploadFile, limit: int, what: str) -> bytes:
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, f"The {what} is too large (limit {limit // 1000} kB).")
    return data


def upload_limit(settings) -> int:
    """The most bytes one upload may have: a photo's, a video's or a 3D model's limit,
    whichever is most."""
    return max(settings.max_upload_bytes, settings.video_max_bytes, settings.model_max_bytes)


# -- dependencies: what `create_app` put on app.state
async def the_service(request: Request) -> StyleService:
    return request.app.state.service


Service = Annotated[StyleService, Depends(the_service)]


API_KEY_SECRET_FILE = "api-key-secret"


def key_digest(key: str, secret: bytes) -> str:
    """An API key's user id: HMAC-SHA256 under the server's secret, so the ids kept in the
    database cannot be checked against guessed keys without that secret."""
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()[:32]


def _legacy_key_digest(key: str) -> str:
    """How API keys were turned into user ids before `key_digest` (unsalted sha256 prefix)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def api_key_secret(settings) -> bytes:
    """The HMAC key of `key_digest`: `settings.api_key_secret`, else a random secret generated
    once in data_dir (mode 0600) and read back on each start, so user ids stay the same."""
    if settings.api_key_secret is not None:
        return settings.api_key_secret.get_secret_value().encode()
    path = Path(settings.data_dir) / API_KEY_SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # an earlier start (or a racing process) made it
        secret = path.read_text(encoding="ascii").strip()
        if len(secret) < 32:
            raise ConfigError(f"api_key_secret: {path} is damaged (too short); delete it to "
                              "make a new one (API-key users then start afresh)") from None
        return secret.encode()
    secret = secrets.token_hex(32)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(secret + "\n")
    return secret.encode()


def _api_key_users(service: StyleService) -> tuple[bytes, set[str]]:
    """The secret and the digests of the configured keys; users recorded under a key's legacy
    digest are moved to its new one (their jobs, history and settings stay theirs)."""
    keys = [k.get_secret_value() for k in service.settings.api_keys]
    if not keys:
        return b"", set()
    secret = api_key_secret(service.settings)
    for key in keys:
        service.store.rename_platform_user("api", _legacy_key_digest(key), key_digest(key, secret))
    return secret, {key_digest(key, secret) for key in keys}


def current_user(request: Request, service: Service,
                 x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None) -> User:
    key_users: set[str] = request.app.state.api_key_digests
    if key_users:
        digest = key_digest(x_api_key or "", request.app.state.api_key_secret)
        ok = x_api_key is not None and any(hmac.compare_digest(digest, k) for k in key_users)
        if not ok:
            raise ApiError(401, "A valid X-API-Key header is required.",
                           {"WWW-Authenticate": "X-API-Key"})
        return service.user("api", digest)
    host = request.client.host if request.client else "unknown"
    return service.user("web", host)


ApiUser = Annotated[User, Depends(current_user)]


def language(request: Request) -> str:
    accept = request.headers.get("accept-language", "")
    return (accept.split(",")[0].split(";")[0].strip() or "en").lower()


# -- errors
def add_error_handlers(app: FastAPI) -> None:
    """Every error answers JSON `{"error": message}`, with the status its class calls for."""

    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, err: ApiError):
        return _error(err.status, err.message, err.headers)

    @app.exception_handler(StyleJAXError)
    async def _user_error(_req: Request, err: StyleJAXError):
        if isinstance(err, RateLimitedError):
            return _error(429, str(err), {"Retry-After": str(err.retry_after_s)})
        if isinstance(err, QueueFullError):
            return _error(503, str(err), {"Retry-After": str(err.retry_after_s)})
        if isinstance(err, ServiceBusyError):
            return _error(503, str(err), {"Retry-After": "30"})
        if isinstance(err, TooManyActiveJobsError):
            return _error(429, str(err), {"Retry-After": "10"})
        if isinstance(err, JobNotFoundError):
            return _error(404, str(err))
        if isinstance(err, ImageTooLargeError | VideoTooLargeError | VideoTooLongError
                      | QuotaExceededError | ModelTooLargeError):
            return _error(413, str(err))
        if isinstance(err, UnsupportedVideoError):
            return _error(415, str(err))
        if isinstance(err, InvalidRequestError | ModelError):
            return _error(422, str(err))
        return _error(400, str(err))

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, err: RequestValidationError):
        parts = []
        for e in err.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query"))
            parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else e.get("msg", ""))
        return _error(422, "Invalid request: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_req: Request, err: StarletteHTTPException):
        message = err.detail if isinstance(err.detail, str) else "Request failed."
        return _error(err.status_code, message, getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(req: Request, err: Exception):
        log.error("unhandled error on %s %s: %r", req.method, req.url.path, err)
        return _error(500, GENERIC_ERROR)


# -- routes
def pages_router() -> APIRouter:
    """The health check and the web page (its assets are mounted at /static by `create_app`)."""
    router = APIRouter()

    @router.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @router.api_route("/", methods=["GET", "HEAD"])
    async def web_page():
        return FileResponse(WEB_DIR / "index.html", media_type="text/html; charset=utf-8",
                            headers=_PAGE_HEADERS)

    return router


def styles_router() -> APIRouter:
    """What a client reads before it submits: the public config and the pack's styles."""
    router = APIRouter(prefix=API)

    @router.get("/config")
    async def public_config(request: Request, service: Service):
        """What the web page checks before uploading (no secrets here)."""
        settings = service.settings
        return {"max_upload_bytes": settings.max_upload_bytes,
                "max_video_bytes": settings.video_max_bytes,
                "max_video_seconds": settings.video_max_seconds,
                "max_model_bytes": settings.model_max_bytes,
                "instant_custom_style": anystyle_installed(),
                "api_key_required": bool(request.app.state.api_key_digests)}

    @router.get("/styles")
    async def styles(request: Request, service: Service):
        lang = language(request)
        return [{"id": s.id, "name": s.name(lang), "names": s.names,
                 "thumbnail_url": f"{API}/styles/{s.id}/thumbnail" if s.thumbnail else None}
                for s in service.styles]

    @router.get("/styles/{style_id}/thumbnail")
    async def thumbnail(style_id: str, service: Service):
        info = service.style_info(style_id)
        if info is None or not info.thumbnail:
            raise ApiError(404, "No such style thumbnail.")
        root = service.pack_dir.resolve()
        path = (root / info.thumbnail).resolve()
        if root not in path.parents or not path.is_file():
            raise ApiError(404, "No such style thumbnail.")
        media = _MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
        return FileResponse(path, media_type=media,
                            headers={"Cache-Control": "public, max-age=3600"})

    return router


def jobs_router() -> APIRouter:
    """Submit a job, read its state, fetch its picture, delete it, follow it (SSE)."""
    router = APIRouter(prefix=f"{API}/jobs")

    @router.post("", status_code=202)
    def submit(image: Annotated[UploadFile, File()], user: ApiUser, service: Service,
               style: Annotated[str | None, Form()] = None,
               style_image: Annotated[UploadFile | None, File()] = None,
               strength: Annotated[float | None, Form()] = None,
               keep_colors: Annotated[bool | None, Form()] = None,
               stroke: Annotated[str | None, Form(description=STROKE_FIELD,
                                                  examples=["large"])] = None,
               refine: Annotated[bool | None, Form(description=REFINE_FIELD)] = None,
               regions: Annotated[str | None, Form(description=REGIONS_FIELD,
                                                   examples=["background=starry,person=wave"
                                                             ":0.7"])] = None,
               keep: Annotated[str | None, Form(description=KEEP_FIELD,
                                                examples=["faces"])] = None,
               feather: Annotated[str | None, Form(description=FEATHER_FIELD)] = None,
               mask: Annotated[UploadFile | None, File(description=MASK_FIELD)] = None):
        settings = service.settings
        # a photo, a video or a GLB model (told apart by content in `submit`, each checked by
        # its limits)
        photo = _read_upload(image, upload_limit(settings), "file")
        style_bytes = (_read_upload(style_image, settings.max_upload_bytes, "style picture")
                       if style_image else None)
        mask_bytes = _read_upload(mask, settings.max_upload_bytes, "mask") if mask else None
        if style is not None and not style.strip():
            style = None
        if stroke is not None and not stroke.strip():
            stroke = None
        keep = keep if keep and keep.strip() else None
        feather = feather if feather and feather.strip() else None
        job = service.submit(user, photo, style=style, style_image=style_bytes,
                             strength=strength, keep_colors=keep_colors, stroke=stroke,
                             refine=refine, regions=parse_regions(regions), keep=keep,
                             feather=feather, mask=mask_bytes, filename=image.filename)
        return JSONResponse(
            {"id": job.id, "state": job.state.value, "stroke": job.request.stroke,
             "refine": job.request.refine, "media": job.request.media,
             "regions": _regions_json(job),
             **_place_json(service.place(job)),
             "status_url": f"{API}/jobs/{job.id}", "result_url": f"{API}/jobs/{job.id}/result"},
            status_code=202, headers={"Location": f"{API}/jobs/{job.id}"})

    @router.get("/{job_id}")
    def job_status(job_id: str, user: ApiUser, service: Service):
        job = service.job(job_id, user)
        return _job_json(job, service.place(job))

    @router.get("/{job_id}/result")
    def job_result(job_id: str, user: ApiUser, service: Service):
        job = service.job(job_id, user)
        if job.state is not JobState.DONE:
            raise ApiError(409, f"The picture is not ready (state: {job.state.value}).")
        data = service.result(job_id, user)
        media_type, suffix, _kind = result_format(data)  # PNG; MP4/GIF/WebP; GLB for models
        return Response(data, media_type=media_type, headers={
            "Content-Disposition": f'inline; filename="stylejax-{job.id}{suffix}"'})

    @router.delete("/{job_id}")
    def job_delete(job_id: str, user: ApiUser, service: Service):
        """Delete the job whatever its state (stopping it if it runs), its pictures and its
        result; afterwards the job is 404 and its bytes are off the caller's quota."""
        service.delete_job(job_id, user)
        return {"deleted": job_id}

    @router.get("/{job_id}/events")
    def job_events(job_id: str, request: Request, user: ApiUser, service: Service):
        service.job(job_id, user)  # 404 before the stream starts
        return StreamingResponse(_job_event_stream(service, job_id, user, request),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    return router


async def _job_event_stream(service: StyleService, job_id: str, user: User, request: Request):
    """Server-sent events: the job's state, progress and place in line on each change, until
    it ends."""
    async for event in service.events(job_id, user, poll_s=SSE_POLL_S,
                                      heartbeat_s=SSE_KEEPALIVE_S, timeout_s=SSE_MAX_S):
        job = event.job
        if job is None:
            yield f"data: {json.dumps({'state': 'gone', 'progress': 0.0})}\n\n"
        elif event.changed:
            data = {"state": job.state.value, "progress": round(float(job.progress), 4),
                    **_place_json(event.watched)}
            if job.error:
                data["error"] = job.error
            yield f"data: {json.dumps(data)}\n\n"
        else:
            yield ": keep-alive\n\n"
        if await request.is_disconnected():
            return


# -- the app
def create_app(service: StyleService) -> FastAPI:
    """The app: `service` and the API key digests on app.state, then the error handlers, the
    routers and the page's static files."""
    settings = service.settings
    # No Swagger UI (/docs): it loads from a CDN; the schema stays at /openapi.json.
    app = FastAPI(title="StyleJAX", version="1", redoc_url=None, docs_url=None,
                  description="Photo style transfer: post a photo and a style, get it back.")
    app.state.service = service
    app.state.api_key_secret, app.state.api_key_digests = _api_key_users(service)
    app.add_middleware(_BodyLimit, max_body=upload_limit(settings) + settings.max_upload_bytes
                       + 1_000_000, timeout_s=settings.request_body_timeout_s)
    app.add_middleware(_OriginCheck, allowed_origins=settings.allowed_origins)
    app.add_middleware(_SecurityHeaders)  # outermost: its headers reach every answer
    add_error_handlers(app)
    if settings.worker_key is not None:  # workers on other machines (bots/worker_api.py)
        from .worker_api import worker_router

        app.include_router(worker_router(service.jobs, settings.worker_key))
    app.include_router(pages_router())
    app.include_router(styles_router())
    app.include_router(jobs_router())
    from .regions_api import regions_router  # region previews for the page (imports this module)

    app.include_router(regions_router())
    app.mount("/static", StaticFiles(directory=WEB_DIR, check_dir=False), name="static")
    return app
