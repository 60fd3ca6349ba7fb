"""User-facing messages in English and Chinese, chosen by the user's language.

The chat front ends (Telegram, Discord) never hard-code text: they ask for a message id and
pass the user's language, so a new language or a reworded message reaches both bots at once.
The web page has its own table (bots/web/app.js), since it renders in the browser.
"""

from __future__ import annotations

from typing import Any

from stylejax.compose import NOT_FOUND

SUPPORTED = ("en", "zh")

MESSAGES: dict[str, dict[str, str]] = {
    # -- greeting and help --
    "welcome": {
        "en": "Hi! Send me a photo and pick a style — I'll paint it for you in seconds.",
        "zh": "你好！发给我一张照片并选择一种风格，几秒钟就能为你生成艺术画。",
    },
    "help": {
        "en": ("Send a photo (or an image file for full resolution) and choose a style.\n"
               "Caption shortcut: a style name and a strength, e.g. \"starry 0.8\".\n"
               "/styles — the style gallery\n/custom — use your own style picture\n"
               "/settings — default strength, stroke size, colours, output, language\n"
               "/history — your last pictures\n/forget — delete your data\n"
               "/cancel — stop the current picture"),
        "zh": ("发送一张照片（或以文件形式发送以保留原始分辨率），然后选择风格。\n"
               "快捷方式：在图片说明中写风格名和强度，例如 \"starry 0.8\"。\n"
               "/styles — 风格画廊\n/custom — 使用你自己的风格图片\n"
               "/settings — 默认强度、笔触大小、颜色、输出方式、语言\n"
               "/history — 最近的图片\n/forget — 删除你的数据\n/cancel — 停止当前任务"),
    },
    "cmd_start": {"en": "Start and see what I can do", "zh": "开始使用"},
    "cmd_help": {"en": "How to use the bot", "zh": "使用帮助"},
    "cmd_styles": {"en": "Show the style gallery", "zh": "查看风格画廊"},
    "cmd_custom": {"en": "Stylize with your own style picture", "zh": "使用自定义风格图片"},
    "cmd_settings": {"en": "Your preferences", "zh": "偏好设置"},
    "cmd_history": {"en": "Your last pictures", "zh": "最近的图片"},
    "cmd_forget": {"en": "Delete all your data", "zh": "删除你的所有数据"},
    "cmd_cancel": {"en": "Stop the current picture", "zh": "停止当前任务"},
    "cmd_stylize": {"en": "Stylize a picture", "zh": "为图片添加艺术风格"},
    # -- command options (Discord shows these under each slash command) --
    "menu_stylize": {"en": "Stylize", "zh": "艺术风格化"},
    "opt_image": {"en": "The photo to stylize", "zh": "要处理的照片"},
    "opt_style": {"en": "A style from the gallery", "zh": "画廊中的一种风格"},
    "opt_strength": {"en": "How strong, from 0 to 1 (default: your setting)",
                     "zh": "强度，0 到 1（默认：你的设置）"},
    "opt_keep_colors": {"en": "Keep the photo's own colours", "zh": "保留照片原本的颜色"},
    "opt_stroke": {"en": "Brush stroke size (default: your setting)",
                   "zh": "笔触大小（默认：你的设置）"},
    "opt_default_stroke": {"en": "Your default brush stroke size", "zh": "你的默认笔触大小"},
    "opt_style_picture": {"en": "Your style picture (a painting, a texture…)",
                          "zh": "你的风格图片（一幅画、一种纹理……）"},
    "opt_default_strength": {"en": "Your default strength, from 0 to 1",
                             "zh": "你的默认强度，0 到 1"},
    # -- the stylize flow --
    "choose_style": {"en": "Choose a style:", "zh": "请选择一种风格："},
    "gallery": {"en": "The styles I know:", "zh": "可用的风格："},
    "queued": {"en": "⏳ In the queue…", "zh": "⏳ 排队中……"},
    # the place in line (bots.chat.progress_text): "⏳ 3rd in line, about 40 s"
    "queue_next": {"en": "⏳ Next in line", "zh": "⏳ 下一个就轮到你"},
    "queue_place": {"en": "⏳ {ordinal} in line", "zh": "⏳ 排在{ordinal}位"},
    "queue_about": {"en": "{place}, about {eta}", "zh": "{place}，大约 {eta}"},
    "seconds": {"en": "{n} s", "zh": "{n} 秒"},
    "minutes": {"en": "{n} min", "zh": "{n} 分钟"},
    "progress": {"en": "⏳ {percent}%", "zh": "⏳ {percent}%"},
    "still_working": {"en": "⏳ Still working on it…", "zh": "⏳ 仍在处理中……"},
    "done": {"en": "Here is your picture in the style of {style} ({strength}%).",
             "zh": "这是你的照片，风格：{style}（强度 {strength}%）。"},
    "your_style": {"en": "your picture", "zh": "你的图片"},
    "failed": {"en": "Sorry, that did not work: {reason}", "zh": "抱歉，处理失败：{reason}"},
    "cancelled": {"en": "Cancelled.", "zh": "已取消。"},
    "nothing_to_cancel": {"en": "Nothing to cancel.", "zh": "没有可取消的任务。"},
    "deleted": {"en": "Deleted.", "zh": "已删除。"},
    "btn_stronger": {"en": "➕ Stronger", "zh": "➕ 更强"},
    "btn_weaker": {"en": "➖ Weaker", "zh": "➖ 更弱"},
    "btn_another": {"en": "🎨 Another style", "zh": "🎨 换一种风格"},
    "btn_keep_colors": {"en": "🌈 Keep colours", "zh": "🌈 保留原色"},
    "btn_style_colors": {"en": "🌈 Style colours", "zh": "🌈 风格颜色"},
    "btn_delete": {"en": "🗑 Delete", "zh": "🗑 删除"},
    "btn_refine": {"en": "✨ Refine (~30 s)", "zh": "✨ 精修（约 30 秒）"},
    # where the style goes (bots.chat.REGION_CHOICES) and what the caption then says
    "btn_region_person": {"en": "🧍 Person only", "zh": "🧍 只处理人物"},
    "btn_region_bg": {"en": "🏞 Background only", "zh": "🏞 只处理背景"},
    "btn_region_faces": {"en": "🙂 Keep faces", "zh": "🙂 保留面部"},
    "btn_region_all": {"en": "🖼 Everywhere", "zh": "🖼 整张照片"},
    "styled_person": {"en": "Only the person is styled; the background is as in the photo.",
                      "zh": "只为人物添加了风格，背景保持原样。"},
    "styled_bg": {"en": "Only the background is styled; the person is as in the photo.",
                  "zh": "只为背景添加了风格，人物保持原样。"},
    "styled_faces": {"en": "Styled everywhere but the faces, which are as in the photo.",
                     "zh": "除面部外都添加了风格，面部保持原样。"},
    "styled_regions": {"en": "Styled: {regions}.", "zh": "已处理的区域：{regions}。"},
    "kept_regions": {"en": "Kept as in the photo: {regions}.", "zh": "保持原样：{regions}。"},
    "btn_prev": {"en": "◀", "zh": "◀"},
    "btn_next": {"en": "▶", "zh": "▶"},
    "btn_yes_forget": {"en": "Yes, delete everything", "zh": "是的，全部删除"},
    "btn_no": {"en": "No, keep it", "zh": "不，保留"},
    "btn_cancel": {"en": "✖ Cancel", "zh": "✖ 取消"},
    "set_keep": {"en": "🌈 Keep colours: {value}", "zh": "🌈 保留原色：{value}"},
    "set_stroke": {"en": "🖌 {value}", "zh": "🖌 {value}"},
    # stroke sizes (stylejax.stroke.STROKES): how big the style's texture is in the picture
    "stroke_small": {"en": "small", "zh": "细"},
    "stroke_medium": {"en": "medium", "zh": "中"},
    "stroke_large": {"en": "large", "zh": "粗"},
    "language_name": {"en": "English", "zh": "中文"},
    "not_yours": {"en": "Those buttons belong to someone else's picture.",
                  "zh": "这些按钮属于别人的图片。"},
    "expired_button": {"en": "That button has expired; please send the photo again.",
                       "zh": "该按钮已失效，请重新发送照片。"},
    # -- custom style --
    "custom_send_photo": {"en": "Send the photo to stylize.", "zh": "请发送要处理的照片。"},
    "custom_send_style": {"en": "Now send the style picture (a painting, a texture…).",
                          "zh": "现在请发送风格图片（一幅画、一种纹理……）。"},
    "custom_working": {"en": "🎨 Learning your style… this takes about half a minute.",
                       "zh": "🎨 正在学习你的风格……大约需要半分钟。"},
    "custom_working_instant": {"en": "🎨 Painting your photo in that style… a few seconds.",
                               "zh": "🎨 正在用这种风格绘制你的照片……只需几秒。"},
    # -- settings and data --
    "settings": {
        "en": ("Your settings:\nDefault strength: {strength}%\nStroke size: {stroke}\n"
               "Keep colours: {keep}\nOutput: {output}\nLanguage: {language}"),
        "zh": ("你的设置：\n默认强度：{strength}%\n笔触大小：{stroke}\n保留原色：{keep}\n"
               "输出方式：{output}\n语言：{language}"),
    },
    "settings_saved": {"en": "Saved.", "zh": "已保存。"},
    "yes": {"en": "yes", "zh": "是"},
    "no": {"en": "no", "zh": "否"},
    "output_photo": {"en": "photo", "zh": "图片"},
    "output_file": {"en": "file", "zh": "文件"},
    "history_empty": {"en": "No pictures yet. Send me a photo!",
                      "zh": "还没有图片。发一张照片给我吧！"},
    "history": {"en": "Your last pictures:", "zh": "你最近的图片："},
    "history_line": {"en": "{when} — {style}, {strength}% — {state}",
                     "zh": "{when} — {style}，{strength}% — {state}"},
    "forget_confirm": {"en": "Delete all your pictures and settings? This cannot be undone.",
                       "zh": "删除你的所有图片和设置？此操作无法撤销。"},
    "forgotten": {"en": "Done: your data has been deleted.", "zh": "完成：你的数据已删除。"},
    "forget_kept": {"en": "Nothing was deleted.", "zh": "没有删除任何内容。"},
    # -- errors --
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
    "queue_full": {
        "en": "I'm very busy right now: {count} pictures are already waiting. "
              "Please try again in {seconds} s.",
        "zh": "现在非常繁忙：已有 {count} 张图片在排队。请在 {seconds} 秒后再试。",
    },
    "not_an_image": {"en": "That is not a picture I can read. Send a JPEG, PNG or WebP photo.",
                     "zh": "无法读取该文件。请发送 JPEG、PNG 或 WebP 格式的照片。"},
    "not_a_photo_message": {
        "en": "I can paint photos and short videos. Send me a picture (a photo or an image "
              "file), a video or a GIF.",
        "zh": "我可以处理照片和短视频。请发送一张图片（照片或图片文件）、一段视频或一个 GIF。",
    },
    "not_a_video": {
        "en": "That file is not a video or animated picture I can read. Send an MP4, MOV, "
              "WebM or MKV clip, or an animated GIF / WebP.",
        "zh": "无法读取该视频或动图。请发送 MP4、MOV、WebM、MKV 视频，或 GIF / WebP 动图。",
    },
    "video_corrupt": {"en": "That video seems damaged or cut short; please send it again.",
                      "zh": "该视频似乎已损坏或不完整，请重新发送。"},
    "video_unsupported": {"en": "{detail}",
                          "zh": "无法处理该文件（例如只有声音没有画面，或编码不受支持）：{detail}"},
    "video_too_long": {"en": "{detail}", "zh": "视频太长了：{detail}"},
    "video_too_large": {"en": "{detail}", "zh": "视频太大了：{detail}"},
    "file_too_big": {"en": "That file is too big ({size_mb} MB); the limit is {limit_mb} MB.",
                     "zh": "文件太大（{size_mb} MB），上限为 {limit_mb} MB。"},
    "too_large": {"en": "That picture is too large: {detail}", "zh": "图片太大：{detail}"},
    "too_small": {"en": "That picture is too small; send one at least 32 pixels wide.",
                  "zh": "图片太小，请发送宽度至少 32 像素的图片。"},
    "unknown_style": {"en": "{detail} Use /styles to see them.",
                      "zh": "{detail} 用 /styles 查看全部风格。"},
    "quota": {"en": "Your storage is full: delete old pictures with 🗑 under a result, "
                    "/forget to delete all, or wait for them to expire.",
              "zh": "你的存储空间已满：请用结果下方的 🗑 删除旧图片，"
                    "用 /forget 删除全部，或等待其过期。"},
    "job_gone": {"en": "That picture is no longer available.", "zh": "该图片已不存在。"},
    # -- a styled region the worker did not find (English: stylejax.compose's own text) --
    "no_region_person": {"en": NOT_FOUND["person"],
                         "zh": "这张照片里没有找到人物，无法只给人物加风格。请给整张照片、"
                               "背景或天空加风格。"},
    "no_region_clothing": {"en": NOT_FOUND["clothing"],
                           "zh": "这张照片里没有找到衣服：需要能看到人物的脸才能找到衣服。"
                                 "请给人物或整张照片加风格。"},
    "no_region_face": {"en": NOT_FOUND["face"], "zh": "这张照片里没有找到人脸。"},
    "no_region_sky": {"en": NOT_FOUND["sky"],
                      "zh": "这张照片里没有找到天空（能识别白天的蓝天或阴天）。请给背景加风格。"},
    "no_region_background": {"en": NOT_FOUND["background"],
                             "zh": "人物占满了整张照片：没有可以加风格的背景。"},
    "no_region_mask": {"en": NOT_FOUND["mask"],
                       "zh": "蒙版全是黑色：没有要加风格的地方。白色区域会加上风格。"},
}


def job_error_text(error: str, lang: str | None = "en") -> str:
    """A failed job's stored reason in the user's language, where it is one we know (the
    worker stores the English text)."""
    for region, text in NOT_FOUND.items():
        if error == text:
            return t(f"no_region_{region}", lang)
    return error


def language_of(code: str | None) -> str:
    """A client's language code (e.g. Telegram's 'zh-hans', 'en-GB') → a supported language."""
    if not code:
        return "en"
    base = code.lower().replace("_", "-").split("-")[0]
    return base if base in SUPPORTED else "en"


def ordinal(n: int, lang: str | None = "en") -> str:
    """A place number in the user's language: 1st, 2nd, 3rd, 4th, 11th, 21st… in English,
    第 3 in Chinese (every message then has the same placeholders in every language)."""
    if language_of(lang) == "zh":
        return f"第 {n} "
    if 11 <= n % 100 <= 13:
        return f"{n}th"
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def t(message_id: str, lang: str | None = "en", **values: Any) -> str:
    """The message in the user's language (English when missing), with values filled in."""
    texts = MESSAGES[message_id]
    return texts.get(language_of(lang), texts["en"]).format(**values)
