"""What the chat front ends (Telegram, Discord) share: parsing, buttons, errors, job following.

Adapters keep only what is truly platform-specific (how a button or an upload looks); the rules
(how much "stronger" is, what a caption means, which error text a user sees, how a job is
followed to its end without blocking the event loop) live here, once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import io
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from storage import Job, JobState, User
from stylejax.errors import (
    GENERIC_ERROR,
    CorruptImageError,
    CorruptVideoError,
    ImageTooLargeError,
    ImageTooSmallError,
    InvalidRequestError,
    JobNotFoundError,
    NotAnImageError,
    NotAVideoError,
    QueueFullError,
    QuotaExceededError,
    RateLimitedError,
    ServiceBusyError,
    StyleJAXError,
    TooManyActiveJobsError,
    UnknownStyleError,
    UnsupportedImageError,
    UnsupportedVideoError,
    VideoTooLargeError,
    VideoTooLongError,
)
from stylejax.request import RegionSpec, StyleRequest, check_strength
from stylejax.stroke import STROKES, stroke_name
from stylejax.style_vectors import installed as anystyle_installed

from .config import Settings
from .core import QueuePlace, StyleService, result_format
from .i18n import SUPPORTED, job_error_text, ordinal, t

STRENGTH_STEP = 0.25
MAX_CALLBACK_BYTES = 64  # Telegram's limit on callback data; Discord allows 100 for custom_id


def next_strength(current: float, direction: int) -> float:
    """One step stronger (+1) or weaker (-1), kept inside [0.25, 1] so a step always shows."""
    value = round(current + direction * STRENGTH_STEP, 2)
    return min(1.0, max(STRENGTH_STEP, value))


# -- captions ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaptionRequest:
    style: str | None        # a pack style id, or None: ask which style
    strength: float | None   # None: the user's default


_NUMBER = re.compile(r"^(?:\d+(?:\.\d*)?|\.\d+)%?$")


def parse_caption(service: StyleService, text: str | None, *,
                  mention: str | None = None) -> CaptionRequest:
    """`"starry 0.8"`, `"0.8"`, `"@bot wave"`, `"great wave 60%"` → style id and strength.

    Raises UnknownStyleError (a readable message) for words that name no style, and
    InvalidRequestError for a strength outside 0–1.
    """
    words = (text or "").split()
    if mention:
        words = [w for w in words if w.lower() != "@" + mention.lower().lstrip("@")]
    strength = None
    if words and _NUMBER.match(words[-1]):
        raw = words.pop()
        value = float(raw.rstrip("%"))
        if raw.endswith("%") or value > 1.0:
            value /= 100.0
        try:
            strength = check_strength(value)  # StyleRequest's rule; the caption's own words
        except InvalidRequestError:
            raise InvalidRequestError("Strength must be between 0 and 1 (or 0–100%).") from None
    style = None
    if words:
        query = "-".join(words)
        style = service.style_id(query)
    return CaptionRequest(style, strength)


# -- buttons -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Action:
    """A button press: `verb` says what, `job` (a job id or a staged photo token) on what."""

    verb: str
    job: str
    arg: str = ""


# stronger, weaker, another style (arg = style index or "" for the menu), keep colours,
# refine a custom style, where the style goes (arg = a REGION_CHOICES key), delete, pick a
# style for a staged photo (job = photo token), forget-confirm, cancel, page
RESUBMIT_VERBS = ("up", "down", "keep", "style", "refine", "area")  # same photo, a change
VERBS = ("up", "down", "style", "keep", "refine", "area", "del", "pick", "forget", "cancel",
         "page", "set")

# The region buttons ("area" actions): their arg → where the style goes (None: everywhere).
# One spec each, so a job's spec tells which choice made it (`region_choice`).
REGION_CHOICES: dict[str, RegionSpec | None] = {
    "person": RegionSpec.create("person"),
    "bg": RegionSpec.create("background"),
    "faces": RegionSpec.create(keep="faces"),
    "all": None,
}
_TOKEN = re.compile(r"^[A-Za-z0-9_\-]{0,48}$")


def encode_action(action: Action) -> str:
    data = f"{action.verb}:{action.job}:{action.arg}"
    if action.verb not in VERBS or len(data.encode()) > MAX_CALLBACK_BYTES:
        raise ValueError(f"cannot encode {action!r}")
    return data


def decode_action(data: str | None) -> Action | None:
    """Parse button data; None for anything we did not make (forged, old, truncated)."""
    if not data or len(data.encode()) > MAX_CALLBACK_BYTES:
        return None
    parts = data.split(":")
    if len(parts) != 3 or parts[0] not in VERBS:
        return None
    verb, job, arg = parts
    if not _TOKEN.match(job) or not _TOKEN.match(arg):
        return None
    return Action(verb, job, arg)


def button_changes(service: StyleService, job: Job, verb: str,
                   style_arg: str = "") -> dict | None:
    """What "stronger", "weaker", "keep colours", "another style" (`style_arg`: the chosen
    style's index) or "refine" changes in a finished job, as `StyleService.resubmit` keywords.
    None for a style choice that no longer exists or a refine that no longer applies (an old
    button): the adapter says "expired"."""
    if verb == "refine":
        return {"refine": True} if can_refine(job) else None
    if verb in ("up", "down"):
        return {"strength": next_strength(job.request.strength, 1 if verb == "up" else -1)}
    if verb == "keep":
        return {"keep_colors": not job.request.keep_colors}
    if verb == "style":
        style = style_by_index(service, style_arg)
        return {"style": style} if style else None
    if verb == "area":
        if style_arg not in REGION_CHOICES or not can_choose_region(job):
            return None
        return {"regions": REGION_CHOICES[style_arg] or ()}  # (): the whole photo again
    return None


def can_choose_region(job: Job) -> bool:
    """Regions apply to photos with a gallery style (StyleRequest.create refuses the rest)."""
    return job.request.media == "photo" and not job.request.is_custom


def region_choice(request: StyleRequest) -> str | None:
    """Which region button made this request ("person", "bg", "faces", "all"), or None for a
    spec no button makes (one sent through the API)."""
    for key, spec in REGION_CHOICES.items():
        if request.regions == spec:
            return key
    return None


def region_text(request: StyleRequest, lang: str) -> str:
    """What was styled, for the caption: "" for the whole photo."""
    choice = region_choice(request)
    if choice == "all":
        return ""
    if choice is not None:
        return t(f"styled_{choice}", lang)
    spec = request.regions
    assert spec is not None
    styled = ", ".join(e.region for e in spec.entries)
    kept = ", ".join(spec.keep)
    return t("styled_regions", lang, regions=styled) + (
        " " + t("kept_regions", lang, regions=kept) if kept else "")


def custom_working_text(lang: str) -> str:
    """What a chat says while a custom style runs: a few seconds through the any-style model,
    half a minute where none is installed and the style is optimised."""
    return t("custom_working_instant" if anystyle_installed() else "custom_working", lang)


def can_refine(job: Job) -> bool:
    """A custom-style result made by the any-style model (not yet refined) can be optimised
    on top (~30 s); without the model a custom style was optimised already."""
    return job.request.is_custom and not job.request.refine and anystyle_installed()


def photo_token(sha: str) -> str:
    """A staged photo's sha256 (64 hex) → 43 url-safe characters, to fit in button data."""
    return base64.urlsafe_b64encode(bytes.fromhex(sha)).decode().rstrip("=")


def photo_sha(token: str) -> str | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None


def style_page(service: StyleService, lang: str, page: int,
               per_page: int = 8) -> tuple[list[tuple[int, str]], int]:
    """(index, name) of the styles on one page, and the number of pages."""
    styles = service.styles
    pages = max(1, -(-len(styles) // per_page))
    page = min(max(page, 0), pages - 1)
    chunk = range(page * per_page, min(len(styles), (page + 1) * per_page))
    return [(i, styles[i].name(lang)) for i in chunk], pages


def style_by_index(service: StyleService, arg: str) -> str | None:
    if not arg.isdigit() or int(arg) >= len(service.styles):
        return None
    return service.styles[int(arg)].id


def matching_styles(service: StyleService, query: str, lang: str,
                    limit: int = 25) -> list[tuple[str, str]]:
    """(id, name) of the styles whose id or display name contains `query` (autocomplete)."""
    q = query.strip().lower()
    hits = [(s.id, s.name(lang)) for s in service.styles
            if not q or q in s.id or q in s.name(lang).lower() or q in s.name("en").lower()]
    return hits[:limit]


def style_thumbnail(service: StyleService, style_id: str) -> Path | None:
    """The thumbnail file of a pack style (for galleries), or None when the pack has none."""
    info = service.style_info(style_id)
    if info is None or info.thumbnail is None:
        return None
    path = service.pack_dir / info.thumbnail
    return path if path.is_file() else None


def is_model_upload(mime_type: str | None, file_name: str | None) -> bool:
    """Whether a chat upload announces a GLB 3D model, by its type or its name (Telegram and
    Discord often announce one as octet-stream); the service then goes by the content."""
    return mime_type == "model/gltf-binary" or (file_name or "").lower().endswith(".glb")


def download_limit(settings: Settings, *, model: bool, clip: bool) -> int:
    """The byte limit an upload is held to from what it announces, before it is downloaded:
    a 3D model's, a clip's (GIFs too) or a photo's."""
    if model:
        return settings.model_max_bytes
    return settings.video_max_bytes if clip else settings.max_upload_bytes


def upload_refusal(size: int, limit: int, lang: str) -> str | None:
    """The message for an upload too big to download (from its announced size), else None."""
    if size <= limit:
        return None
    return t("file_too_big", lang, size_mb=f"{size / 1e6:.1f}", limit_mb=f"{limit / 1e6:.0f}")


def result_file(data: bytes, *, as_file: bool = False, limits: dict[str, int] | None = None,
                animated: bool = False) -> tuple[str, str]:
    """How a chat sends a job's result: ("photo" | "video" | "animation" | "document",
    file name). Photos' results are PNG; a video job's is an MP4 ("video", or "animation" for
    a clip that came as one, e.g. Telegram's GIFs, which arrive as silent MP4s) or a GIF /
    WebP ("animation"). A document when the user asked for files or the kind's upload limit
    (`limits`, by kind) is passed, and always for a 3D model (a chat cannot show one)."""
    _media_type, suffix, kind = result_format(data)
    if kind == "video" and animated:
        kind = "animation"
    if as_file or kind == "model" or len(data) > (limits or {}).get(kind, len(data)):
        kind = "document"
    return kind, f"stylejax{suffix}"


def fit_upload(png: bytes, limit: int) -> tuple[bytes, str]:
    """A result within a platform's upload limit: the PNG itself, else a JPEG (smaller if need
    be). Returns the bytes and their file extension. Blocking: call it in a thread."""
    if len(png) <= limit:
        return png, "png"
    image = Image.open(io.BytesIO(png)).convert("RGB")
    while True:
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=90)
        if buf.tell() <= limit or min(image.size) <= 64:
            return buf.getvalue(), "jpg"
        scale = max(0.5, 0.9 * (limit / buf.tell()) ** 0.5)
        image = image.resize((max(1, round(image.width * scale)),
                              max(1, round(image.height * scale))), Image.LANCZOS)


# -- errors ------------------------------------------------------------------------------------
def error_message(err: BaseException, lang: str) -> str:
    """The text a user sees for an error; internal errors never leak their details."""
    if isinstance(err, RateLimitedError):
        return t("rate_limited", lang, seconds=err.retry_after_s)
    if isinstance(err, QueueFullError):
        return t("queue_full", lang, count=err.queued, seconds=err.retry_after_s)
    if isinstance(err, ServiceBusyError):
        return t("busy", lang)
    if isinstance(err, TooManyActiveJobsError):
        return t("too_many_jobs", lang, count=getattr(err, "limit", 2))
    if isinstance(err, NotAnImageError | CorruptImageError | UnsupportedImageError):
        return t("not_an_image", lang)
    if isinstance(err, ImageTooLargeError):
        return t("too_large", lang, detail=str(err))
    if isinstance(err, ImageTooSmallError):
        return t("too_small", lang)
    if isinstance(err, NotAVideoError):
        return t("not_a_video", lang)
    if isinstance(err, CorruptVideoError):
        return t("video_corrupt", lang)
    if isinstance(err, UnsupportedVideoError):
        return t("video_unsupported", lang, detail=str(err))
    if isinstance(err, VideoTooLongError):
        return t("video_too_long", lang, detail=str(err))
    if isinstance(err, VideoTooLargeError):
        return t("video_too_large", lang, detail=str(err))
    if isinstance(err, UnknownStyleError):
        return t("unknown_style", lang, detail=str(err))
    if isinstance(err, QuotaExceededError):
        return t("quota", lang)
    if isinstance(err, JobNotFoundError):
        return t("job_gone", lang)
    if isinstance(err, StyleJAXError):
        return t("failed", lang, reason=job_error_text(str(err), lang))
    return t("failed", lang, reason=GENERIC_ERROR)


# -- following a job ---------------------------------------------------------------------------
# Called with the job and its place in line (None once it is not active any more).
ProgressCallback = Callable[[Job, QueuePlace | None], Awaitable[None]]


async def follow_job(service: StyleService, job_id: str, on_progress: ProgressCallback, *,
                     min_update_s: float = 1.5, timeout_s: float = 900.0,
                     **follow) -> Job:
    """Follow the job's event stream to its end, calling `on_progress(job, place)` on a
    visible change (`progress_text` of the two).

    Chat platforms rate-limit message edits, so updates are throttled to one per
    `min_update_s` and to changes of that text (whole tens of percent, the place in line, the
    estimate in coarse steps); the final state is returned, not reported.
    On timeout the last seen job is returned (still active); a deleted job reads as cancelled.
    """
    job = await asyncio.to_thread(service.job, job_id)
    last_key: tuple | None = None
    last_sent = 0.0
    async for event in service.events(job_id, timeout_s=timeout_s, **follow):
        if event.job is None:
            return dataclasses.replace(job, state=JobState.CANCELLED)
        job = event.job
        if event.is_last:
            break
        place = event.watched
        waiting = place if job.state is JobState.QUEUED and place is not None else None
        key = (job.state, int(job.progress * 100) // 10,
               waiting and waiting.position, waiting and _eta_step(waiting.eta_s))
        if key != last_key and time.monotonic() - last_sent >= min_update_s:
            await on_progress(job, place)
            last_key, last_sent = key, time.monotonic()
    return job


def _eta_step(seconds: int | None) -> int | None:
    """An estimate in the steps a chat shows it: 5 s under a minute, then whole minutes."""
    if seconds is None:
        return None
    return -(-seconds // 5) * 5 if seconds < 60 else -(-seconds // 60) * 60


def about(seconds: int, lang: str) -> str:
    """An estimate in words, rounded up to its step: "40 s", "3 min"."""
    step = _eta_step(seconds) or 0
    return t("seconds", lang, n=step) if step < 60 else t("minutes", lang, n=step // 60)


def progress_text(job: Job, lang: str, place: QueuePlace | None = None) -> str:
    """The status line while a job is active: its place in line and estimate when known
    ("⏳ 3rd in line, about 40 s"), else "in the queue"; once it runs, its progress."""
    if job.state is JobState.QUEUED:
        if place is None or place.position is None:
            return t("queued", lang)
        text = (t("queue_next", lang) if place.position == 1 else
                t("queue_place", lang, ordinal=ordinal(place.position, lang)))
        return text if place.eta_s is None else t("queue_about", lang, place=text,
                                                  eta=about(place.eta_s, lang))
    return t("progress", lang, percent=int(round(job.progress * 100)))


def outcome_text(service: StyleService, job: Job, lang: str) -> str:
    """The caption for a finished job, or why it did not finish."""
    if job.state is JobState.DONE:
        style = service.style_label(job, lang) or t("your_style", lang)
        done = t("done", lang, style=style, strength=int(round(job.request.strength * 100)))
        where = region_text(job.request, lang)
        return f"{done}\n{where}" if where else done
    if job.state is JobState.CANCELLED:
        return t("cancelled", lang)
    if job.state is JobState.FAILED:
        return t("failed", lang, reason=job_error_text(job.error or GENERIC_ERROR, lang))
    return t("still_working", lang)


# -- keyboards: rows of (label, Action); each platform only draws them ----------------------------
Button = tuple[str, Action]
Keyboard = list[list[Button]]
SETTING_STRENGTHS = (25, 50, 75, 100)
OUTPUTS = ("photo", "file")
_PAGE_ARG = re.compile(r"^(pick|style)(\d{1,3})$")


def result_keyboard(job: Job, lang: str) -> Keyboard:
    """Under a finished picture: stronger/weaker, another style, colours toggle, where the
    style goes (photos with a gallery style), refine (an instant custom style), delete."""
    keep = job.request.keep_colors
    refine = [(t("btn_refine", lang), Action("refine", job.id))] if can_refine(job) else []
    rows = [[(t("btn_stronger", lang), Action("up", job.id)),
             (t("btn_weaker", lang), Action("down", job.id))],
            [(t("btn_another", lang), Action("style", job.id)),
             (t("btn_style_colors" if keep else "btn_keep_colors", lang), Action("keep", job.id))]]
    regions = region_row(job, lang)
    return [*rows, *([regions] if regions else []),
            [*refine, (t("btn_delete", lang), Action("del", job.id))]]


def region_row(job: Job, lang: str) -> list[Button]:
    """"🧍 Person only", "🏞 Background only", "🙂 Keep faces", and "🖼 Everywhere" once one
    of them is chosen: every choice but the job's own. Empty for videos and custom styles."""
    if not can_choose_region(job):
        return []
    current = region_choice(job.request)
    return [(t(f"btn_region_{key}", lang), Action("area", job.id, key))
            for key in REGION_CHOICES if key != current]


def cancel_keyboard(job: Job, lang: str) -> Keyboard:
    return [[(t("btn_cancel", lang), Action("cancel", job.id))]]


def style_keyboard(service: StyleService, lang: str, verb: str, target: str, page: int = 0,
                   per_row: int = 2, per_page: int = 8) -> Keyboard:
    """The style picker: `verb` "pick" for a staged photo (target = its token) or "style" for
    a finished job (target = job id); ◀ ▶ buttons when the styles fill several pages."""
    items, pages = style_page(service, lang, page, per_page)
    page = min(max(page, 0), pages - 1)
    rows: Keyboard = [[(name, Action(verb, target, str(i))) for i, name in items[k:k + per_row]]
                      for k in range(0, len(items), per_row)]
    nav: list[Button] = []
    if page > 0:
        nav.append((t("btn_prev", lang), Action("page", target, f"{verb}{page - 1}")))
    if page < pages - 1:
        nav.append((t("btn_next", lang), Action("page", target, f"{verb}{page + 1}")))
    return rows + [nav] if nav else rows


def page_target(action: Action) -> tuple[str, int] | None:
    """A "page" button → (the picker's verb, the page to show); None if malformed."""
    m = _PAGE_ARG.match(action.arg)
    return (m.group(1), int(m.group(2))) if m else None


def output_of(user: User) -> str:
    """How a user wants results: "photo" (compressed preview) or "file" (full resolution)."""
    value = user.settings.get("output")
    return value if value in OUTPUTS else "photo"


def stroke_label(stroke: float, lang: str) -> str:
    """A stroke factor in the user's words ("large"), or the number when it is no preset."""
    name = stroke_name(stroke)
    return t(f"stroke_{name}", lang) if name in STROKES else name


def settings_text(service: StyleService, user: User, lang: str) -> str:
    keep = bool(user.settings.get("keep_colors", False))
    return t("settings", lang, strength=int(round(service.default_strength(user) * 100)),
             stroke=stroke_label(service.default_stroke(user), lang),
             keep=t("yes" if keep else "no", lang), output=t(f"output_{output_of(user)}", lang),
             language=t("language_name", lang))


def settings_keyboard(service: StyleService, user: User, lang: str) -> Keyboard:
    """One row per setting; the current choice is marked, a press sets it ("set" actions)."""
    def mark(label: str, current: bool) -> str:
        return f"✓ {label}" if current else label

    strength = int(round(service.default_strength(user) * 100))
    stroke = stroke_name(service.default_stroke(user))
    keep = bool(user.settings.get("keep_colors", False))
    return [
        [(mark(f"{s}%", s == strength), Action("set", "strength", str(s)))
         for s in SETTING_STRENGTHS],
        [(mark(t("set_stroke", lang, value=t(f"stroke_{name}", lang)), name == stroke),
          Action("set", "stroke", name)) for name in STROKES],
        [(t("set_keep", lang, value=t("yes" if keep else "no", lang)),
          Action("set", "keep", "0" if keep else "1"))],
        [(mark(t(f"output_{o}", lang), o == output_of(user)), Action("set", "output", o))
         for o in OUTPUTS],
        [(mark(t("language_name", code), code == lang), Action("set", "lang", code))
         for code in SUPPORTED],
    ]


def apply_setting(service: StyleService, user: User, action: Action) -> User:
    """Store the choice of a "set" button; InvalidRequestError for anything we did not offer."""
    key, value = action.job, action.arg
    if key == "strength" and value.isdigit() and int(value) in SETTING_STRENGTHS:
        return service.update_settings(user, default_strength=int(value) / 100)
    if key == "stroke" and value in STROKES:
        return service.update_settings(user, settings={"stroke": STROKES[value]})
    if key == "keep" and value in ("0", "1"):
        return service.update_settings(user, settings={"keep_colors": value == "1"})
    if key == "output" and value in OUTPUTS:
        return service.update_settings(user, settings={"output": value})
    if key == "lang" and value in SUPPORTED:
        return service.update_settings(user, language=value)
    raise InvalidRequestError("Unknown setting.")


def confirm_keyboard(verb: str, lang: str) -> Keyboard:
    """Yes / no for something that cannot be undone (e.g. "forget")."""
    return [[(t("btn_yes_forget", lang), Action(verb, "", "yes")),
             (t("btn_no", lang), Action(verb, "", "no"))]]


_STATE_MARK = {JobState.DONE: "✅", JobState.FAILED: "❌", JobState.CANCELLED: "✖",
               JobState.QUEUED: "⏳", JobState.RUNNING: "⏳"}


def history_text(service: StyleService, jobs: list[Job], lang: str) -> str:
    """The /history list, newest first (UTC times: chat platforms do not tell us the zone)."""
    if not jobs:
        return t("history_empty", lang)
    lines = [t("history", lang)]
    for job in jobs:
        style = service.style_label(job, lang) or t("your_style", lang)
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(job.created_at))
        lines.append(t("history_line", lang, when=when, style=style,
                       strength=int(round(job.request.strength * 100)),
                       state=_STATE_MARK[job.state]))
    return "\n".join(lines)
