"""A fake Telegram Bot API server on 127.0.0.1, for running the real PTB `Application` in tests.

It implements the methods the StyleJAX bot calls, keeps the chat as Telegram would (message ids
per chat, replies, edits, deletions), records every call with its uploaded files, and lets a test
play users: send photos, files, stickers, voice notes and commands, press buttons, and wait
(with a bounded timeout) for what the bot answers.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image

BOT_ID = 4242
BOT_USERNAME = "stylejax_test_bot"


@dataclass
class Call:
    """One Bot API request the bot made: its parameters, uploads and what the fake answered."""

    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    result: Any = None

    @property
    def chat_id(self) -> int | None:
        raw = self.params.get("chat_id")
        return int(raw) if raw is not None else None

    @property
    def text(self) -> str:
        return str(self.params.get("text") or self.params.get("caption") or "")

    def buttons(self) -> list[tuple[str, str]]:
        """(label, callback_data) of every inline button, row by row."""
        markup = self.params.get("reply_markup") or {}
        return [(b["text"], b.get("callback_data", "")) for row in
                markup.get("inline_keyboard", []) for b in row]

    def button(self, label_part: str) -> str:
        """The callback data of the button whose label contains `label_part`."""
        for label, data in self.buttons():
            if label_part in label:
                return data
        raise AssertionError(f"no button {label_part!r} in {self.buttons()}")

    def upload_media(self, index: int) -> bytes:
        """The bytes of the `index`-th picture of a sendMediaGroup album."""
        return self.files[self.params["media"][index]["media"].removeprefix("attach://")]

    def upload(self, field_name: str) -> bytes:
        """The bytes uploaded for a photo/document, whether sent directly or via attach://."""
        value = self.params.get(field_name)
        if isinstance(value, str) and value.startswith("attach://"):
            return self.files[value.removeprefix("attach://")]
        return self.files[field_name]


def _parse_value(value: str) -> Any:
    """Form fields are strings: numbers (ids) and JSON objects (markup, media) are decoded."""
    if value.lstrip("-").isdigit():
        return int(value)
    if value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class FakeTelegram:
    """The server plus the users' side of the conversation."""

    def __init__(self, token: str):
        self.token = token
        self.calls: list[Call] = []
        self.files: dict[str, bytes] = {}       # file_id → content
        self.file_sizes: dict[str, int] = {}    # file_id → the size Telegram reports
        self.messages: dict[tuple[int, int], dict] = {}
        self.deleted: set[tuple[int, int]] = set()
        self.downloads: list[str] = []          # file paths the bot downloaded
        self._updates: list[dict] = []
        self._update_ids = itertools.count(1)
        self._msg_ids: dict[int, itertools.count] = {}
        self._file_ids = itertools.count(1)
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.log: list[tuple[str, Any]] = []    # ("update", update) / ("call", Call), in order
        self.unauthorised = 0                   # requests with a wrong token
        self.polls = 0                          # getUpdates requests answered

    # -- server lifecycle -------------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.*}", self._download)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- the Bot API --------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            self.unauthorised += 1
            return web.json_response({"ok": False, "error_code": 401,
                                      "description": "Unauthorized"}, status=401)
        method = request.match_info["method"]
        params: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        if request.content_type == "application/json":
            params = await request.json() if request.can_read_body else {}
        elif request.can_read_body:
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    files[key] = value.file.read()
                else:
                    params[key] = _parse_value(str(value))
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return web.json_response({"ok": False, "error_code": 404,
                                      "description": f"Not Found: method {method}"}, status=404)
        if method == "getUpdates":
            return web.json_response({"ok": True, "result": await self._m_getUpdates(params)})
        call = Call(method, params, files)
        try:
            call.result = handler(call)
        except LookupError as err:
            return web.json_response({"ok": False, "error_code": 400,
                                      "description": f"Bad Request: {err}"}, status=400)
        self.calls.append(call)
        self.log.append(("call", call))
        self._changed.set()
        return web.json_response({"ok": True, "result": call.result})

    async def _download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        path = request.match_info["path"]
        file_id = path.rsplit("/", 1)[-1]
        if file_id not in self.files:
            return web.Response(status=404)
        self.downloads.append(path)
        return web.Response(body=self.files[file_id])

    async def _m_getUpdates(self, params: dict) -> list[dict]:
        self.polls += 1
        offset = int(params.get("offset") or 0)
        self._updates = [u for u in self._updates if u["update_id"] >= offset]
        deadline = time.monotonic() + min(float(params.get("timeout") or 0), 2.0)
        while not self._updates and time.monotonic() < deadline:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        return list(self._updates)

    def _m_getMe(self, call: Call) -> dict:
        return {"id": BOT_ID, "is_bot": True, "first_name": "StyleJAX", "username": BOT_USERNAME,
                "can_join_groups": True, "can_read_all_group_messages": False,
                "supports_inline_queries": False}

    def _ok(self, call: Call) -> bool:
        return True

    _m_deleteWebhook = _m_setWebhook = _m_setMyCommands = _m_answerCallbackQuery = _ok
    _m_sendChatAction = _ok

    def _m_deleteMessage(self, call: Call) -> bool:
        key = (int(call.params["chat_id"]), int(call.params["message_id"]))
        if key not in self.messages or key in self.deleted:
            raise LookupError("message to delete not found")
        self.deleted.add(key)
        return True

    def _m_getFile(self, call: Call) -> dict:
        file_id = call.params["file_id"]
        if file_id not in self.files:
            raise LookupError("wrong file_id")
        if self.file_sizes[file_id] > 20 * 1024 * 1024:
            raise LookupError("file is too big")
        return {"file_id": file_id, "file_unique_id": f"u{file_id}",
                "file_size": self.file_sizes[file_id], "file_path": f"photos/{file_id}"}

    # messages the bot sends
    def _bot_message(self, call: Call, **content: Any) -> dict:
        chat_id = int(call.params["chat_id"])
        msg = self._new_message(chat_id, self.bot_user, **content)
        reply = call.params.get("reply_parameters") or {}
        reply_id = reply.get("message_id") or call.params.get("reply_to_message_id")
        if reply_id:
            msg["reply_to_message"] = self.messages[(chat_id, int(reply_id))]
        if call.params.get("reply_markup"):
            msg["reply_markup"] = call.params["reply_markup"]
        return self._store(msg)

    def _m_sendMessage(self, call: Call) -> dict:
        return self._bot_message(call, text=call.params["text"])

    def _register_file(self, data: bytes, size: int | None = None) -> str:
        file_id = f"F{next(self._file_ids)}"
        self.files[file_id] = data
        self.file_sizes[file_id] = len(data) if size is None else size
        return file_id

    def _photo_sizes(self, data: bytes, size: int | None = None) -> list[dict]:
        w, h = Image.open(io.BytesIO(data)).size
        file_id = self._register_file(data, size)
        return [{"file_id": file_id, "file_unique_id": f"u{file_id}", "width": w, "height": h,
                 "file_size": self.file_sizes[file_id]}]

    def _m_sendPhoto(self, call: Call) -> dict:
        extra = {"caption": call.params["caption"]} if "caption" in call.params else {}
        return self._bot_message(call, photo=self._photo_sizes(call.upload("photo")), **extra)

    def _m_sendDocument(self, call: Call) -> dict:
        data = call.upload("document")
        file_id = self._register_file(data)
        extra = {"caption": call.params["caption"]} if "caption" in call.params else {}
        return self._bot_message(call, document={
            "file_id": file_id, "file_unique_id": f"u{file_id}", "file_name": "result.png",
            "mime_type": "image/png", "file_size": len(data)}, **extra)

    def _clip(self, data: bytes, *, file_name: str, mime_type: str, size: int | None = None,
              duration: int = 1) -> dict:
        """A Video / Animation / VideoNote object for a registered clip (64×48 is enough)."""
        file_id = self._register_file(data, size)
        return {"file_id": file_id, "file_unique_id": f"u{file_id}", "width": 64, "height": 48,
                "length": 64, "duration": duration, "file_name": file_name,
                "mime_type": mime_type, "file_size": self.file_sizes[file_id]}

    def _m_sendVideo(self, call: Call) -> dict:
        extra = {"caption": call.params["caption"]} if "caption" in call.params else {}
        return self._bot_message(call, video=self._clip(call.upload("video"),
                                                        file_name="result.mp4",
                                                        mime_type="video/mp4"), **extra)

    def _m_sendAnimation(self, call: Call) -> dict:
        extra = {"caption": call.params["caption"]} if "caption" in call.params else {}
        clip = self._clip(call.upload("animation"), file_name="result.gif",
                          mime_type="image/gif")
        return self._bot_message(call, animation=clip, document=clip, **extra)

    def _m_sendMediaGroup(self, call: Call) -> list[dict]:
        out = []
        for item in call.params["media"]:
            ref = item["media"]
            if ref.startswith("attach://"):
                sizes = self._photo_sizes(call.files[ref.removeprefix("attach://")])
            elif ref in self.files:  # a file id from an earlier upload
                sizes = [{"file_id": ref, "file_unique_id": f"u{ref}", "width": 64,
                          "height": 64, "file_size": self.file_sizes[ref]}]
            else:
                raise LookupError("wrong file identifier")
            single = Call("sendPhoto", {"chat_id": call.params["chat_id"],
                                        "caption": item.get("caption", "")})
            out.append(self._bot_message(single, photo=sizes, caption=item.get("caption", ""),
                                         media_group_id="G1"))
        return out

    def _edit(self, call: Call, **changes: Any) -> dict:
        key = (int(call.params["chat_id"]), int(call.params["message_id"]))
        if key not in self.messages or key in self.deleted:
            raise LookupError("message to edit not found")
        msg = self.messages[key]
        msg.update(changes, edit_date=int(time.time()))
        if call.params.get("reply_markup"):
            msg["reply_markup"] = call.params["reply_markup"]
        else:
            msg.pop("reply_markup", None)
        return msg

    def _m_editMessageText(self, call: Call) -> dict:
        return self._edit(call, text=call.params["text"])

    def _m_editMessageReplyMarkup(self, call: Call) -> dict:
        return self._edit(call)

    # -- the users' side ------------------------------------------------------------------------
    @property
    def bot_user(self) -> dict:
        return {"id": BOT_ID, "is_bot": True, "first_name": "StyleJAX", "username": BOT_USERNAME}

    def _new_message(self, chat_id: int, sender: dict, **content: Any) -> dict:
        ids = self._msg_ids.setdefault(chat_id, itertools.count(1))
        chat = ({"id": chat_id, "type": "private", "first_name": sender["first_name"]}
                if chat_id > 0 else {"id": chat_id, "type": "group", "title": "Art club"})
        return {"message_id": next(ids), "date": int(time.time()), "chat": chat,
                "from": sender, **content}

    def _store(self, msg: dict) -> dict:
        self.messages[(msg["chat"]["id"], msg["message_id"])] = msg
        return msg

    def _push(self, kind: str, payload: dict) -> None:
        update = {"update_id": next(self._update_ids), kind: payload}
        self.log.append(("update", update))
        self._updates.append(update)
        self._changed.set()

    def user_message(self, user: dict, chat_id: int | None = None, *,
                     reply_to: dict | None = None, **content: Any) -> dict:
        """A user sends a message (text, photo, document, sticker, voice…); returns it."""
        msg = self._new_message(user["id"] if chat_id is None else chat_id, user, **content)
        if reply_to is not None:
            msg["reply_to_message"] = reply_to
        self._store(msg)
        self._push("message", msg)
        return msg

    def command(self, user: dict, text: str, chat_id: int | None = None) -> dict:
        word = text.split()[0]
        return self.user_message(user, chat_id, text=text, entities=[
            {"type": "bot_command", "offset": 0, "length": len(word)}])

    def photo(self, user: dict, data: bytes, chat_id: int | None = None, *,
              caption: str | None = None, size: int | None = None, **extra: Any) -> dict:
        content: dict[str, Any] = {"photo": self._photo_sizes(data, size), **extra}
        if caption is not None:
            content["caption"] = caption
            at = caption.find("@" + BOT_USERNAME)
            if at >= 0:
                content["caption_entities"] = [{"type": "mention", "offset": at,
                                                "length": len(BOT_USERNAME) + 1}]
        return self.user_message(user, chat_id, **content)

    def document(self, user: dict, data: bytes, chat_id: int | None = None, *,
                 mime_type: str = "image/png", file_name: str = "photo.png",
                 caption: str | None = None, size: int | None = None) -> dict:
        file_id = self._register_file(data, size)
        content: dict[str, Any] = {"document": {
            "file_id": file_id, "file_unique_id": f"u{file_id}", "file_name": file_name,
            "mime_type": mime_type, "file_size": self.file_sizes[file_id]}}
        if caption is not None:
            content["caption"] = caption
        return self.user_message(user, chat_id, **content)

    def video(self, user: dict, data: bytes, chat_id: int | None = None, *,
              kind: str = "video", caption: str | None = None,
              size: int | None = None) -> dict:
        """A user sends a clip: `kind` "video", "animation" (Telegram's GIFs; like Telegram,
        the message also has it as its document) or "video_note"."""
        name, mime = {"video": ("clip.mp4", "video/mp4"),
                      "animation": ("loop.gif", "image/gif"),
                      "video_note": ("note.mp4", "video/mp4")}[kind]
        clip = self._clip(data, file_name=name, mime_type=mime, size=size)
        content: dict[str, Any] = {kind: clip}
        if kind == "animation":
            content["document"] = clip
        if caption is not None:
            content["caption"] = caption
        return self.user_message(user, chat_id, **content)

    def press(self, user: dict, message: dict, data: str) -> None:
        """A user presses an inline button (callback data) under one of the bot's messages."""
        current = self.messages[(message["chat"]["id"], message["message_id"])]
        self._push("callback_query", {"id": str(next(self._update_ids)), "from": user,
                                      "chat_instance": "ci", "message": current, "data": data})

    # -- waiting for the bot --------------------------------------------------------------------
    def mark(self) -> int:
        """A position in the call log: `wait_for(after=mark)` looks only at later calls."""
        return len(self.calls)

    async def wait_for(self, predicate: Callable[[Call], bool], *, after: int = 0,
                       timeout: float = 30.0) -> Call:
        """The first call (from `after` on) matching `predicate`; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for call in self.calls[after:]:
                if predicate(call):
                    return call
            if time.monotonic() > deadline:
                seen = [(c.method, c.text[:60]) for c in self.calls[after:]]
                raise AssertionError(f"timed out; the bot made these calls: {seen}")
            await asyncio.sleep(0.05)

    async def reply(self, method: str, chat_id: int, *, after: int = 0,
                    text: str | None = None, timeout: float = 30.0) -> Call:
        """The bot's next `method` call in `chat_id` (whose text contains `text`, if given)."""
        return await self.wait_for(
            lambda c: c.method == method and c.chat_id == chat_id
            and (text is None or text in c.text), after=after, timeout=timeout)

    def answers(self, after: int = 0) -> list[Call]:
        return [c for c in self.calls[after:] if c.method == "answerCallbackQuery"]


def user(user_id: int, name: str = "Ada", language_code: str = "en") -> dict:
    return {"id": user_id, "is_bot": False, "first_name": name, "language_code": language_code}


# -- a readable transcript (for the docs) ---------------------------------------------------------
def _picture(data: bytes) -> str:
    w, h = Image.open(io.BytesIO(data)).size
    return f"[picture {w}×{h}]"


def _buttons(params: dict) -> list[str]:
    rows = (params.get("reply_markup") or {}).get("inline_keyboard", [])
    return [" ".join(f"[{b['text']}]" for b in row) for row in rows]


def transcript(fake: FakeTelegram, images: dict[str, str] | None = None) -> str:
    """The conversation as Markdown: what each user sent, and what the bot answered.

    `images` maps a caption (or text) prefix of a bot picture to a file to show it with.
    """
    lines: list[str] = []

    def say(who: str, what: str, params: dict | None = None) -> None:
        lines.append(f"- **{who}:** {what}")
        lines.extend(f"  {row}  " for row in _buttons(params or {}))

    labels: dict[str, str] = {}
    pictures = dict(images or {})
    for kind, item in fake.log:
        if kind == "update":
            if "message" in item:
                msg = item["message"]
                name = msg["from"]["first_name"]
                if "photo" in msg:
                    pic = _picture(fake.files[msg["photo"][-1]["file_id"]])
                    say(name, f"sends a photo {pic}" + (f" “{msg['caption']}”"
                                                         if msg.get("caption") else ""))
                elif "document" in msg:
                    say(name, f"sends the file {msg['document']['file_name']}")
                else:
                    say(name, msg.get("text", "(a message)"))
            else:
                query = item["callback_query"]
                label = labels.get(query["data"], query["data"])
                say(query["from"]["first_name"], f"presses [{label}]")
            continue
        call: Call = item
        for label, data in call.buttons():
            labels[data] = label
        if call.method == "sendMessage":
            say("Bot", call.text.replace("\n", "<br>"), call.params)
        elif call.method == "editMessageText":
            say("Bot", f"edits its message: {call.text}", call.params)
        elif call.method in ("sendPhoto", "sendDocument"):
            field_name = "photo" if call.method == "sendPhoto" else "document"
            what = "a picture" if field_name == "photo" else "a file"
            say("Bot", f"sends {what} {_picture(call.upload(field_name))} “{call.text}”",
                call.params)
            for prefix, path in list(pictures.items()):
                if field_name == "photo" and call.text.startswith(prefix):
                    lines.append(f"\n  ![the photo and the result]({path})\n")
                    del pictures[prefix]  # once
        elif call.method == "deleteMessage":
            gone = fake.messages[(call.chat_id, int(call.params["message_id"]))]
            what = f"“{gone['text']}”" if "text" in gone else "picture"
            say("Bot", f"deletes its {what} message")
        elif call.method == "answerCallbackQuery" and call.params.get("text"):
            say("Bot", f"(pop-up) {call.params['text']}")
    return "\n".join(lines) + "\n"
