"""The Discord front end: slash commands, a message context menu and buttons over the service core.

A thin adapter. Every rule (what "stronger" means, which text an error gets, how a job is
followed) lives in `bots.chat` and `bots.core`; this module only turns Discord interactions
into service calls and service results into Discord messages. Service calls block (SQLite, the
blob store), so each one runs in a thread; the event loop never stylises or waits on disk.

The keyboards (result buttons, cancel, settings, confirmation) are the shared ones from
`bots.chat`, drawn here as Discord components; a style choice becomes one select menu.
Components are `DynamicItem`s: their custom_id carries the `chat.Action`, so they keep
working after a restart with no per-message state in memory, and every press on a job is
checked against the job's owner.

    /stylize image style strength keep_colors stroke   a pack style (autocomplete), buttons
    Apps ▸ Stylize (message context menu)              any message with a picture; pick a style
    /styles                                            the gallery, with thumbnails
    /custom content style                              your own style picture (in seconds)
    /settings [strength] [keep_colors] [stroke]        your defaults, also as buttons (ephemeral)
    /forget                                            delete your data, after a confirmation button
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
from collections.abc import Awaitable, Callable

import discord
from discord import app_commands
from discord.http import Route

from storage import Job, JobState, User
from stylejax.errors import StyleJAXError
from stylejax.stroke import STROKES

from .chat import (
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
    fit_upload,
    follow_job,
    is_model_upload,
    matching_styles,
    next_strength,
    outcome_text,
    photo_sha,
    photo_token,
    progress_text,
    result_file,
    result_keyboard,
    settings_keyboard,
    settings_text,
    style_by_index,
    style_thumbnail,
    upload_refusal,
)
from .config import ConfigError, Settings
from .core import QueuePlace, StyleService
from .i18n import language_of, t

log = logging.getLogger("stylejax.discord")

PLATFORM = "discord"
RESULT_NAME = "stylized"  # + .png, or .jpg over the upload limit (clips: stylejax.mp4 ...)
MAX_SELECT_OPTIONS = 25   # Discord's limit per select menu
MAX_EMBEDS = 10           # … and per message
DISCORD_API_BASE = Route.BASE  # discord.py's default, before any override below

Interaction = discord.Interaction["StyleJAXBot"]


def use_api_base(url: str) -> None:
    """Point discord.py's REST calls at `url` ("" = Discord's own API).

    discord.py keeps the REST base in one class attribute, `Route.BASE`, shared by every client
    in the process; this is the only place that changes it. The gateway address is not set
    here: the client asks `GET /gateway/bot` on this base for it.
    """
    Route.BASE = url.rstrip("/") if url else DISCORD_API_BASE


def _lang(interaction: discord.Interaction) -> str:
    return language_of(interaction.locale.value)


def _service(interaction: Interaction) -> StyleService:
    return interaction.client.service


async def _user(interaction: Interaction) -> User:
    service = _service(interaction)
    return await asyncio.to_thread(service.user, PLATFORM, interaction.user.id,
                                   _lang(interaction))


# -- replies ------------------------------------------------------------------------------------
async def _refuse(interaction: Interaction, text: str) -> None:
    """An ephemeral message only the user sees; replaces a pending "thinking…" reply."""
    if not interaction.response.is_done():
        await interaction.response.send_message(text, ephemeral=True)
        return
    with contextlib.suppress(discord.HTTPException):  # nothing pending: nothing to remove
        await interaction.delete_original_response()
    await interaction.followup.send(text, ephemeral=True)


def _is_model(attachment: discord.Attachment) -> bool:
    """A GLB 3D model, by its announced type or its name (Discord often says octet-stream)."""
    return is_model_upload(attachment.content_type, attachment.filename)


def _is_media(attachment: discord.Attachment) -> bool:
    """A picture, a clip, a GIF or a GLB model by its announced type or name (unknown: let
    the service decide, which goes by the content)."""
    ctype = attachment.content_type
    return ctype is None or ctype.startswith(("image/", "video/")) or _is_model(attachment)


def _attachment_refusal(attachment: discord.Attachment, lang: str,
                        settings: Settings) -> str | None:
    """Refuse what cannot be a picture, a clip or a model or is too big, from its metadata,
    before downloading (clips and GIFs by the video byte limit, models by the model one)."""
    ctype = attachment.content_type or ""
    if not _is_media(attachment):
        return t("not_an_image", lang)
    clip = ctype.startswith("video/") or ctype == "image/gif"
    return upload_refusal(attachment.size, download_limit(settings, model=_is_model(attachment),
                                                          clip=clip), lang)


def _draw(keyboard: Keyboard, service: StyleService, lang: str, *,
          strength: float | None = None) -> discord.ui.View:
    """A shared keyboard (`bots.chat`) as Discord components.

    Buttons keep their rows; a style choice ("style"/"pick" without a style index) becomes one
    select menu of every style instead of Telegram's paged buttons. With `strength` given,
    "stronger"/"weaker" are greyed out where a step would change nothing.
    """
    view = discord.ui.View(timeout=None)
    menus = []
    for row, buttons in enumerate(keyboard):
        for label, action in buttons:
            if action.verb in ("style", "pick") and not action.arg:
                menus.append(StyleSelect(action, service, lang, label))
                continue
            step = {"up": 1, "down": -1}.get(action.verb)
            view.add_item(ActionButton(
                action, label, row=row,
                style=(discord.ButtonStyle.danger if action.verb == "del" or action.arg == "yes"
                       else discord.ButtonStyle.secondary),
                disabled=(step is not None and strength is not None
                          and next_strength(strength, step) == strength)))
    for menu in menus:
        view.add_item(menu)
    return view


async def _present(interaction: Interaction, job: Job, lang: str, working: str = "") -> None:
    """Edit the (deferred) reply with the job's progress, then with its result and buttons."""
    service = _service(interaction)

    async def on_progress(current: Job, place: QueuePlace | None) -> None:
        text = progress_text(current, lang, place)
        await interaction.edit_original_response(
            content=f"{working}\n{text}" if working else text,
            view=_draw(cancel_keyboard(current, lang), service, lang))

    final = await follow_job(service, job.id, on_progress)
    if final.state is not JobState.DONE:
        await interaction.edit_original_response(content=outcome_text(service, final, lang),
                                                 view=None)
        return
    data = await asyncio.to_thread(service.result, final.id)
    kind, name = result_file(data)
    if kind == "photo":
        data, ext = await asyncio.to_thread(fit_upload, data, interaction.filesize_limit)
        name = f"{RESULT_NAME}.{ext}"
    elif len(data) > interaction.filesize_limit:  # a clip cannot be shrunk here
        await interaction.edit_original_response(content=upload_refusal(
            len(data), interaction.filesize_limit, lang), view=None)
        return
    embed = discord.Embed(description=outcome_text(service, final, lang),
                          colour=discord.Colour.blurple())
    if kind in ("photo", "animation"):  # shown in the embed; a clip plays as the attachment,
        embed.set_image(url=f"attachment://{name}")  # a model (a document) is downloaded
    await interaction.edit_original_response(
        content=None, embed=embed, attachments=[discord.File(io.BytesIO(data), name)],
        view=_draw(result_keyboard(final, lang), service, lang,
                   strength=final.request.strength))


async def _run_request(interaction: Interaction, make_job: Callable[[], Awaitable[Job]],
                       *, working: str = "") -> None:
    """Submit (errors → ephemeral reply), then show the job's progress and result publicly."""
    lang = _lang(interaction)
    try:
        job = await make_job()
    except Exception as err:  # noqa: BLE001 - every failure gets a readable reply
        if not isinstance(err, StyleJAXError):
            log.exception("request failed")
        await _refuse(interaction, error_message(err, lang))
        return
    if not interaction.response.is_done():
        await interaction.response.defer(thinking=True)
    await _present(interaction, job, lang, working)


async def _offer_styles(interaction: Interaction, attachment: discord.Attachment) -> None:
    """Keep the photo and let the user pick a style from a menu only they can see."""
    lang = _lang(interaction)
    service = _service(interaction)
    refusal = _attachment_refusal(attachment, lang, service.settings)
    if refusal:
        await _refuse(interaction, refusal)
        return
    await interaction.response.defer(ephemeral=True, thinking=True)
    try:
        photo = await attachment.read()
        owner = await _user(interaction)
        sha = await asyncio.to_thread(service.stage_photo, owner, photo)
    except Exception as err:  # noqa: BLE001
        if not isinstance(err, StyleJAXError):
            log.exception("could not stage a photo")
        await interaction.edit_original_response(content=error_message(err, lang))
        return
    picker = [[(t("choose_style", lang), Action("pick", photo_token(sha)))]]
    await interaction.edit_original_response(content=t("choose_style", lang),
                                             view=_draw(picker, service, lang))


# -- buttons and menus --------------------------------------------------------------------------
_ACTION = r"[A-Za-z0-9_\-]{0,48}:[A-Za-z0-9_\-]{0,48}"
# On ephemeral messages (only their user sees them) nothing needs checking; the rest act on a
# job, which must be the presser's.
_UNCHECKED = frozenset({"pick", "forget", "set"})


class _OwnerChecked:
    """Components that act on a job answer only the job's owner (`_UNCHECKED` verbs aside)."""

    action: Action
    job: Job | None

    async def interaction_check(self, interaction: Interaction) -> bool:
        if self.action.verb in _UNCHECKED:
            return True
        self.job = await _check_owner(interaction, self.action)
        return self.job is not None


def _action_of(custom_id: str) -> Action:
    action = decode_action(custom_id)
    if action is None:
        raise ValueError(f"not our component: {custom_id!r}")
    return action


class ActionButton(_OwnerChecked, discord.ui.DynamicItem[discord.ui.Button],
                   template=re.compile(rf"(?:up|down|keep|refine|area|del|cancel|forget|set):{_ACTION}")):
    """A button whose custom_id is an encoded `Action`; pressing it calls `StyleJAXBot.act`."""

    def __init__(self, action: Action, label: str = "", *, row: int | None = None,
                 style: discord.ButtonStyle = discord.ButtonStyle.secondary,
                 disabled: bool = False) -> None:
        super().__init__(discord.ui.Button(label=label, style=style, disabled=disabled,
                                           custom_id=encode_action(action), row=row))
        self.action = action
        self.job: Job | None = None

    @classmethod
    async def from_custom_id(cls, interaction: Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> ActionButton:
        return cls(_action_of(item.custom_id), item.label or "")

    async def callback(self, interaction: Interaction) -> None:
        await interaction.client.act(interaction, self.action, self.job, [])


class StyleSelect(_OwnerChecked, discord.ui.DynamicItem[discord.ui.Select],
                  template=re.compile(rf"(?:style|pick):{_ACTION}")):
    """A menu of every style: "another style" under a result, or the choice for a new photo."""

    def __init__(self, action: Action, service: StyleService | None = None, lang: str = "en",
                 placeholder: str | None = None, *,
                 options: list[discord.SelectOption] | None = None) -> None:
        if options is None:
            assert service is not None
            options = [discord.SelectOption(label=s.name(lang)[:100], value=str(i))
                       for i, s in enumerate(service.styles[:MAX_SELECT_OPTIONS])]
        super().__init__(discord.ui.Select(custom_id=encode_action(action), options=options,
                                           placeholder=placeholder))
        self.action = action
        self.job: Job | None = None

    @classmethod
    async def from_custom_id(cls, interaction: Interaction, item: discord.ui.Select,
                             match: re.Match[str]) -> StyleSelect:
        return cls(_action_of(item.custom_id), placeholder=item.placeholder,
                   options=item.options)

    async def callback(self, interaction: Interaction) -> None:
        await interaction.client.act(interaction, self.action, self.job, self.item.values)


async def _check_owner(interaction: Interaction, action: Action) -> Job | None:
    """The job a component acts on when it belongs to the presser; else an ephemeral refusal."""
    lang = _lang(interaction)
    service = _service(interaction)
    try:
        job = await asyncio.to_thread(service.job, action.job)
    except StyleJAXError as err:
        await _refuse(interaction, error_message(err, lang))
        return None
    owner = await _user(interaction)
    if job.owner != owner.id:
        await _refuse(interaction, t("not_yours", lang))
        return None
    return job


# -- commands -----------------------------------------------------------------------------------
def _text(key: str) -> app_commands.locale_str:
    """A command text in English, translated for other locales by `I18nTranslator`."""
    return app_commands.locale_str(t(key, "en"), key=key)


class I18nTranslator(app_commands.Translator):
    """Command descriptions in the user's Discord language, from `bots.i18n`."""

    async def translate(self, string: app_commands.locale_str, locale: discord.Locale,
                        context: app_commands.TranslationContextTypes) -> str | None:
        key = string.extras.get("key")
        lang = language_of(locale.value)
        return t(key, lang) if key and lang != "en" else None


# The stroke-size presets as a choice; a name is translated like every command text.
STROKE_CHOICES = [app_commands.Choice(name=_text(f"stroke_{name}"), value=name)
                  for name in STROKES]


async def style_autocomplete(interaction: Interaction,
                             current: str) -> list[app_commands.Choice[str]]:
    """Styles whose id or name (in the user's language) contains what was typed so far."""
    hits = matching_styles(_service(interaction), current, _lang(interaction))
    return [app_commands.Choice(name=name[:100], value=sid) for sid, name in hits]


@app_commands.command(name="stylize", description=_text("cmd_stylize"))
@app_commands.describe(image=_text("opt_image"), style=_text("opt_style"),
                       strength=_text("opt_strength"), keep_colors=_text("opt_keep_colors"),
                       stroke=_text("opt_stroke"))
@app_commands.autocomplete(style=style_autocomplete)
@app_commands.choices(stroke=STROKE_CHOICES)
async def stylize(interaction: Interaction, image: discord.Attachment, style: str | None = None,
                  strength: app_commands.Range[float, 0.0, 1.0] | None = None,
                  keep_colors: bool | None = None, stroke: str | None = None) -> None:
    """Without a style, show the style menu (the same as the context menu does)."""
    if style is None:
        await _offer_styles(interaction, image)
        return
    service = _service(interaction)
    refusal = _attachment_refusal(image, _lang(interaction), service.settings)
    if refusal:
        await _refuse(interaction, refusal)
        return
    await interaction.response.defer(thinking=True)  # a download may outlast Discord's 3 s

    async def submit() -> Job:
        photo = await image.read()
        owner = await _user(interaction)
        return await asyncio.to_thread(service.submit, owner, photo, style=style,
                                       strength=strength, keep_colors=keep_colors,
                                       stroke=stroke)

    await _run_request(interaction, submit)


@app_commands.context_menu(name=_text("menu_stylize"))
async def stylize_message(interaction: Interaction, message: discord.Message) -> None:
    """Right-click ▸ Apps ▸ Stylize on any message with a picture, a clip or a GIF."""
    image = next((a for a in message.attachments if _is_media(a)), None)
    if image is None:
        await _refuse(interaction, t("not_a_photo_message", _lang(interaction)))
        return
    await _offer_styles(interaction, image)


@app_commands.command(name="styles", description=_text("cmd_styles"))
async def styles(interaction: Interaction) -> None:
    """The gallery: one embed per style with its thumbnail (at most 10 embeds a message)."""
    service, lang = _service(interaction), _lang(interaction)
    pages: list[tuple[list[discord.Embed], list[discord.File]]] = []
    for first in range(0, len(service.styles), MAX_EMBEDS):
        embeds, files = [], []
        for info in service.styles[first:first + MAX_EMBEDS]:
            embed = discord.Embed(title=info.name(lang), description=f"`{info.id}`",
                                  colour=discord.Colour.blurple())
            path = style_thumbnail(service, info.id)
            if path is not None:
                name = f"{info.id}{path.suffix}"
                files.append(discord.File(path, filename=name))
                embed.set_thumbnail(url=f"attachment://{name}")
            embeds.append(embed)
        pages.append((embeds, files))
    for i, (embeds, files) in enumerate(pages):
        content = t("gallery", lang) if i == 0 else None
        if i == 0:
            await interaction.response.send_message(content, embeds=embeds, files=files,
                                                    ephemeral=True)
        else:
            await interaction.followup.send(embeds=embeds, files=files, ephemeral=True)


@app_commands.command(name="custom", description=_text("cmd_custom"))
@app_commands.describe(content=_text("opt_image"), style=_text("opt_style_picture"),
                       strength=_text("opt_strength"), keep_colors=_text("opt_keep_colors"),
                       stroke=_text("opt_stroke"))
@app_commands.choices(stroke=STROKE_CHOICES)
async def custom(interaction: Interaction, content: discord.Attachment,
                 style: discord.Attachment,
                 strength: app_commands.Range[float, 0.0, 1.0] | None = None,
                 keep_colors: bool | None = None, stroke: str | None = None) -> None:
    """Any style picture: optimised on the spot, so it shows progress for longer."""
    service, lang = _service(interaction), _lang(interaction)
    for attachment in (content, style):
        refusal = _attachment_refusal(attachment, lang, service.settings)
        if refusal:
            await _refuse(interaction, refusal)
            return
    await interaction.response.defer(thinking=True)

    async def submit() -> Job:
        photo, style_image = await asyncio.gather(content.read(), style.read())
        owner = await _user(interaction)
        return await asyncio.to_thread(service.submit, owner, photo, style_image=style_image,
                                       strength=strength, keep_colors=keep_colors,
                                       stroke=stroke)

    await _run_request(interaction, submit, working=custom_working_text(lang))


@app_commands.command(name="settings", description=_text("cmd_settings"))
@app_commands.describe(strength=_text("opt_default_strength"),
                       keep_colors=_text("opt_keep_colors"), stroke=_text("opt_default_stroke"))
@app_commands.choices(stroke=STROKE_CHOICES)
async def settings_command(interaction: Interaction,
                           strength: app_commands.Range[float, 0.0, 1.0] | None = None,
                           keep_colors: bool | None = None, stroke: str | None = None) -> None:
    """Show your defaults; with options, change them first."""
    service, lang = _service(interaction), _lang(interaction)
    owner = await _user(interaction)
    changes: dict = {}
    if strength is not None:
        changes["default_strength"] = strength
    if keep_colors is not None:
        changes["settings"] = {"keep_colors": keep_colors}
    if changes:
        owner = await asyncio.to_thread(service.update_settings, owner, **changes)
    if stroke is not None:  # the same rule as the settings buttons
        owner = await asyncio.to_thread(apply_setting, service, owner,
                                        Action("set", "stroke", stroke))
    text = settings_text(service, owner, lang)
    if changes or stroke is not None:
        text = f"{t('settings_saved', lang)}\n{text}"
    await interaction.response.send_message(text, ephemeral=True,
                                            view=_settings_view(service, owner, lang))


def _settings_view(service: StyleService, owner: User, lang: str) -> discord.ui.View:
    """The shared settings keyboard without what Discord decides itself: the language (the
    client's) and the output kind (always the full picture, shown in an embed)."""
    rows = [row for row in settings_keyboard(service, owner, lang)
            if row and row[0][1].job in ("strength", "stroke", "keep")]
    return _draw(rows, service, lang)


@app_commands.command(name="forget", description=_text("cmd_forget"))
async def forget(interaction: Interaction) -> None:
    """Ask first: deleting everything cannot be undone."""
    lang = _lang(interaction)
    await interaction.response.send_message(
        t("forget_confirm", lang), ephemeral=True,
        view=_draw(confirm_keyboard("forget", lang), _service(interaction), lang))


COMMANDS: tuple[app_commands.Command | app_commands.ContextMenu, ...] = (
    stylize, stylize_message, styles, custom, settings_command, forget)


# -- the client ---------------------------------------------------------------------------------
class StyleJAXBot(discord.AutoShardedClient):
    """The bot: its command tree, its service, and what each button does."""

    def __init__(self, service: StyleService, settings: Settings):
        # Commands, menus and buttons arrive as interactions: no message or member intents.
        super().__init__(intents=discord.Intents(guilds=True))
        self.service = service
        self.settings = settings
        self.tree = app_commands.CommandTree(self)
        for command in COMMANDS:
            self.tree.add_command(command)
        self.tree.on_error = self._on_command_error

    async def setup_hook(self) -> None:
        self.add_dynamic_items(ActionButton, StyleSelect)
        await self.tree.set_translator(I18nTranslator())
        guild = (discord.Object(id=self.settings.discord_guild_id)
                 if self.settings.discord_guild_id else None)
        if guild is not None:  # a test server: commands appear at once
            self.tree.copy_global_to(guild=guild)
        synced = await self.tree.sync(guild=guild)
        log.info("synced %d commands %s", len(synced),
                 f"to guild {guild.id}" if guild else "globally")

    async def on_ready(self) -> None:
        log.info("Discord: logged in as %s (%s shard(s))", self.user, self.shard_count)

    async def _on_command_error(self, interaction: Interaction,
                                error: app_commands.AppCommandError) -> None:
        log.error("command %s failed", getattr(interaction.command, "name", "?"),
                  exc_info=error)
        with contextlib.suppress(discord.HTTPException):
            await _refuse(interaction, error_message(error, _lang(interaction)))

    async def act(self, interaction: Interaction, action: Action, job: Job | None,
                  values: list[str]) -> None:
        """What a button press or menu choice does (ownership is already checked)."""
        service, lang = self.service, _lang(interaction)
        owner = await _user(interaction)
        verb = action.verb
        if verb == "forget":
            if action.arg == "yes":
                await asyncio.to_thread(service.forget, owner)
            await interaction.response.edit_message(
                content=t("forgotten" if action.arg == "yes" else "forget_kept", lang),
                view=None)
        elif verb == "set":
            try:
                owner = await asyncio.to_thread(apply_setting, service, owner, action)
            except StyleJAXError as err:
                await _refuse(interaction, error_message(err, lang))
                return
            await interaction.response.edit_message(
                content=f"{t('settings_saved', lang)}\n{settings_text(service, owner, lang)}",
                view=_settings_view(service, owner, lang))
        elif verb == "pick":
            sha, style = photo_sha(action.job), _chosen_style(service, values)
            if sha is None or style is None:
                await _refuse(interaction, t("expired_button", lang))
                return
            await _run_request(interaction, lambda: asyncio.to_thread(
                service.submit, owner, photo_sha=sha, style=style))
        elif job is None:
            raise AssertionError(f"{verb} needs a checked job")
        elif verb == "cancel":  # the job's own reply then shows "Cancelled."
            await asyncio.to_thread(service.cancel, job.id, owner)
            await interaction.response.defer()
        elif verb == "del":
            await interaction.response.defer()
            await asyncio.to_thread(service.delete_job, job.id, owner)
            await interaction.delete_original_response()  # the message the button was on
            await interaction.followup.send(t("deleted", lang), ephemeral=True)
        else:
            # a menu's choice, or the button's own argument (e.g. which region)
            changes = button_changes(service, job, verb, values[0] if values else action.arg)
            if changes is None:
                await _refuse(interaction, t("expired_button", lang))
                return
            await _run_request(interaction, lambda: asyncio.to_thread(
                service.resubmit, owner, job.id, **changes))


def _chosen_style(service: StyleService, values: list[str]) -> str | None:
    return style_by_index(service, values[0]) if values else None


def build_client(service: StyleService, settings: Settings) -> discord.Client:
    """The bot for `service`, its REST calls going to settings.discord_api_url when set."""
    use_api_base(settings.discord_api_url)
    return StyleJAXBot(service, settings)


async def run_discord(service: StyleService, settings: Settings, stop: asyncio.Event) -> None:
    """Log in, sync the commands and serve until `stop` is set; then close the connection.

    Login failures (a wrong token) raise; the token itself never reaches a log or a message.
    """
    if settings.discord_bot_token is None:
        raise ConfigError("DISCORD_BOT_TOKEN is not set")
    client = build_client(service, settings)
    async with client:
        runner = asyncio.create_task(client.start(settings.discord_bot_token.get_secret_value()),
                                     name="discord-client")
        stopper = asyncio.create_task(stop.wait(), name="discord-stop")
        try:
            await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            await client.close()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
    log.info("Discord front end stopped")
