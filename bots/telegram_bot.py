"""The Telegram front end: a thin python-telegram-bot (v22) adapter over the service core.

Handlers are small async functions. They turn Telegram updates into `StyleService` calls (run in
threads: the store and blob store block) and results into messages; the rules every chat front
end shares (captions, buttons, error texts, following a job) live in `bots.chat`.

    app = build_application(service, settings)          # handlers registered, nothing started
    await run_telegram(service, settings, stop_event)   # polling, or a webhook when configured
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from telegram import (
    Bot,
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    Message,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatType
from telegram.error import BadRequest, TelegramError
from telegram.ext import (
    Application,
    BaseUpdateProcessor,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from storage import Job, JobState, User
from stylejax.errors import JobNotFoundError, StyleJAXError

from .chat import (
    RESUBMIT_VERBS,
    Action,
    Keyboard,
    apply_setting,
    button_changes,
    cancel_keyboard,
    confirm_keyboard,
    custom_working_text,
    decode_action,
    download_limit,
    encode_action,
    error_message,
    follow_job,
    history_text,
    is_model_upload,
    outcome_text,
    output_of,
    page_target,
    parse_caption,
    photo_sha,
    photo_token,
    progress_text,
    result_file,
    result_keyboard,
    settings_keyboard,
    settings_text,
    style_by_index,
    style_keyboard,
    style_thumbnail,
    upload_refusal,
)
from .config import Settings
from .core import QueuePlace, StyleService
from .i18n import SUPPORTED, language_of, t

log = logging.getLogger("stylejax.telegram")

PLATFORM = "telegram"
BOT_API_DOWNLOAD_LIMIT = 20 * 1024 * 1024   # getFile refuses bigger files
PHOTO_UPLOAD_LIMIT = 10 * 1000 * 1000       # sendPhoto's limit; bigger results go as files
VIDEO_UPLOAD_LIMIT = 50 * 1000 * 1000       # sendVideo / sendAnimation's limit
UPLOAD_LIMITS = {"photo": PHOTO_UPLOAD_LIMIT, "video": VIDEO_UPLOAD_LIMIT,
                 "animation": VIDEO_UPLOAD_LIMIT}
MEDIA_GROUP_MAX = 10
HISTORY_PICTURES = 5
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".m4v", ".gif")
COMMANDS = ("start", "help", "styles", "custom", "settings", "history", "forget", "cancel")
# bot_data / user_data keys
SERVICE, SETTINGS, STOPPING, GALLERY = "service", "settings", "stopping", "gallery"
CUSTOM = "custom"

Context = ContextTypes.DEFAULT_TYPE


# -- small helpers ---------------------------------------------------------------------------------
def _service(context: Context) -> StyleService:
    return context.bot_data[SERVICE]


async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A blocking service call, off the event loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def _user(update: Update, context: Context) -> tuple[User, str]:
    """The service user behind an update, and the language to answer in."""
    tg_user = update.effective_user
    user = await _call(_service(context).user, PLATFORM, tg_user.id, tg_user.language_code)
    lang = language_of(user.language)
    context.user_data["lang"] = lang
    return user, lang


def _lang(update: Update, context: Context) -> str:
    """The language known so far (for errors raised before the user was looked up)."""
    if context.user_data and "lang" in context.user_data:
        return context.user_data["lang"]
    return language_of(update.effective_user.language_code if update.effective_user else None)


def _markup(rows: Keyboard) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=encode_action(a))
                                  for label, a in row] for row in rows])


def _reply_to(message: Message | None) -> ReplyParameters | None:
    if message is None:
        return None
    return ReplyParameters(message.message_id, allow_sending_without_reply=True)


def _addressed(message: Message, bot_id: int, username: str) -> bool:
    """In groups act only on what is meant for us: a mention of the bot, or a reply to it."""
    if message.chat.type == ChatType.PRIVATE:
        return True
    replied = message.reply_to_message
    if replied is not None and replied.from_user is not None and replied.from_user.id == bot_id:
        return True
    text = (message.caption or message.text or "").lower()
    return f"@{username.lower()}" in text


def _friendly(handler: Callable[[Update, Context], Awaitable[None]]
              ) -> Callable[[Update, Context], Awaitable[None]]:
    """Every failure becomes a message the user can read; internal details only go to the log."""
    @functools.wraps(handler)
    async def wrapper(update: Update, context: Context) -> None:
        try:
            await handler(update, context)
        except Exception as err:  # noqa: BLE001 - the user always hears back
            if not isinstance(err, StyleJAXError):  # ours to fix, not the user's
                log.error("%s failed: %s", handler.__name__, type(err).__name__)
            await _tell(update, context, error_message(err, _lang(update, context)))
    return wrapper


async def _tell(update: Update, context: Context, text: str) -> None:
    """Answer in the chat the update came from (and settle a pressed button)."""
    with contextlib.suppress(TelegramError):
        if update.callback_query is not None:
            await update.callback_query.answer()
    chat = update.effective_chat
    if chat is not None:
        source = update.effective_message if update.callback_query is None else None
        with contextlib.suppress(TelegramError):
            await context.bot.send_message(chat.id, text, reply_parameters=_reply_to(source))


# -- commands --------------------------------------------------------------------------------------
@_friendly
async def start(update: Update, context: Context) -> None:
    """Greets in the user's language and says what to do."""
    _, lang = await _user(update, context)
    await update.effective_message.reply_text(t("welcome", lang) + "\n\n" + t("help", lang))


@_friendly
async def help_command(update: Update, context: Context) -> None:
    _, lang = await _user(update, context)
    await update.effective_message.reply_text(t("help", lang))


@_friendly
async def styles_command(update: Update, context: Context) -> None:
    """The gallery: the pack's thumbnails as albums (at most 10 pictures per album)."""
    _, lang = await _user(update, context)
    service = _service(context)
    message = update.effective_message
    await message.reply_text(t("gallery", lang) + "\n" + "\n".join(
        f"• {s.name(lang)} ({s.id})" for s in service.styles))
    # uploaded once; then Telegram's file ids are reused
    known: dict[str, str] = context.bot_data.setdefault(GALLERY, {})
    shown: list[tuple[str, InputMediaPhoto]] = []
    for info in service.styles:
        path = style_thumbnail(service, info.id)
        if info.id in known or path is not None:
            picture = known.get(info.id) or await _call(path.read_bytes)
            shown.append((info.id, InputMediaPhoto(picture, caption=info.name(lang))))
    for i in range(0, len(shown), MEDIA_GROUP_MAX):
        chunk = shown[i:i + MEDIA_GROUP_MAX]
        sent = await message.reply_media_group([media for _, media in chunk])
        for (style_id, _), msg in zip(chunk, sent):
            if msg.photo:
                known[style_id] = msg.photo[-1].file_id


@_friendly
async def custom_command(update: Update, context: Context) -> None:
    """Starts a custom style: the next two pictures are the photo, then the style picture."""
    _, lang = await _user(update, context)
    context.user_data[CUSTOM] = {"chat": update.effective_chat.id, "staged": []}
    await update.effective_message.reply_text(t("custom_send_photo", lang))


@_friendly
async def settings_command(update: Update, context: Context) -> None:
    user, lang = await _user(update, context)
    service = _service(context)
    await update.effective_message.reply_text(
        settings_text(service, user, lang),
        reply_markup=_markup(settings_keyboard(service, user, lang)),
        reply_parameters=_reply_to(update.effective_message))  # whose settings (in groups)


@_friendly
async def history_command(update: Update, context: Context) -> None:
    user, lang = await _user(update, context)
    service = _service(context)
    jobs = await _call(service.history, user, 10)
    message = update.effective_message
    await message.reply_text(history_text(service, jobs, lang))
    done = [j for j in jobs if j.state is JobState.DONE
            and j.request.media == "photo"][:HISTORY_PICTURES]  # an album of pictures
    pictures = [InputMediaPhoto(await _call(service.result, j.id),
                                caption=outcome_text(service, j, lang)) for j in done]
    if len(pictures) == 1:
        await message.reply_photo(pictures[0].media, caption=pictures[0].caption)
    elif pictures:
        await message.reply_media_group(pictures)


@_friendly
async def forget_command(update: Update, context: Context) -> None:
    """Asks first: deleting everything cannot be undone."""
    _, lang = await _user(update, context)
    await update.effective_message.reply_text(
        t("forget_confirm", lang), reply_markup=_markup(confirm_keyboard("forget", lang)),
        reply_parameters=_reply_to(update.effective_message))


@_friendly
async def cancel_command(update: Update, context: Context) -> None:
    """Stops the user's pictures in progress (and a custom style still waiting for pictures)."""
    user, lang = await _user(update, context)
    service = _service(context)
    waiting = context.user_data.pop(CUSTOM, None) is not None
    active = [j for j in await _call(service.history, user, 20) if not j.state.is_terminal]
    for job in active:
        await _call(service.cancel, job.id, user)
    done = waiting or bool(active)
    await update.effective_message.reply_text(t("cancelled" if done else "nothing_to_cancel",
                                                lang))


# -- pictures --------------------------------------------------------------------------------------
def _media_file(message: Message):
    """The picture or clip a message carries (largest photo size, a video, an animation, a
    video note, or an image / video document), else None. The service tells them apart by
    content."""
    if message.photo:
        return message.photo[-1]
    for clip in (message.animation, message.video, message.video_note):
        if clip is not None:
            return clip
    doc = message.document
    if doc is not None and ((doc.mime_type or "").startswith(("image/", "video/"))
                            or (doc.file_name or "").lower().endswith(IMAGE_SUFFIXES
                                                                      + VIDEO_SUFFIXES)
                            or _is_model(message)):
        return doc
    return None


def _is_model(message: Message) -> bool:
    """Whether the message's file is (announced as) a GLB 3D model (a document)."""
    doc = message.document
    return doc is not None and is_model_upload(doc.mime_type, doc.file_name)


def _is_clip(message: Message) -> bool:
    """Whether the message's file is (announced as) a video, for its download limit."""
    doc = message.document
    return (message.animation is not None or message.video is not None
            or message.video_note is not None
            or (doc is not None and ((doc.mime_type or "") in ("image/gif",)
                                     or (doc.mime_type or "").startswith("video/")
                                     or (doc.file_name or "").lower().endswith(VIDEO_SUFFIXES))))


def _in_custom_mode(message: Message, context: Context) -> bool:
    state = context.user_data.get(CUSTOM) if context.user_data is not None else None
    return state is not None and state["chat"] == message.chat_id


@_friendly
async def on_picture(update: Update, context: Context) -> None:
    """A photo, video, GIF or file: a caption does it in one step, otherwise a style keyboard
    is shown."""
    message = update.effective_message
    bot = context.bot
    if not (_addressed(message, bot.id, bot.username) or _in_custom_mode(message, context)):
        return
    user, lang = await _user(update, context)
    service = _service(context)
    file = _media_file(message)
    if file is None:
        await message.reply_text(t("not_a_photo_message", lang))
        return
    settings = context.bot_data[SETTINGS]
    limit = min(BOT_API_DOWNLOAD_LIMIT, download_limit(settings, model=_is_model(message),
                                                       clip=_is_clip(message)))
    refusal = upload_refusal(file.file_size or 0, limit, lang)
    if refusal is not None:
        await message.reply_text(refusal)
        return
    if _in_custom_mode(message, context):
        await _custom_picture(update, context, user, lang, await _download(bot, file.file_id))
        return
    request = parse_caption(service, message.caption, mention=bot.username)
    data = await _download(bot, file.file_id)
    if request.style is not None:
        job = await _call(service.submit, user, data, style=request.style,
                          strength=request.strength)
        _follow_soon(update, context, user, lang, job, chat_id=message.chat_id, origin=message)
        return
    sha = await _call(service.stage_photo, user, data)
    await message.reply_text(
        t("choose_style", lang), reply_parameters=_reply_to(message),
        reply_markup=_markup(style_keyboard(service, lang, "pick", photo_token(sha))))


async def _download(bot: Bot, file_id: str) -> bytes:
    return bytes(await (await bot.get_file(file_id)).download_as_bytearray())


async def _custom_picture(update: Update, context: Context, user: User, lang: str,
                          data: bytes) -> None:
    """Collects the photo and the style picture, in message order (albums arrive together)."""
    service = _service(context)
    message = update.effective_message
    sha = await _call(service.stage_photo, user, data)
    state = context.user_data.get(CUSTOM)
    if state is None:  # cancelled meanwhile
        return
    state["staged"].append((message.message_id, sha, message))
    if len(state["staged"]) < 2:
        if message.media_group_id is None:
            await message.reply_text(t("custom_send_style", lang))
        return
    context.user_data.pop(CUSTOM, None)
    (_, photo, origin), (_, style, _) = sorted(state["staged"], key=lambda s: s[0])[:2]
    job = await _call(service.submit, user, photo_sha=photo, style_sha=style)
    _follow_soon(update, context, user, lang, job, chat_id=message.chat_id, origin=origin,
                  first_text=custom_working_text(lang))


@_friendly
async def on_other_message(update: Update, context: Context) -> None:
    """Stickers, voice notes, other files, plain text: say what we can do."""
    message = update.effective_message
    if not _addressed(message, context.bot.id, context.bot.username):
        return
    _, lang = await _user(update, context)
    await message.reply_text(t("not_a_photo_message", lang))


# -- following a job to its picture ----------------------------------------------------------------
def _follow_soon(update: Update, context: Context, user: User, lang: str, job: Job,
                 **where: Any) -> None:
    """Follows the job in a task of its own: the handler returns, so the user's next update
    (a Cancel press, another photo) is handled while this one runs."""
    async def follow() -> None:
        try:
            await _follow(context, user, lang, job, **where)
        except Exception as err:  # noqa: BLE001 - the user always hears back
            if not isinstance(err, StyleJAXError):
                log.error("following job %s failed: %s", job.id, type(err).__name__)
            await _tell(update, context, error_message(err, lang))

    context.application.create_task(follow(), update=update)


async def _follow(context: Context, user: User, lang: str, job: Job, *, chat_id: int,
                  origin: Message | None, status: Message | None = None,
                  first_text: str | None = None) -> None:
    """One status message edited with progress, then the picture (and the file) as replies."""
    service = _service(context)
    bot = context.bot
    cancel = _markup(cancel_keyboard(job, lang))
    shown = first_text or progress_text(job, lang)
    if status is None:
        status = await bot.send_message(chat_id, shown, reply_parameters=_reply_to(origin),
                                        reply_markup=cancel)
    else:
        status = await _edit(status, shown, cancel) or status

    async def show(current: Job, place: QueuePlace | None) -> None:
        nonlocal shown
        text = progress_text(current, lang, place)
        if current.state is JobState.RUNNING and current.progress == 0 and first_text:
            return  # keep "learning your style…" until there is a number to show
        if text != shown:  # Telegram refuses an edit that changes nothing
            shown = text
            await _edit(status, text, cancel)

    final = await _until_stopping(context, follow_job(service, job.id, show))
    if final is None:  # the bot is shutting down; the job goes on in the worker
        return
    if final.state is not JobState.DONE:
        await _edit(status, outcome_text(service, final, lang), None)
        return
    await _send_result(context, user, lang, final, origin=origin, chat_id=status.chat_id)
    with contextlib.suppress(TelegramError):
        await status.delete()


async def _until_stopping(context: Context, work: Awaitable[Job]) -> Job | None:
    """`work`'s result, or None when the application stops first (shutdown stays prompt)."""
    task = asyncio.ensure_future(work)
    stopping: asyncio.Event = context.bot_data[STOPPING]
    waiter = asyncio.ensure_future(stopping.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        return task.result()
    task.cancel()
    return None


async def _edit(message: Message, text: str, markup: InlineKeyboardMarkup | None
                ) -> Message | None:
    """Edit a status message; an unchanged text or a message deleted meanwhile is no error."""
    try:
        edited = await message.edit_text(text, reply_markup=markup)
    except BadRequest:
        return None
    return edited if isinstance(edited, Message) else None


async def _send_result(context: Context, user: User, lang: str, job: Job, *,
                       origin: Message | None, chat_id: int) -> None:
    """The picture (a video or an animation for video jobs) with its buttons; as a file for
    the "file" setting or past the upload limit, and also as one for image file uploads."""
    data = await _call(_service(context).result, job.id)
    caption = outcome_text(_service(context), job, lang)
    markup = _markup(result_keyboard(job, lang))
    reply = _reply_to(origin)
    bot = context.bot
    file_input = (origin is not None and origin.document is not None
                  and origin.animation is None)
    kind, filename = result_file(data, as_file=output_of(user) == "file", limits=UPLOAD_LIMITS,
                                 animated=origin is not None and origin.animation is not None)
    if kind == "document":
        await bot.send_document(chat_id, data, filename=filename, caption=caption,
                                reply_markup=markup, reply_parameters=reply)
        return
    if kind == "video":
        await bot.send_video(chat_id, data, filename=filename, caption=caption,
                             reply_markup=markup, reply_parameters=reply,
                             supports_streaming=True)
    elif kind == "animation":
        await bot.send_animation(chat_id, data, filename=filename, caption=caption,
                                 reply_markup=markup, reply_parameters=reply)
    else:
        await bot.send_photo(chat_id, data, caption=caption, reply_markup=markup,
                             reply_parameters=reply)
    if file_input:
        await bot.send_document(chat_id, data, filename=filename, reply_parameters=reply)


# -- buttons ---------------------------------------------------------------------------------------
ButtonHandler = Callable[[Update, Context, Action, User, str], Awaitable[None]]


@_friendly
async def on_button(update: Update, context: Context) -> None:
    """Decodes the button, checks it belongs to the presser, and runs its action."""
    query = update.callback_query
    user, lang = await _user(update, context)
    action = decode_action(query.data)
    handler = _BUTTONS.get(action.verb) if action is not None else None
    if handler is None or query.message is None or not isinstance(query.message, Message):
        await query.answer(t("expired_button", lang), show_alert=True)
        return
    await handler(update, context, action, user, lang)


def _origin(query_message: Message) -> Message | None:
    """The user's message a bot message answers (its photo, its command)."""
    return query_message.reply_to_message


def _presser_is_author(update: Update) -> bool:
    """For buttons not tied to a job: only whoever sent the message they answer may press."""
    message = update.callback_query.message
    origin = _origin(message)
    if origin is None or origin.from_user is None:
        return message.chat.type == ChatType.PRIVATE
    return origin.from_user.id == update.callback_query.from_user.id


async def _refuse(update: Update, text: str) -> None:
    await update.callback_query.answer(text, show_alert=True)


async def _own_job(update: Update, context: Context, action: Action, user: User,
                   lang: str) -> Job | None:
    """The job a button refers to, if it exists and is the presser's (answers otherwise)."""
    try:
        job = await _call(_service(context).job, action.job)
    except JobNotFoundError:
        await _refuse(update, t("job_gone", lang))
        return None
    if job.owner != user.id:
        await _refuse(update, t("not_yours", lang))
        return None
    return job


async def pick_button(update: Update, context: Context, action: Action, user: User,
                      lang: str) -> None:
    """A style chosen for a staged photo: the keyboard message becomes the status message."""
    query = update.callback_query
    if not _presser_is_author(update):
        await _refuse(update, t("not_yours", lang))
        return
    sha, style = photo_sha(action.job), style_by_index(_service(context), action.arg)
    if sha is None or style is None:
        await _refuse(update, t("expired_button", lang))
        return
    job = await _call(_service(context).submit, user, photo_sha=sha, style=style)
    await query.answer()
    _follow_soon(update, context, user, lang, job, chat_id=query.message.chat_id,
                  origin=_origin(query.message), status=query.message)


async def page_button(update: Update, context: Context, action: Action, user: User,
                      lang: str) -> None:
    query = update.callback_query
    target = page_target(action)
    if target is None:
        await _refuse(update, t("expired_button", lang))
        return
    if target[0] == "style":
        if await _own_job(update, context, action, user, lang) is None:
            return
    elif not _presser_is_author(update):
        await _refuse(update, t("not_yours", lang))
        return
    verb, page = target
    await query.answer()
    await query.edit_message_reply_markup(
        _markup(style_keyboard(_service(context), lang, verb, action.job, page)))


async def change_button(update: Update, context: Context, action: Action, user: User,
                        lang: str) -> None:
    """Stronger, weaker, keep colours, another style (`bots.chat.button_changes` says what
    each changes): the same photo again. "Another style" without a choice shows the picker."""
    query = update.callback_query
    job = await _own_job(update, context, action, user, lang)
    if job is None:
        return
    if action.verb == "style" and not action.arg:
        await query.answer()
        origin = _origin(query.message)
        await context.bot.send_message(
            query.message.chat_id, t("choose_style", lang), reply_parameters=_reply_to(origin),
            reply_markup=_markup(style_keyboard(_service(context), lang, "style", job.id)))
        return
    changes = button_changes(_service(context), job, action.verb, action.arg)
    if changes is None:
        await _refuse(update, t("expired_button", lang))
        return
    new = await _call(_service(context).resubmit, user, job.id, **changes)
    await query.answer()
    # a style picked from the picker turns the picker message into the new status message
    status = query.message if action.verb == "style" else None
    _follow_soon(update, context, user, lang, new, chat_id=query.message.chat_id,
                  origin=_origin(query.message), status=status)


async def delete_button(update: Update, context: Context, action: Action, user: User,
                        lang: str) -> None:
    query = update.callback_query
    job = await _own_job(update, context, action, user, lang)
    if job is None:
        return
    await _call(_service(context).delete_job, job.id, user)
    await query.answer(t("deleted", lang))
    with contextlib.suppress(TelegramError):
        await query.message.delete()


async def cancel_button(update: Update, context: Context, action: Action, user: User,
                        lang: str) -> None:
    """Stops one job; its follower then edits the status message to "Cancelled."."""
    job = await _own_job(update, context, action, user, lang)
    if job is not None:
        await _call(_service(context).cancel, job.id, user)
        await update.callback_query.answer(t("cancelled", lang))


async def forget_button(update: Update, context: Context, action: Action, user: User,
                        lang: str) -> None:
    query = update.callback_query
    if not _presser_is_author(update):
        await _refuse(update, t("not_yours", lang))
        return
    await query.answer()
    if action.arg != "yes":
        await query.edit_message_text(t("forget_kept", lang))
        return
    await _call(_service(context).forget, user)
    context.user_data.clear()
    await query.edit_message_text(t("forgotten", lang))


async def set_button(update: Update, context: Context, action: Action, user: User,
                     lang: str) -> None:
    """A settings choice: store it and redraw the settings (in the new language, if changed)."""
    query = update.callback_query
    if not _presser_is_author(update):
        await _refuse(update, t("not_yours", lang))
        return
    service = _service(context)
    user = await _call(apply_setting, service, user, action)
    lang = language_of(user.language)
    context.user_data["lang"] = lang
    await query.answer(t("settings_saved", lang))
    with contextlib.suppress(BadRequest):  # "message is not modified"
        await query.edit_message_text(settings_text(service, user, lang),
                                      reply_markup=_markup(settings_keyboard(service, user, lang)))


_BUTTONS: dict[str, ButtonHandler] = {
    "pick": pick_button, "page": page_button, "del": delete_button, "cancel": cancel_button,
    "forget": forget_button, "set": set_button,
    **dict.fromkeys(RESUBMIT_VERBS, change_button),
}


async def _on_error(update: object, context: Context) -> None:
    """Errors outside our handlers (network trouble while polling): the type, never the URL."""
    log.warning("telegram error: %s", type(context.error).__name__)


# -- the application -------------------------------------------------------------------------------
class _InOrderPerUser(BaseUpdateProcessor):
    """Different users' updates run concurrently; one user's run in the order sent (so
    "/custom" is handled before the photos that follow it, an album's pictures in order)."""

    def __init__(self, max_concurrent_updates: int = 256):
        super().__init__(max_concurrent_updates)
        self._locks: dict[int, asyncio.Lock] = {}
        self._queued: dict[int, int] = {}

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        who = update.effective_user if isinstance(update, Update) else None
        if who is None:
            await coroutine
            return
        lock = self._locks.setdefault(who.id, asyncio.Lock())
        self._queued[who.id] = self._queued.get(who.id, 0) + 1
        try:
            async with lock:
                await coroutine
        finally:
            self._queued[who.id] -= 1
            if not self._queued[who.id]:
                del self._queued[who.id], self._locks[who.id]

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to free."""


class _RedactToken(logging.Filter):
    """Replaces the bot token in log records (it is part of every Bot API URL)."""

    def __init__(self, token: str):
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        # formatted now, once: PTB logs dicts it fills in with file URLs (token) afterwards
        record.msg, record.args = record.getMessage().replace(self.token, "<token>"), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and self.token in record.exc_text:
            record.exc_text = record.exc_text.replace(self.token, "<token>")
        return True


def _protect_token_in_logs(token: str) -> None:
    """httpx logs each request URL (token included) at INFO: keep it at WARNING, and redact
    the token from whatever the HTTP and Telegram loggers still emit."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    redact = _RedactToken(token)
    names = [n for n in list(logging.root.manager.loggerDict)
             if n.split(".")[0] in ("httpx", "httpcore", "telegram", "stylejax")]
    for name in {*names, "httpx", "httpcore", "telegram", "stylejax.telegram"}:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactToken) and f.token == token for f in logger.filters):
            logger.addFilter(redact)


def build_application(service: StyleService, settings: Settings) -> Application:
    """The PTB application with every handler registered; nothing is started yet."""
    if settings.telegram_bot_token is None:
        raise ValueError("TELEGRAM_BOT_TOKEN is not set")
    token = settings.telegram_bot_token.get_secret_value()
    _protect_token_in_logs(token)
    builder = Application.builder().token(token).concurrent_updates(_InOrderPerUser())
    if settings.telegram_api_url:
        api = settings.telegram_api_url.rstrip("/")
        builder = builder.base_url(f"{api}/bot").base_file_url(f"{api}/file/bot")
    # uploads of full-resolution results can take a while on slow links
    builder = builder.media_write_timeout(60).read_timeout(30)
    app = builder.build()
    _protect_token_in_logs(token)  # again: loggers made while building
    app.bot_data.update({SERVICE: service, SETTINGS: settings, STOPPING: asyncio.Event()})
    for name, callback in (("start", start), ("help", help_command),
                           ("styles", styles_command), ("custom", custom_command),
                           ("settings", settings_command), ("history", history_command),
                           ("forget", forget_command), ("cancel", cancel_command)):
        app.add_handler(CommandHandler(name, callback))
    new = filters.UpdateType.MESSAGE  # an edited caption is not a new request
    media = (filters.PHOTO | filters.Document.ALL | filters.VIDEO | filters.ANIMATION
             | filters.VIDEO_NOTE)
    app.add_handler(MessageHandler(new & media, on_picture))
    app.add_handler(MessageHandler(new & ~filters.COMMAND & ~filters.StatusUpdate.ALL,
                                   on_other_message))
    app.add_handler(CallbackQueryHandler(on_button))
    app.add_error_handler(_on_error)
    return app


async def set_commands(app: Application) -> None:
    """The command menu, in every language we speak (Telegram picks by the user's client)."""
    for lang in (None, *SUPPORTED):
        commands = [BotCommand(c, t(f"cmd_{c}", lang or "en")) for c in COMMANDS]
        await app.bot.set_my_commands(commands, language_code=lang)


def webhook_secret(token: str) -> str:
    """The secret Telegram sends with each webhook call: derived from the token, never it."""
    return hashlib.sha256(b"stylejax-webhook:" + token.encode()).hexdigest()[:48]


async def run_telegram(service: StyleService, settings: Settings, stop: asyncio.Event, *,
                       poll_timeout: int = 10) -> None:
    """Runs the bot until `stop` is set: polling, or a webhook when one is configured."""
    app = build_application(service, settings)
    async with app:  # initialize() … shutdown()
        await set_commands(app)
        await app.start()
        if settings.telegram_webhook_url:
            url = settings.telegram_webhook_url
            await app.updater.start_webhook(
                listen=settings.telegram_webhook_listen, port=settings.telegram_webhook_port,
                url_path=urlsplit(url).path.strip("/"), webhook_url=url,
                secret_token=webhook_secret(settings.telegram_bot_token.get_secret_value()),
                allowed_updates=Update.ALL_TYPES)
            log.info("telegram bot @%s receiving updates by webhook", app.bot.username)
        else:
            await app.updater.start_polling(poll_interval=0.0, timeout=poll_timeout,
                                            allowed_updates=Update.ALL_TYPES)
            log.info("telegram bot @%s polling for updates", app.bot.username)
        try:
            await stop.wait()
        finally:
            app.bot_data[STOPPING].set()
            await app.updater.stop()
            await app.stop()
