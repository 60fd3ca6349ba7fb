"""A fake Discord on 127.0.0.1: the REST API and the gateway, enough for one bot; records calls.

The real discord.py client talks to it unchanged (its REST base points here, and it finds the
gateway through `GET /gateway/bot`): it logs in, identifies over a websocket, syncs its commands,
receives INTERACTION_CREATE events the test dispatches, and answers through the interaction
callback and webhook endpoints. Files it uploads (multipart) are kept and can be read back;
attachments the test "uploads" are served for the bot to download, as Discord's CDN would.

Every REST call is recorded (`calls`), and the messages the bot created are kept as Discord
would keep them (`messages`), so a test can press the buttons of a message the bot posted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from aiohttp import WSMsgType, web

API = "/api/v10"
EPHEMERAL = 64
# interaction callback types
CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE, AUTOCOMPLETE = (
    4, 5, 6, 7, 8)
# option types
STRING, BOOLEAN, NUMBER, ATTACHMENT = 3, 5, 10, 11


@dataclass(frozen=True)
class FakeUser:
    id: int
    name: str
    locale: str = "en-US"

    def payload(self) -> dict:
        return {"id": str(self.id), "username": self.name, "discriminator": "0",
                "global_name": self.name, "avatar": None, "bot": False}


@dataclass
class Call:
    """One REST request the bot made."""

    method: str
    path: str                       # after /api/v10
    query: dict[str, str]
    json: Any = None                # the JSON body, or payload_json of a multipart body
    files: dict[str, bytes] = field(default_factory=dict)  # filename → bytes (multipart)
    authorized: bool = False        # carried "Authorization: Bot <the right token>"
    at: float = field(default_factory=time.monotonic)


@dataclass
class Sent:
    """An interaction the test dispatched: its id and token name the bot's answers."""

    id: int
    token: str
    payload: dict
    at: float = field(default_factory=time.monotonic)  # when it was sent over the gateway


class FakeDiscord:
    """Start with `async with FakeDiscord(token) as fake:`; `fake.api_url` is the REST base."""

    def __init__(self, token: str, *, app_id: int = 4242, guild_id: int = 777):
        self.token = token
        self.app_id = app_id
        self.guild_id = guild_id
        self.channel_id = 555
        self.upload_limit = 10 * 2**20  # what a server without boosts allows a bot
        self.bot_user = {"id": str(app_id), "username": "StyleJAX", "discriminator": "0",
                         "global_name": None, "avatar": None, "bot": True}
        self.calls: list[Call] = []
        self.messages: dict[int, dict] = {}         # id → message payload, as Discord keeps it
        self.deleted: set[int] = set()
        self.commands: list[dict] = []              # the last synced set
        self.identified = asyncio.Event()
        self.synced = asyncio.Event()
        self.downloads: list[str] = []              # attachment files the bot fetched
        self._original: dict[str, int] = {}         # interaction token → @original message
        self._source: dict[str, int] = {}           # … → the message a pressed button is on
        self._files: dict[str, tuple[bytes, str]] = {}
        self._ids = itertools.count(10_000)
        self._seq = itertools.count(1)
        self._sockets: set[web.WebSocketResponse] = set()
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.base = ""

    # -- life cycle -------------------------------------------------------------------------------
    async def __aenter__(self) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/cdn/{id}/{name}", self._cdn)
        app.router.add_route("*", API + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return self.base + API

    def snowflake(self) -> int:
        return next(self._ids)

    # -- what the test does -----------------------------------------------------------------------
    def upload(self, filename: str, data: bytes, content_type: str | None = "image/png",
               size: int | None = None) -> dict:
        """An attachment as a user's upload looks in an interaction; served for download."""
        aid = self.snowflake()
        self._files[str(aid)] = (data, content_type or "application/octet-stream")
        url = f"{self.base}/cdn/{aid}/{filename}"
        att = {"id": str(aid), "filename": filename, "size": len(data) if size is None else size,
               "url": url, "proxy_url": url}
        if content_type is not None:
            att["content_type"] = content_type
        return att

    async def slash(self, user: FakeUser, name: str, **options: Any) -> Sent:
        """A slash command; option values: attachment dicts, bools, numbers or strings."""
        return await self.interact(user, 2, self._command_data(name, options))

    async def autocomplete(self, user: FakeUser, name: str, focused: str,
                           **options: Any) -> Sent:
        data = self._command_data(name, options)
        for opt in data["options"]:
            if opt["name"] == focused:
                opt["focused"] = True
        return await self.interact(user, 4, data)

    async def message_command(self, user: FakeUser, name: str, message: dict) -> Sent:
        data = {"id": str(self._command_id(name)), "name": name, "type": 3,
                "target_id": message["id"], "resolved": {"messages": {message["id"]: message}}}
        return await self.interact(user, 2, data)

    async def press(self, user: FakeUser, message: dict, custom_id: str,
                    values: list[str] | None = None) -> Sent:
        """Click a button (or choose `values` in a select menu) of a message the bot posted."""
        kinds = {c["custom_id"]: c["type"] for row in message.get("components", [])
                 for c in row["components"]}
        if custom_id not in kinds:
            raise AssertionError(f"no component {custom_id!r} on message {message['id']}")
        data: dict = {"custom_id": custom_id, "component_type": kinds[custom_id]}
        if values is not None:
            data["values"] = values
        return await self.interact(user, 3, data, message=message)

    def user_message(self, author: FakeUser, content: str, attachments: list[dict]) -> dict:
        """A message a user posted in the channel (for the message context menu)."""
        return self._message(author.payload(), content=content, attachments=attachments, type=0)

    def _command_id(self, name: str) -> int:
        for c in self.commands:
            if c["name"] == name:
                return int(c["id"])
        raise AssertionError(f"the bot did not sync a command named {name!r}")

    def _command_data(self, name: str, options: dict[str, Any]) -> dict:
        opts, attachments = [], {}
        for key, value in options.items():
            if isinstance(value, dict):
                attachments[value["id"]] = value
                opts.append({"name": key, "type": ATTACHMENT, "value": value["id"]})
            elif isinstance(value, bool):
                opts.append({"name": key, "type": BOOLEAN, "value": value})
            elif isinstance(value, int | float):
                opts.append({"name": key, "type": NUMBER, "value": value})
            else:
                opts.append({"name": key, "type": STRING, "value": value})
        data = {"id": str(self._command_id(name)), "name": name, "type": 1, "options": opts}
        if attachments:
            data["resolved"] = {"attachments": attachments}
        return data

    async def interact(self, user: FakeUser, itype: int, data: dict, *,
                       message: dict | None = None) -> Sent:
        iid = self.snowflake()
        token = f"itoken-{iid}"
        payload = {
            "id": str(iid), "application_id": str(self.app_id), "type": itype, "data": data,
            "token": token, "version": 1, "locale": user.locale, "guild_locale": "en-US",
            "guild_id": str(self.guild_id), "channel_id": str(self.channel_id),
            "channel": {"id": str(self.channel_id), "type": 0, "guild_id": str(self.guild_id),
                        "name": "general", "position": 0, "permission_overwrites": [],
                        "nsfw": False, "parent_id": None},
            "member": {"user": user.payload(), "roles": [], "joined_at": _now(), "deaf": False,
                       "mute": False, "flags": 0, "permissions": "2147483647"},
            "app_permissions": "2147483647", "entitlements": [],
            "attachment_size_limit": self.upload_limit, "authorizing_integration_owners": {},
            "context": 0,
        }
        if message is not None:
            payload["message"] = message
            self._source[token] = int(message["id"])
        sent = Sent(iid, token, payload)
        await self.dispatch("INTERACTION_CREATE", payload)
        return sent

    async def dispatch(self, event: str, data: dict) -> None:
        if not self._sockets:
            raise AssertionError("the bot is not connected to the gateway")
        frame = {"op": 0, "t": event, "s": next(self._seq), "d": data}
        for ws in list(self._sockets):
            await ws.send_json(frame)

    # -- what the test checks ---------------------------------------------------------------------
    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
        """Wait until `predicate()` is truthy (re-checked on every call); return its value."""
        async def check() -> Any:
            async with self._changed:
                while not (value := predicate()):
                    await self._changed.wait()
                return value
        return await asyncio.wait_for(check(), timeout)

    def calls_for(self, sent: Sent) -> list[Call]:
        """The bot's answers to one interaction (callback and webhook calls with its token)."""
        return [c for c in self.calls if f"/{sent.token}" in c.path]

    def callback(self, sent: Sent) -> Call | None:
        return next((c for c in self.calls_for(sent) if c.path.endswith("/callback")), None)

    def original(self, sent: Sent) -> dict | None:
        """The message the interaction's reply lives in (None before a reply, or deleted)."""
        mid = self._original.get(sent.token)
        return None if mid is None or mid in self.deleted else self.messages.get(mid)

    def followups(self, sent: Sent) -> list[dict]:
        return [self.messages[int(m)] for c in self.calls_for(sent)
                if c.method == "POST" and not c.path.endswith("/callback")
                for m in [c.json.get("_id")] if m]

    async def result_of(self, sent: Sent, timeout: float = 30.0) -> dict:
        """Wait for the reply to carry a file (a finished picture) or to end in text only."""
        def done() -> dict | None:
            msg = self.original(sent)
            return msg if msg and msg["attachments"] else None
        return await self.wait_for(done, timeout)

    async def ephemeral_text(self, sent: Sent, timeout: float = 20.0) -> str:
        """The text of the ephemeral reply (a callback message or a followup) to `sent`."""
        def find() -> str | None:
            for c in self.calls_for(sent):
                body = c.json or {}
                if c.path.endswith("/callback"):
                    body = body.get("data") or {}
                if body.get("flags", 0) & EPHEMERAL and body.get("content"):
                    return body["content"]
            return None
        return await self.wait_for(find, timeout)

    def transcript(self, sent: Sent) -> list[dict]:
        """One exchange, readable: the interaction Discord sent, then each call the bot made.

        Uploaded files appear as their name and size; the interaction token is shortened.
        """
        short = sent.token[:8] + "…"
        rows: list[dict] = [{"gateway": "INTERACTION_CREATE",
                             "d": {k: sent.payload[k] for k in ("type", "data", "locale")}}]
        for c in self.calls_for(sent):
            body = {k: v for k, v in (c.json or {}).items() if not k.startswith("_")}
            row = {"request": f"{c.method} {c.path.replace(sent.token, short)}", "json": body}
            if c.files:
                row["files"] = {name: f"<{len(data)} bytes>" for name, data in c.files.items()}
            rows.append(row)
        return json.loads(json.dumps(rows).replace(sent.token, short))

    def file(self, attachment: dict) -> bytes:
        """The bytes of a file the bot uploaded (or a test upload)."""
        return self._files[attachment["id"]][0]

    # -- the gateway ------------------------------------------------------------------------------
    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 41250}})
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    break
                frame = json.loads(msg.data)
                if frame["op"] == 1:
                    await ws.send_json({"op": 11})
                elif frame["op"] == 2:
                    if frame["d"]["token"] != self.token:
                        await ws.close(code=4004, message=b"Authentication failed.")
                        break
                    await ws.send_json({"op": 0, "t": "READY", "s": next(self._seq), "d": {
                        "v": 10, "user": self.bot_user, "guilds": [], "session_id": "fake",
                        "resume_gateway_url": f"ws://{request.host}/gateway",
                        "shard": frame["d"].get("shard", [0, 1]),
                        "application": {"id": str(self.app_id), "flags": 0}}})
                    self.identified.set()
        finally:
            self._sockets.discard(ws)
        return ws

    async def _cdn(self, request: web.Request) -> web.Response:
        fid = request.match_info["id"]
        if fid not in self._files:
            return web.Response(status=404)
        self.downloads.append(request.match_info["name"])
        data, ctype = self._files[fid]
        return web.Response(body=data, content_type=ctype)

    # -- REST -------------------------------------------------------------------------------------
    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        call = Call(request.method, path, dict(request.query),
                    authorized=request.headers.get("Authorization") == f"Bot {self.token}")
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":
                    call.json = json.loads(await part.text())
                else:
                    call.files[part.filename or part.name] = bytes(await part.read())
        elif request.can_read_body:
            call.json = await request.json()
        response = self._answer(call)
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()
        return response

    def _answer(self, call: Call) -> web.StreamResponse:
        parts = call.path.strip("/").split("/")
        route = (call.method, *parts)
        app = str(self.app_id)
        if route[:2] in (("GET", "users"), ("GET", "oauth2"), ("GET", "gateway"),
                         ("PUT", "applications")) and not call.authorized:
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        match route:
            case ("GET", "gateway", "bot"):
                return _json({"url": self.base.replace("http", "ws") + "/gateway",
                                          "shards": 1, "session_start_limit": {
                                              "total": 1000, "remaining": 999, "reset_after": 0,
                                              "max_concurrency": 1}})
            case ("GET", "users", "@me"):
                return _json(self.bot_user)
            case ("GET", "oauth2", "applications", "@me"):
                return _json({
                    "id": app, "name": "StyleJAX", "description": "", "icon": None,
                    "bot_public": True, "bot_require_code_grant": False,
                    "owner": {**self.bot_user, "id": "1", "bot": False}, "verify_key": "0" * 64,
                    "flags": 0, "team": None, "interactions_endpoint_url": None})
            case ("PUT", "applications", a, "commands") | (
                    "PUT", "applications", a, "guilds", _, "commands") if a == app:
                self.commands = [{"description": "", "options": [], **c,
                                  "id": str(self.snowflake()), "application_id": app,
                                  "version": "1"} for c in call.json]
                self.synced.set()
                return _json(self.commands)
            case ("POST", "interactions", iid, token, "callback"):
                return _json(self._callback(int(iid), token, call))
            case ("PATCH", "webhooks", a, token, "messages", mid) if a == app:
                msg = self._message_of(token, mid)
                if msg is None:
                    return _json({"message": "Unknown Message"}, status=404)
                self._edit(msg, call)
                return _json(msg)
            case ("GET", "webhooks", a, token, "messages", mid) if a == app:
                msg = self._message_of(token, mid)
                return (_json(msg) if msg else
                        _json({"message": "Unknown Message"}, status=404))
            case ("DELETE", "webhooks", a, token, "messages", mid) if a == app:
                msg = self._message_of(token, mid)
                if msg is None:
                    return _json({"message": "Unknown Message"}, status=404)
                self.deleted.add(int(msg["id"]))
                return web.Response(status=204)
            case ("POST", "webhooks", a, token) if a == app:
                msg = self._message(self.bot_user, flags=(call.json or {}).get("flags", 0))
                self._edit(msg, call)
                call.json = {**(call.json or {}), "_id": msg["id"]}
                return _json(msg)
        return _json({"message": "404: Not Found", "code": 0}, status=404)

    def _callback(self, iid: int, token: str, call: Call) -> dict:
        kind = call.json["type"]
        data = call.json.get("data") or {}
        answer: dict = {"interaction": {"id": str(iid), "type": 2}}
        if kind in (CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE):
            msg = self._message(self.bot_user, flags=data.get("flags", 0), type=20)
            if kind == CHANNEL_MESSAGE:
                self._edit(msg, Call("POST", "", {}, data, call.files))
            self._original[token] = int(msg["id"])
            answer["interaction"].update(response_message_id=msg["id"],
                                         response_message_loading=kind != CHANNEL_MESSAGE,
                                         response_message_ephemeral=bool(msg["flags"] & 64))
            answer["resource"] = {"type": kind, "message": msg}
        elif kind in (DEFERRED_UPDATE, UPDATE_MESSAGE) and token in self._source:
            self._original[token] = self._source[token]  # @original: the button's message
            msg = self._message_of(token, "@original")
            if msg is not None and kind == UPDATE_MESSAGE:
                self._edit(msg, Call("PATCH", "", {}, data, call.files))
                answer["resource"] = {"type": kind, "message": msg}
        return answer

    # -- messages ---------------------------------------------------------------------------------
    def _message(self, author: dict, *, content: str = "", attachments: list | None = None,
                 flags: int = 0, type: int = 0) -> dict:
        mid = self.snowflake()
        msg = {"id": str(mid), "channel_id": str(self.channel_id), "guild_id": str(self.guild_id),
               "author": author, "content": content, "timestamp": _now(),
               "edited_timestamp": None, "tts": False, "mention_everyone": False,
               "mentions": [], "mention_roles": [], "attachments": attachments or [],
               "embeds": [], "pinned": False, "type": type, "flags": flags, "components": []}
        if author is self.bot_user:
            msg["application_id"] = str(self.app_id)
            msg["webhook_id"] = str(self.app_id)
        self.messages[mid] = msg
        return msg

    def _message_of(self, token: str, mid: str) -> dict | None:
        key = self._original.get(token) if mid == "@original" else int(mid)
        return None if key is None or key in self.deleted else self.messages.get(key)

    def _edit(self, msg: dict, call: Call) -> None:
        """Apply a message body (JSON or multipart) as Discord does: keys present replace."""
        body = call.json or {}
        if "content" in body:
            msg["content"] = body["content"] or ""
        for key in ("embeds", "components"):
            if key in body:
                msg[key] = body[key] or []
        if "attachments" in body or call.files:
            keep = {str(a.get("id")) for a in body.get("attachments") or []}
            kept = [a for a in msg["attachments"] if a["id"] in keep]
            msg["attachments"] = kept + [self._store(name, data)
                                         for name, data in call.files.items()]
        msg["edited_timestamp"] = _now()

    def _store(self, filename: str, data: bytes) -> dict:
        types = {".png": "image/png", ".gif": "image/gif", ".webp": "image/webp",
                 ".mp4": "video/mp4", ".jpg": "image/jpeg"}
        att = self.upload(filename, data, types.get(filename[filename.rfind("."):]))
        return att


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _json(data: Any, status: int = 200) -> web.Response:
    """discord.py parses a body as JSON only when the type is exactly "application/json"."""
    return web.Response(body=json.dumps(data).encode(), status=status,
                        content_type="application/json")
