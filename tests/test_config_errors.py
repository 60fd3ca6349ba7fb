"""Every bad setting stops `stylejax serve` with one line naming it (issue 17, finding 9).

Each Settings field gets a bad value through the environment in a real `python -m bots.serve
serve` subprocess: exit code 2, one `stylejax: …` line on stderr naming the setting, no
traceback, and the value itself never echoed (it may be a token). List settings take `a,b` or
a JSON list.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from service_process import ROOT, free_port

from bots.config import Settings, load_settings

pytestmark = pytest.mark.timeout(300)

MARK = "SEKRIT"  # in every bad value: must never come back in the message

# field -> a bad value (most contain MARK; paths may be named in the message)
BAD = {
    "data_dir": "{tmp}/a-file",  # a file, not a folder
    "host": f"http://{MARK}",
    "port": MARK,
    "workers": f"-1{MARK}",
    "queue": f"mysql://{MARK}",
    "pack": "{tmp}/no-pack-here",
    "max_upload_bytes": MARK,
    "decode_concurrency": f"0{MARK}",
    "max_side": f"12{MARK}",
    "rate_per_minute": f"0{MARK}",
    "rate_burst": "0",  # out of range
    "max_active_jobs": MARK,
    "max_queued_jobs": f"0{MARK}",
    "max_queued_videos": "0",  # out of range
    "user_quota_bytes": f"-1{MARK}",
    "retention_days": f"-1{MARK}",
    "api_keys": f'["{MARK}-unterminated',
    "worker_key": f"{MARK}",  # too short to be a key
    "queue_visibility_s": MARK,
    "worker_mode": MARK,
    "max_batch": "65",  # out of range
    "batch_wait_s": MARK,
    "custom_style_seconds": f"0{MARK}",
    "custom_style_size": MARK,
    "video_max_seconds": MARK,
    "video_max_frames": f"0{MARK}",
    "video_max_pixels": MARK,
    "video_max_bytes": "1",  # out of range
    "model_max_bytes": "999",  # out of range
    "model_max_textures": f"0{MARK}",
    "model_max_texture_side": MARK,
    "model_max_texture_pixels": f"-5{MARK}",
    "worker_video": f"maybe{MARK}",
    "telegram_bot_token": f"{MARK} has spaces",
    "telegram_webhook_port": "70000",  # out of range
    "discord_bot_token": MARK,
    "discord_guild_id": MARK,
    "allowed_origins": f"ftp://{MARK}.example",
    "trusted_proxies": f"10.0.0.1,{MARK}",
    "request_body_timeout_s": f"{MARK}s",
    "api_key_secret": f"{MARK} x",
}
# free text with no wrong value (URLs of test doubles, the webhook's listen address)
ANY_TEXT = {"telegram_api_url", "telegram_webhook_url", "telegram_webhook_listen",
            "discord_api_url"}
PATHS = {"data_dir", "pack"}  # a path is named in the message (it is not a secret)


def test_every_setting_has_a_bad_value_here():
    assert set(BAD) | ANY_TEXT == set(Settings.model_fields)


def _env_name(field: str) -> str:
    alias = Settings.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else f"STYLEJAX_{field.upper()}"


def _serve(tmp: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("STYLEJAX_") and k not in ("TELEGRAM_BOT_TOKEN",
                                                              "DISCORD_BOT_TOKEN")}
    clean.update(JAX_PLATFORMS="cpu", STYLEJAX_DATA_DIR=str(tmp / "data"))
    clean.update(env)
    return subprocess.run([sys.executable, "-m", "bots.serve", "serve", "--port",
                           str(free_port()), "--workers", "0"], cwd=ROOT, env=clean,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("field", sorted(BAD))
def test_a_bad_setting_gives_one_line(tmp_path, field):
    (tmp_path / "a-file").write_text("not a folder")
    value = BAD[field].format(tmp=tmp_path)
    done = _serve(tmp_path, **{_env_name(field): value})
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    lines = [line for line in done.stderr.splitlines() if line.startswith("stylejax: ")]
    assert len(lines) == 1, done.stderr[-3000:]
    assert field in lines[0] or _env_name(field) in lines[0], lines
    assert "Traceback" not in done.stderr and "File \"" not in done.stderr, done.stderr[-3000:]
    if field not in PATHS:
        assert MARK not in done.stderr, done.stderr


def test_an_unreachable_queue_names_it_without_its_password(tmp_path):
    done = _serve(tmp_path, STYLEJAX_QUEUE=f"redis://:{MARK}pw@127.0.0.1:{free_port()}/0")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "stylejax: queue: cannot reach Redis at 127.0.0.1:" in done.stderr
    assert "Traceback" not in done.stderr and MARK not in done.stderr


@pytest.mark.parametrize("raw", ["key-one-0123456789, key-two-0123456789",
                                 '["key-one-0123456789", "key-two-0123456789"]'])
def test_list_settings_take_commas_or_json(monkeypatch, raw):
    for name in list(os.environ):
        if name.startswith("STYLEJAX_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("STYLEJAX_API_KEYS", raw)
    monkeypatch.setenv("STYLEJAX_TRUSTED_PROXIES", "10.0.0.0/8,127.0.0.1")
    monkeypatch.setenv("STYLEJAX_ALLOWED_ORIGINS", "https://App.Example.org:443/")
    settings = load_settings()
    assert [k.get_secret_value() for k in settings.api_keys] == ["key-one-0123456789",
                                                                  "key-two-0123456789"]
    assert settings.trusted_proxies == ["10.0.0.0/8", "127.0.0.1"]
    assert settings.allowed_origins == ["https://app.example.org"]
