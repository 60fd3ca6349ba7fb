"""User-facing messages in English and Chinese, chosen by the user's language.

Front ends never hard-code text: they ask for a message id and pass the user's language, so a
new language or a reworded message reaches Telegram, Discord and the web page at once.
"""

from __future__ import annotations

from typing import Any

SUPPORTED = ("en", "zh")

MESSAGES: dict[str, dict[str, str]] = {
    "welcome": {
        "en": "Hi! Send me a photo and pick a style — I'll paint it for you in seconds.",
        "zh": "你好！发给我一张照片并选择一种风格，几秒钟就能为你生成艺术画。",
    },
    "choose_style": {"en": "Choose a style:", "zh": "请选择一种风格："},
    "queued": {"en": "⏳ In the queue…", "zh": "⏳ 排队中……"},
    "progress": {"en": "⏳ {percent}%", "zh": "⏳ {percent}%"},
    "done": {"en": "Here is your picture in the style of {style}.",
             "zh": "这是你的照片，风格：{style}。"},
    "failed": {"en": "Sorry, that did not work: {reason}", "zh": "抱歉，处理失败：{reason}"},
    "cancelled": {"en": "Cancelled.", "zh": "已取消。"},
    "rate_limited": {
        "en": "You are sending pictures faster than I can paint. Try again in {seconds} s.",
        "zh": "发送太快了，请在 {seconds} 秒后再试。",
    },
    "too_many_jobs": {
        "en": "You already have {count} pictures in progress; wait for one to finish.",
        "zh": "你已有 {count} 张图片在处理中，请等其中一张完成。",
    },
    "busy": {"en": "The service is busy right now; please try again in a minute.",
             "zh": "服务繁忙，请一分钟后再试。"},
    "not_an_image": {"en": "That is not a picture I can read. Send a JPEG, PNG or WebP photo.",
                     "zh": "无法读取该文件。请发送 JPEG、PNG 或 WebP 格式的照片。"},
    "forget_confirm": {"en": "Delete all your pictures and settings? This cannot be undone.",
                       "zh": "删除你的所有图片和设置？此操作无法撤销。"},
    "forgotten": {"en": "Done: your data has been deleted.", "zh": "完成：你的数据已删除。"},
}


def language_of(code: str | None) -> str:
    """A client's language code (e.g. Telegram's 'zh-hans', 'en-GB') → a supported language."""
    if not code:
        return "en"
    base = code.lower().replace("_", "-").split("-")[0]
    return base if base in SUPPORTED else "en"


def t(message_id: str, lang: str | None = "en", **values: Any) -> str:
    """The message in the user's language (English when missing), with values filled in."""
    texts = MESSAGES[message_id]
    return texts.get(language_of(lang), texts["en"]).format(**values)
