"""Service building blocks: configuration, messages, rate limit."""

from __future__ import annotations

import logging

import pytest

from bots.config import ConfigError, load_settings
from bots.i18n import MESSAGES, SUPPORTED, language_of, t
from bots.ratelimit import TokenBucket

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


def test_defaults_need_no_configuration(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.host == "127.0.0.1" and s.port == 8000
    assert s.queue_url.startswith("sqlite:///") and s.telegram_bot_token is None


def test_toml_then_environment_then_flags(monkeypatch, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('port = 9001\nworkers = 3\nqueue = "redis://127.0.0.1:6390/0"\n')
    monkeypatch.setenv("STYLEJAX_WORKERS", "2")
    s = load_settings(cfg, host="0.0.0.0")
    assert (s.port, s.workers, s.host) == (9001, 2, "0.0.0.0")
    assert s.queue_url == "redis://127.0.0.1:6390/0"


@pytest.mark.parametrize("env,needle", [
    ({"STYLEJAX_PORT": "70000"}, "port"),
    ({"STYLEJAX_QUEUE": "mysql://x"}, "queue"),
    ({"STYLEJAX_TYPO": "1"}, "typo"),
    ({"TELEGRAM_BOT_TOKEN": "short"}, "telegram_bot_token"),
])
def test_bad_settings_are_clear(monkeypatch, env, needle):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert needle in str(err.value).lower()


def test_token_never_printed_or_logged(monkeypatch, caplog):
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    s = load_settings()
    assert s.telegram_bot_token.get_secret_value() == TOKEN
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("settings: %s %r", s, s)
    assert TOKEN not in caplog.text and TOKEN not in str(s) and TOKEN not in repr(s)
    # and not in a validation error about it
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN + " with a space")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert TOKEN not in str(err.value)


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)


def test_every_message_in_every_language():
    for mid, texts in MESSAGES.items():
        assert set(texts) == set(SUPPORTED), mid
        placeholders = {lang: sorted(x.split("}")[0] for x in s.split("{")[1:])
                        for lang, s in texts.items()}
        assert placeholders["en"] == placeholders["zh"], mid


def test_language_choice():
    assert language_of("zh-hans") == "zh" and language_of("zh_TW") == "zh"
    assert language_of("en-GB") == "en" and language_of("fr") == "en" and language_of(None) == "en"
    assert t("rate_limited", "zh-hans", seconds=3) == "发送太快了，请在 3 秒后再试。"
    assert "3 s" in t("rate_limited", "de", seconds=3)


def test_token_bucket_burst_then_refill():
    now = [0.0]
    tb = TokenBucket(rate=0.5, burst=3, clock=lambda: now[0])
    assert [tb.try_acquire("u") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert tb.try_acquire("u") == pytest.approx(2.0)      # one token takes 2 s at 0.5/s
    assert tb.retry_after_s("u") == 2
    assert tb.try_acquire("other") == 0.0                 # buckets are per user
    now[0] += 2.0
    assert tb.try_acquire("u") == 0.0
    assert tb.try_acquire("u") > 0


def test_token_bucket_memory_is_bounded():
    now = [0.0]
    tb = TokenBucket(rate=1.0, burst=1, clock=lambda: now[0], max_keys=10)
    for i in range(100):
        tb.try_acquire(f"user{i}")
        now[0] += 0.01
    assert len(tb._buckets) <= 10
