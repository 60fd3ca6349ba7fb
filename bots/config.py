"""Service configuration: environment variables (STYLEJAX_*) and an optional TOML file.

Validated once at start-up so a typo fails loudly before any user is served. Bot tokens are
`SecretStr`: printing the settings, logging them or putting them in an error shows `**********`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import tomllib
from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError


class ConfigError(Exception):
    """The configuration cannot be used; the message says which setting and why."""


def _split_list(value: Any) -> Any:
    """A list setting from the environment: comma-separated (`a,b`) or a JSON list (`["a","b"]`).

    pydantic-settings would only take JSON and fail with a traceback; TOML gives real lists."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            raise ValueError("is not a valid JSON list; use a,b,c or [\"a\",\"b\"]") from None
        if not isinstance(parsed, list):
            raise ValueError("must be a list")
        return parsed
    return [part.strip() for part in text.split(",") if part.strip()]


MIN_SECRET_CHARS = 16  # API keys, the worker key, the API-key secret


class Settings(BaseSettings):
    """Everything `stylejax serve` needs; every field has a safe default but the tokens."""

    model_config = SettingsConfigDict(env_prefix="STYLEJAX_", extra="forbid",
                                      validate_default=True)

    data_dir: Path = Path("stylejax-data")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=0, le=64)
    queue: str = ""                       # "" = embedded SQLite under data_dir; or redis://…
    pack: Path | None = None              # None = the built-in default pack
    max_upload_bytes: int = Field(20_000_000, ge=1_000)
    max_side: int = Field(2048, ge=64)    # photos are scaled down to this before stylising
    # Pictures the front end decodes at once to check them (each at most `max_side`, but a
    # PNG is loaded at full size first): bounds the API process's memory under upload bursts.
    decode_concurrency: int = Field(2, ge=1, le=64)
    rate_per_minute: float = Field(10.0, gt=0)
    rate_burst: int = Field(5, ge=1)
    max_active_jobs: int = Field(2, ge=1)
    # Back-pressure: a lane with this many jobs waiting refuses new ones (503 + Retry-After)
    # instead of growing a line nobody wants to wait in (docs/service.md "Queue").
    max_queued_jobs: int = Field(200, ge=1)     # the photo lane
    max_queued_videos: int = Field(20, ge=1)    # the video lane
    retention_days: float = Field(7.0, gt=0)
    # Bytes of pictures and results one user may keep (0: no limit); a job is refused before
    # any work when its upload and its result's estimate would not fit.
    user_quota_bytes: int = Field(256 * 1024 * 1024, ge=0)
    api_keys: Annotated[list[SecretStr], NoDecode, BeforeValidator(_split_list)] = Field(
        default_factory=list)
    # Shared secret of workers on other machines (`stylejax worker --server URL`); unset = the
    # internal worker endpoints are off.
    worker_key: SecretStr | None = None
    queue_visibility_s: float = Field(60.0, gt=0)  # a silent worker's jobs go back after this
    worker_mode: Literal["process", "thread"] = "process"
    max_batch: int = Field(4, ge=1, le=64)
    batch_wait_s: float = Field(0.02, ge=0, le=5)  # how long a part-filled batch waits for more
    custom_style_seconds: float = Field(30.0, gt=0)  # time budget of one custom-style job
    custom_style_size: int = Field(512, ge=64)       # long side of a custom-style result
    # Video jobs (clips, animated GIF / WebP: docs/video.md "Service"); an upload past one of
    # these is refused before it is stored.
    video_max_seconds: float = Field(60.0, gt=0)
    video_max_frames: int = Field(1800, ge=1)
    video_max_pixels: int = Field(1920 * 1080, ge=64 * 64)  # per frame
    video_max_bytes: int = Field(100_000_000, ge=1_000)
    # 3D model jobs (a .glb whose textures are stylised: docs/3d.md "On the service"); a model
    # past one of these is refused at submit, before it is stored.
    model_max_bytes: int = Field(50_000_000, ge=1_000)
    model_max_textures: int = Field(8, ge=1, le=256)
    model_max_texture_side: int = Field(4096, ge=16)
    model_max_texture_pixels: int = Field(4096 * 4096, ge=256)
    # Whether this worker also takes video jobs (the video lane); photo-only workers keep
    # photos from waiting behind clips. `stylejax serve` sets it per worker (all but one).
    worker_video: bool = True
    telegram_bot_token: SecretStr | None = Field(None, validation_alias="TELEGRAM_BOT_TOKEN")
    # A self-hosted Bot API server (or a test double); "" = Telegram's own.
    telegram_api_url: str = ""
    # Webhook mode when set (the public HTTPS URL Telegram posts to); polling otherwise.
    telegram_webhook_url: str = ""
    telegram_webhook_listen: str = "127.0.0.1"
    telegram_webhook_port: int = Field(8443, ge=1, le=65535)
    discord_bot_token: SecretStr | None = Field(None, validation_alias="DISCORD_BOT_TOKEN")
    # Discord REST base (a test double); "" = Discord's own.
    discord_api_url: str = ""
    # Sync slash commands to this guild only (instant, for testing); None = globally.
    discord_guild_id: int | None = None
    # -- the HTTP front's defences (docs/service.md "Browsers, proxies and keys")
    # Other web origins (scheme://host[:port]) whose pages may post to the API; the service's
    # own origin always may. Lists: `a,b` or a JSON list in the environment, a list in TOML.
    allowed_origins: Annotated[list[str], NoDecode, BeforeValidator(_split_list)] = Field(
        default_factory=list)
    # Addresses of reverse proxies whose X-Forwarded-For / -Proto are believed; empty = none.
    trusted_proxies: Annotated[list[str], NoDecode, BeforeValidator(_split_list)] = Field(
        default_factory=list)
    # The longest a client may take to send a request body (slow or stalled uploads get 408).
    request_body_timeout_s: float = Field(20.0, gt=0, le=3600)
    # The key of the HMAC that turns API keys into user ids; unset = a random one generated
    # once and kept in data_dir/api-key-secret (mode 0600).
    api_key_secret: SecretStr | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not v or any(c.isspace() or c in "/@?#" for c in v):
            raise ValueError("must be an address or host name to listen on, e.g. 0.0.0.0")
        return v

    @field_validator("api_keys", "worker_key", "api_key_secret")
    @classmethod
    def _secret_shape(cls, v):
        for secret in v if isinstance(v, list) else [v]:
            text = secret.get_secret_value() if secret is not None else None
            if text is not None and (len(text) < MIN_SECRET_CHARS
                                     or any(c.isspace() for c in text)):
                raise ValueError(f"must be at least {MIN_SECRET_CHARS} characters without "
                                 "spaces (an empty or short key is easy to guess)")
        return v

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        cleaned = []
        for origin in v:
            url = urlsplit(origin.strip())
            if url.scheme not in ("http", "https") or not url.hostname or url.path.strip("/") \
                    or url.query or url.fragment:
                raise ValueError("each origin must look like https://host or http://host:port")
            cleaned.append(origin_of(url.scheme, url.netloc))
        return cleaned

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: list[str]) -> list[str]:
        for proxy in v:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                if proxy != "*":
                    raise ValueError("each proxy must be an IP address, a network "
                                     "(10.0.0.0/8) or *") from None
        return v

    @field_validator("queue")
    @classmethod
    def _queue_url(cls, v: str) -> str:
        if v and not v.startswith(("redis://", "rediss://", "sqlite:///")):
            raise ValueError("must be empty (embedded), sqlite:///path or redis://host:port/db")
        return v

    @field_validator("telegram_bot_token", "discord_bot_token")
    @classmethod
    def _token_shape(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and (len(v.get_secret_value()) < 20 or " " in v.get_secret_value()):
            raise ValueError("does not look like a bot token")
        return v

    @property
    def queue_url(self) -> str:
        return self.queue or f"sqlite:///{(self.data_dir / 'queue.db').absolute()}"

    @property
    def video_queue_url(self) -> str:
        """The video lane: a second queue beside `queue_url` (SQLite: `<name>-video.db` next
        to it; Redis: the stream `<stream>:video`), so photos never queue behind clips."""
        url = urlsplit(self.queue_url)
        if url.scheme.lower() == "sqlite":  # urlunsplit would drop the empty host's slashes
            path, sep, query = self.queue_url.partition("?")
            stem, dot, suffix = path.rpartition(".")
            named = f"{stem}-video.{suffix}" if dot and "/" not in suffix else f"{path}-video"
            return named + sep + query
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        query["stream"] = query.get("stream", "stylejax:jobs") + ":video"
        return urlunsplit(url._replace(query=urlencode(query)))

    @property
    def video_limits(self):
        """What a clip may be (`stylejax.video.VideoLimits`), from the `video_max_*` settings."""
        from stylejax.video import VideoLimits

        return VideoLimits(max_duration_s=self.video_max_seconds,
                           max_frames=self.video_max_frames,
                           max_pixels=self.video_max_pixels, max_bytes=self.video_max_bytes)


    @property
    def model_limits(self):
        """What a 3D model may be (`stylejax.mesh_textures.ModelLimits`), from `model_max_*`."""
        from stylejax.mesh_textures import ModelLimits

        return ModelLimits(max_bytes=self.model_max_bytes,
                           max_textures=self.model_max_textures,
                           max_texture_side=self.model_max_texture_side,
                           max_texture_pixels=self.model_max_texture_pixels)


def origin_of(scheme: str, netloc: str) -> str:
    """`scheme://host[:port]` in one spelling: lower case, no default port, no user info."""
    scheme = scheme.lower()
    host = netloc.rpartition("@")[2].lower()
    default = {"http": ":80", "https": ":443"}.get(scheme)
    if default and host.endswith(default):
        host = host[: -len(default)]
    return f"{scheme}://{host}"


def queue_options(settings: Settings) -> dict:
    """Settings the queue URL does not already carry (the URL's own query wins)."""
    return {} if "visibility_s=" in settings.queue_url else {
        "visibility_s": settings.queue_visibility_s}


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "settings"
        lines.append(f"{where}: {e['msg']}")  # never the input value: it may be a token
    return "invalid configuration: " + "; ".join(lines)


def _settings_error(err: SettingsError) -> str:
    """The setting named in pydantic-settings' message (which carries no value), or a hint."""
    field = re.search(r'field "([^"]+)"', str(err))
    return f"{field.group(1)}: cannot be parsed" if field else "a setting cannot be parsed"


# STYLEJAX_* variables read elsewhere (library, not service settings).
_OTHER_ENV = {"STYLEJAX_CONFIG", "STYLEJAX_JAX_CACHE", "STYLEJAX_ORT_THREADS"}


def _check_env_names() -> None:
    """pydantic-settings ignores unknown variables; a misspelt one should not pass silently."""
    known = {f"STYLEJAX_{name.upper()}" for name in Settings.model_fields} | _OTHER_ENV
    unknown = sorted(k for k in os.environ if k.startswith("STYLEJAX_") and k not in known)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: "
                          + ", ".join(sorted(known - _OTHER_ENV)))


def load_settings(toml_path: str | os.PathLike | None = None, **overrides: Any) -> Settings:
    """TOML file < environment < explicit overrides (command-line flags)."""
    _check_env_names()
    file_values: dict[str, Any] = {}
    path = toml_path or os.environ.get("STYLEJAX_CONFIG")
    if path:
        try:
            file_values = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {Path(path).name} is not valid TOML: {err}") from None
    try:
        env = Settings()  # environment only, to know which keys it set
        env_set = env.model_fields_set
        merged = {**file_values, **{k: getattr(env, k) for k in env_set},
                  **{k: v for k, v in overrides.items() if v is not None}}
        return Settings.model_validate(merged) if merged else env
    except ValidationError as err:
        raise ConfigError(_describe(err)) from None
    except SettingsError as err:  # a value pydantic-settings could not even parse
        raise ConfigError(f"invalid configuration: {_settings_error(err)}") from None
