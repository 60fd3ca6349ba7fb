// StyleJAX web page: plain ES module over the HTTP API (/api/v1), no build step.
//
// Flow: choose a photo (file, drop, paste or camera) → choose a style (gallery or own picture) →
// POST /api/v1/jobs → follow the job (server-sent events, polling as fallback) → fetch the PNG
// → before/after compare + download. After a first result, changing the strength, stroke size,
// colours, style or photo re-runs by itself (debounced); the superseded job is cancelled.

const API = "/api/v1";
const RERUN_DELAY_MS = 700;
const POLL_MS = 800;
const CUSTOM = "__custom__";

const TEXT = {
  en: {
    skip: "Skip to the tool",
    tagline: "Turn a photo into a painting in a few seconds.",
    photo_heading: "Your photo",
    drop: "Drop a photo here or <u>choose a file</u>",
    drop_again: "Drop another photo or <u>choose a file</u>",
    tap: "<u>Choose a photo</u>",
    tap_again: "<u>Choose another photo</u>",
    camera: "Take a photo",
    style_heading: "Choose a style",
    loading_styles: "Loading styles…",
    custom_style: "Your own style picture",
    custom_hint: "A painting or a texture · about 30 s",
    custom_hint_instant: "A painting or a texture · in seconds",
    custom_choose: "Choose a style picture",
    refine: "Refine (slower, ~30 s)",
    options_heading: "Adjust",
    strength: "Strength",
    subtle: "subtle",
    strong: "strong",
    stroke: "Stroke size",
    stroke_small: "small",
    stroke_medium: "medium",
    stroke_large: "large",
    stroke_hint: "How big the brush marks are in the picture.",
    keep_colors: "Keep my photo’s colours",
    keep_colors_hint: "Take only brush strokes and texture from the style.",
    api_key: "API key",
    api_key_hint: "This server needs a key; ask its owner.",
    stylize: "Stylize",
    restylize: "Stylize again",
    cancel: "Cancel",
    result_heading: "Before / after",
    download: "Download",
    placeholder: "Your photo and its painted version will appear here.",
    before: "Before",
    after: "After",
    compare: "Compare before and after: more of the original to the right",
    footer: "Pictures are kept on this server for a few days, then deleted.",
    limit_hint: "JPEG, PNG, WebP or GIF, up to {limit}.",
    any_hint: "JPEG, PNG, WebP or GIF.",
    too_big: "“{name}” is {size}; the limit is {limit}. Please choose a smaller picture.",
    not_image: "“{name}” is not a picture ({type}). Please choose a JPEG, PNG, WebP or GIF photo.",
    no_preview: "This browser cannot show “{name}”; it may not be a picture. The server will check it.",
    need_photo: "First choose a photo (step 1).",
    need_style: "Choose a style (step 2).",
    need_style_image: "Choose your style picture (step 2), or pick a style from the gallery.",
    styles_failed: "The styles could not be loaded: {reason}",
    uploading: "Uploading…",
    queued: "Waiting in the queue…",
    queue_next: "Next in line",
    queue_place: "{ordinal} in line",
    queue_wait: "{place}…",
    queue_about: "{place}, about {eta}",
    seconds: "{n} s",
    minutes: "{n} min",
    running: "Painting… {percent}%",
    running_custom: "Learning your style… {percent}%",
    fetching: "Almost there…",
    done: "Done: {style}, strength {strength}%, {stroke} strokes.",
    cancelled: "Cancelled.",
    failed: "Sorry, that did not work: {reason}",
    gone: "That picture is no longer on the server; please stylize again.",
    network: "The server cannot be reached. Check that it is running, then try again.",
    http_error: "The server answered {status}.",
    retry_after: "{message} (try again in {seconds} s)",
    your_photo: "Your photo",
    your_result: "Your photo in the style of {style}",
    video_chosen: "A video: it is painted frame by frame (pack styles only), with its sound.",
    video_too_big: "“{name}” is {size}; videos may be up to {limit}. Please choose a shorter clip.",
    video_custom: "Videos can be painted with the gallery's styles only.",
    your_video: "Your video in the style of {style}",
    your_style: "your picture",
    where: "Where",
    where_everywhere: "everywhere",
    where_person: "person only",
    where_background: "background only",
    where_clothing: "clothing only",
    where_keep_faces: "keep faces",
    where_hint: "Style the whole photo or only part of it.",
    region_show: "Show the region",
    brush: "Brush",
    brush_paint: "paint",
    brush_erase: "erase",
    brush_size: "Brush size",
    brush_reset: "Undo my painting",
    overlay: "The region the style goes to; paint or erase it with the brush",
    region_loading: "Finding the region…",
    region_shown: "Tinted: where the style goes. Paint or erase on the photo to change it.",
    region_shown_keep: "Tinted: what stays as in the photo. Paint or erase to change it.",
    region_painted: "Your painted mask is sent with the job.",
    region_empty: "Nothing of that kind was found in this photo; paint the region by hand.",
    region_failed: "The region could not be previewed: {reason}",
    region_video: "Videos are styled everywhere.",
    model_chosen: "A 3D model: shown in the viewer here. Choose a style and press Stylize: its textures are painted and the styled model is shown here in 3D.",
    model_custom: "3D models can be painted with the gallery's styles only.",
    model_too_big: "“{name}” is {size}; a model shown here may be up to {limit}.",
    viewer: "A 3D model: drag to turn it, scroll or pinch to zoom",
    viewer_failed: "The 3D viewer could not be loaded: {reason}",
  },
  zh: {
    skip: "跳到工具",
    tagline: "几秒钟把照片变成一幅画。",
    photo_heading: "你的照片",
    drop: "把照片拖到这里，或<u>选择文件</u>",
    drop_again: "拖入另一张照片，或<u>选择文件</u>",
    tap: "<u>选择照片</u>",
    tap_again: "<u>换一张照片</u>",
    camera: "拍照",
    style_heading: "选择风格",
    loading_styles: "正在加载风格……",
    custom_style: "使用自己的风格图片",
    custom_hint: "一幅画或一种纹理 · 约 30 秒",
    custom_hint_instant: "一幅画或一种纹理 · 几秒即成",
    custom_choose: "选择风格图片",
    refine: "精修（较慢，约 30 秒）",
    options_heading: "调整",
    strength: "强度",
    subtle: "轻微",
    strong: "强烈",
    stroke: "笔触大小",
    stroke_small: "细",
    stroke_medium: "中",
    stroke_large: "粗",
    stroke_hint: "画面中笔触的大小。",
    keep_colors: "保留照片原色",
    keep_colors_hint: "只采用风格的笔触和纹理。",
    api_key: "API 密钥",
    api_key_hint: "此服务器需要密钥，请向管理员索取。",
    stylize: "生成",
    restylize: "重新生成",
    cancel: "取消",
    result_heading: "前后对比",
    download: "下载",
    placeholder: "你的照片和生成的画作会显示在这里。",
    before: "原图",
    after: "效果",
    compare: "前后对比：向右显示更多原图",
    footer: "图片在服务器上保存几天后删除。",
    limit_hint: "JPEG、PNG、WebP 或 GIF，最大 {limit}。",
    any_hint: "JPEG、PNG、WebP 或 GIF。",
    too_big: "“{name}”大小为 {size}，上限是 {limit}。请选择更小的图片。",
    not_image: "“{name}”不是图片（{type}）。请选择 JPEG、PNG、WebP 或 GIF 照片。",
    no_preview: "浏览器无法显示“{name}”，它可能不是图片。服务器会再检查。",
    need_photo: "请先选择一张照片（第 1 步）。",
    need_style: "请选择一种风格（第 2 步）。",
    need_style_image: "请选择你的风格图片（第 2 步），或从画廊中选择一种风格。",
    styles_failed: "无法加载风格：{reason}",
    uploading: "正在上传……",
    queued: "排队中……",
    queue_next: "下一个就轮到你",
    queue_place: "排在第 {position} 位",
    queue_wait: "{place}……",
    queue_about: "{place}，大约 {eta}",
    seconds: "{n} 秒",
    minutes: "{n} 分钟",
    running: "正在绘制…… {percent}%",
    running_custom: "正在学习你的风格…… {percent}%",
    fetching: "马上就好……",
    done: "完成：{style}，强度 {strength}%，笔触{stroke}。",
    cancelled: "已取消。",
    failed: "抱歉，处理失败：{reason}",
    gone: "服务器上已没有这张图片，请重新生成。",
    network: "无法连接服务器。请确认服务器正在运行，然后重试。",
    http_error: "服务器返回 {status}。",
    retry_after: "{message}（{seconds} 秒后再试）",
    your_photo: "你的照片",
    your_result: "你的照片，风格：{style}",
    video_chosen: "视频：将逐帧绘制（仅限图库风格），并保留声音。",
    video_too_big: "“{name}”大小为 {size}，视频上限是 {limit}。请选择更短的片段。",
    video_custom: "视频只能使用图库中的风格。",
    your_video: "你的视频，风格：{style}",
    your_style: "你的图片",
    where: "范围",
    where_everywhere: "全部",
    where_person: "只有人物",
    where_background: "只有背景",
    where_clothing: "只有衣服",
    where_keep_faces: "保留面部",
    where_hint: "给整张照片或只给一部分加上风格。",
    region_show: "显示区域",
    brush: "画笔",
    brush_paint: "涂抹",
    brush_erase: "擦除",
    brush_size: "画笔大小",
    brush_reset: "撤销我的涂抹",
    overlay: "风格所在的区域；用画笔涂抹或擦除",
    region_loading: "正在寻找区域……",
    region_shown: "着色部分：风格所在之处。在照片上涂抹或擦除即可修改。",
    region_shown_keep: "着色部分：保持原样的地方。涂抹或擦除即可修改。",
    region_painted: "你涂抹的遮罩会随任务一起发送。",
    region_empty: "这张照片里没有找到这类区域；请用画笔手动涂抹。",
    region_failed: "无法预览区域：{reason}",
    region_video: "视频只能整体加风格。",
    model_chosen: "3D 模型：在这里的查看器中显示。选择风格并点击“生成”：模型的纹理会被加上风格，结果在这里以 3D 显示。",
    model_custom: "3D 模型只能使用图库中的风格。",
    model_too_big: "“{name}”大小为 {size}；这里显示的模型最大 {limit}。",
    viewer: "3D 模型：拖动旋转，滚动或捏合缩放",
    viewer_failed: "无法加载 3D 查看器：{reason}",
  },
};

const LANG = (navigator.languages?.length ? navigator.languages : [navigator.language || "en"])
  .map((l) => l.toLowerCase().slice(0, 2))
  .find((l) => l in TEXT) || "en";

function t(key, vars = {}) {
  const text = TEXT[LANG][key] ?? TEXT.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

// Phones and tablets: no drag and drop to speak of, but a camera.
const TOUCH = window.matchMedia("(pointer: coarse)").matches;

const $ = (id) => document.getElementById(id);
const el = {
  form: $("controls"), photo: $("photo"), camera: $("camera"), cameraButton: $("camera-button"),
  dropzone: $("dropzone"), photoName: $("photo-name"), photoHint: $("photo-hint"),
  gallery: $("gallery"), customRadio: $("style-custom"), customPicker: $("custom-picker"),
  styleImage: $("style-image"), styleImageName: $("style-image-name"), refine: $("refine"),
  customPreview: $("custom-preview"), strength: $("strength"), strengthValue: $("strength-value"),
  keepColors: $("keep-colors"), apiKeyBox: $("api-key-box"), apiKey: $("api-key"),
  go: $("go"), cancel: $("cancel"), message: $("message"), stage: $("stage"),
  placeholder: $("placeholder"), compare: $("compare"), before: $("before"), after: $("after"),
  split: $("split"), progressBox: $("progress-box"), progress: $("progress"),
  progressBar: $("progress-bar"), status: $("status"), download: $("download"),
  resultPanel: $("result-panel"), video: $("result-video"),
  whereField: $("where-field"), brushTools: $("brush-tools"), regionShow: $("region-show"),
  brushSize: $("brush-size"), brushReset: $("brush-reset"), regionStatus: $("region-status"),
  overlay: $("region-overlay"), viewerBox: $("viewer-box"), viewer: $("viewer"),
};

const state = {
  maxUpload: null,          // bytes, from GET /api/v1/config
  maxVideo: null,           // bytes of a video upload, from the same
  maxModel: null,           // bytes of a 3D model upload, from the same
  photoIsVideo: false,      // the chosen file is a clip (shown in the <video> element)
  apiKeyRequired: false,
  styles: [],
  photo: null,              // File
  photoVersion: 0,          // bumped on every new photo / style picture (re-run keys)
  styleVersion: 0,
  shownKey: null,           // the choices behind the result on screen
  photoUrl: null,
  styleImage: null,         // File
  styleImageUrl: null,
  job: null,                // the job being followed: {id, statusUrl, resultUrl, styleName, …}
  resultUrl: null,
  hasResult: false,
  rerunTimer: null,
  lastAnnounced: -1,
  // the region preview / hand-painted mask (drawn on el.overlay at the mask's own size)
  regionFor: null,          // "photoVersion|where" of the mask on the overlay
  regionRequest: 0,         // bumped per preview request: a late answer is dropped
  maskEdited: false,        // the user painted or erased: the mask travels with the job
  maskVersion: 0,           // bumped per brush stroke (re-run keys)
  photoIsModel: false,      // the chosen file is a .glb: shown in the 3D viewer
  modelUrl: null,
};

// -- small helpers --------------------------------------------------------------------------------
function formatBytes(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e7 ? 0 : 1)} MB`;
  if (n >= 1e3) return `${Math.round(n / 1e3)} kB`;
  return `${n} B`;
}

function headers() {
  const key = el.apiKey.value.trim();
  return key ? { "X-API-Key": key } : {};
}

/** The server's `{"error": …}` message for a failed response, or a generic one. */
async function errorText(resp) {
  let message = t("http_error", { status: resp.status });
  try {
    const body = await resp.json();
    if (body && typeof body.error === "string" && body.error) message = body.error;
  } catch { /* not JSON: keep the generic text */ }
  const retry = resp.headers.get("Retry-After");
  if ((resp.status === 429 || resp.status === 503) && retry && !message.includes(`${retry} s`)) {
    message = t("retry_after", { message, seconds: retry });
  }
  if (resp.status === 401) el.apiKeyBox.hidden = false;
  return message;
}

function showMessage(text, kind = "error") {
  el.message.textContent = text;
  el.message.className = `message ${kind}`;
  el.message.hidden = !text;
}

function clearMessage() {
  showMessage("");
}

function setStatus(text) {
  el.status.textContent = text;
}

const ORDINAL_SUFFIX = { one: "st", two: "nd", few: "rd", other: "th" };
const ordinalRule = new Intl.PluralRules("en", { type: "ordinal" });

/** An estimate in words, rounded up: 5 s steps under a minute, then minutes ("about 40 s"). */
function about(seconds) {
  if (seconds < 60) return t("seconds", { n: Math.ceil(seconds / 5) * 5 });
  return t("minutes", { n: Math.ceil(seconds / 60) });
}

/** "3rd in line, about 40 s" from a job's `queue_position` and `eta_s` (either may be null). */
function queueText(ev) {
  const position = ev.queue_position;
  if (!position) return t("queued");
  const ordinal = `${position}${ORDINAL_SUFFIX[ordinalRule.select(position)]}`;
  const place = position === 1 ? t("queue_next") : t("queue_place", { position, ordinal });
  return ev.eta_s ? t("queue_about", { place, eta: about(ev.eta_s) }) : t("queue_wait", { place });
}

function setProgress(fraction) {
  const percent = Math.max(0, Math.min(100, Math.round(fraction * 100)));
  el.progressBar.style.width = `${percent}%`;
  el.progress.setAttribute("aria-valuenow", String(percent));
  return percent;
}

function setBusy(busy) {
  el.stage.setAttribute("aria-busy", String(busy));
  el.progressBox.hidden = !busy;
  el.cancel.hidden = !busy;
  el.stage.dataset.busy = busy ? "yes" : "no";
}

function selectedStyle() {
  return el.form.querySelector('input[name="style"]:checked')?.value ?? null;
}

/** "small" | "medium" | "large": the stroke size sent with the job (the API's preset names). */
function selectedStroke() {
  return el.form.querySelector('input[name="stroke"]:checked')?.value ?? "medium";
}

function styleDisplayName(id) {
  if (id === CUSTOM) return t("your_style");
  const s = state.styles.find((x) => x.id === id);
  return s ? (s.names?.[LANG] || s.names?.en || s.name || s.id) : id;
}

// -- i18n of the static page ------------------------------------------------------------------------
function translatePage() {
  document.documentElement.lang = LANG === "zh" ? "zh-CN" : "en";
  for (const node of document.querySelectorAll("[data-i18n]")) {
    node.innerHTML = t(node.dataset.i18n);  // our own constant strings only
  }
  for (const node of document.querySelectorAll("[data-i18n-aria]")) {
    node.setAttribute("aria-label", t(node.dataset.i18nAria));
  }
}

// -- config and styles ----------------------------------------------------------------------------
async function loadConfig() {
  try {
    const resp = await fetch(`${API}/config`);
    if (resp.ok) {
      const config = await resp.json();
      state.maxUpload = Number(config.max_upload_bytes) || null;
      state.maxVideo = Number(config.max_video_bytes) || null;
      state.maxModel = Number(config.max_model_bytes) || null;
      state.apiKeyRequired = Boolean(config.api_key_required);
      state.instantCustom = Boolean(config.instant_custom_style);
    }
  } catch { /* older server without /config: the server still checks sizes */ }
  if (state.instantCustom) {  // the server has the any-style model: no 30-s wait
    for (const node of document.querySelectorAll('[data-i18n="custom_hint"]')) {
      node.dataset.i18n = "custom_hint_instant";
      node.textContent = t("custom_hint_instant");
    }
  }
  el.photoHint.textContent = state.maxUpload
    ? t("limit_hint", { limit: formatBytes(state.maxUpload) }) : t("any_hint");
  el.apiKeyBox.hidden = !state.apiKeyRequired;
  if (state.apiKeyRequired) el.apiKeyBox.open = true;
}

function splitName(name) {
  // "Starry Night (van Gogh)" → ["Starry Night", "van Gogh"]; also full-width brackets.
  const m = name.match(/^(.*?)\s*[(（](.*)[)）]\s*$/);
  return m ? [m[1], m[2]] : [name, ""];
}

async function loadStyles() {
  let styles;
  try {
    const resp = await fetch(`${API}/styles`, { headers: { ...headers() } });
    if (!resp.ok) throw new Error(await errorText(resp));
    styles = await resp.json();
  } catch (err) {
    el.gallery.setAttribute("aria-busy", "false");
    el.gallery.innerHTML = "";
    const p = document.createElement("p");
    p.className = "message error";
    p.textContent = t("styles_failed", { reason: err instanceof TypeError ? t("network") : err.message });
    el.gallery.append(p);
    return;
  }
  state.styles = styles;
  const items = styles.map((s, i) => {
    const wrap = document.createElement("div");
    wrap.className = "style-option";
    const input = document.createElement("input");
    Object.assign(input, { type: "radio", name: "style", id: `style-${s.id}`, value: s.id });
    input.className = "visually-hidden";
    if (i === 0) input.checked = true;
    const label = document.createElement("label");
    label.htmlFor = input.id;
    const [title, artist] = splitName(styleDisplayName(s.id));
    if (s.thumbnail_url) {
      const img = document.createElement("img");
      Object.assign(img, { src: s.thumbnail_url, alt: "", loading: "lazy", decoding: "async",
                           width: 128, height: 96 });
      label.append(img);
    } else {
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.setAttribute("aria-hidden", "true");
      label.append(swatch);
    }
    const name = document.createElement("span");
    name.className = "style-name";
    name.textContent = title;
    label.append(name);
    if (artist) {
      const by = document.createElement("span");
      by.className = "style-artist";
      by.textContent = artist;
      label.append(by);
    }
    wrap.append(input, label);
    return wrap;
  });
  el.gallery.replaceChildren(...items);
  el.gallery.setAttribute("aria-busy", "false");
  el.gallery.dataset.count = String(styles.length);
}

// -- choosing pictures ------------------------------------------------------------------------------
/** A clear message for a file the page can already tell is unusable, or null. */
function isClip(file) {
  return Boolean(file.type) && file.type.startsWith("video/");
}

function fileProblem(file, { video = false } = {}) {
  if (video && isClip(file)) {
    return state.maxVideo && file.size > state.maxVideo
      ? t("video_too_big", { name: file.name, size: formatBytes(file.size),
                             limit: formatBytes(state.maxVideo) })
      : null;
  }
  if (state.maxUpload && file.size > state.maxUpload) {
    return t("too_big", { name: file.name, size: formatBytes(file.size),
                          limit: formatBytes(state.maxUpload) });
  }
  if (file.type && !file.type.startsWith("image/")) {
    return t("not_image", { name: file.name, type: file.type });
  }
  return null;
}

function setPhoto(file) {
  if (!file) return;
  clearMessage();
  if (isModel(file)) {
    showModelFile(file);
    return;
  }
  const problem = fileProblem(file, { video: true });
  if (problem) {
    showMessage(problem);
    el.photo.value = "";
    el.camera.value = "";
    return;
  }
  state.photoIsVideo = isClip(file);
  state.photoIsModel = false;
  hideViewer();
  const live = state.hasResult || Boolean(state.job);  // re-run for the new photo too
  cancelJob();
  state.photo = file;
  state.photoVersion += 1;
  if (state.photoUrl) URL.revokeObjectURL(state.photoUrl);
  state.photoUrl = URL.createObjectURL(file);
  el.photoName.textContent = `${file.name || t("your_photo")} · ${formatBytes(file.size)}`;
  el.dropzone.classList.add("has-photo");
  el.dropzone.querySelector(".dz-main").innerHTML = t(TOUCH ? "tap_again" : "drop_again");
  el.before.onerror = () => {
    if (state.photo !== file) return;
    showMessage(t("no_preview", { name: file.name }), "warning");
    el.compare.hidden = true;  // no broken-image icon: the server will judge the file
    el.placeholder.hidden = false;
    el.stage.dataset.state = "empty";
  };
  el.before.onload = () => {
    if (!state.hasResult) setRatio(el.before.naturalWidth, el.before.naturalHeight);
  };
  // A new photo: its old result no longer applies.
  state.hasResult = false;
  el.download.hidden = true;
  el.after.removeAttribute("src");
  el.stage.dataset.state = "photo";
  el.placeholder.hidden = true;
  if (state.photoIsVideo) {  // a clip: previewed (then its result played) in <video>
    el.before.removeAttribute("src");
    el.compare.hidden = true;
    showVideo(state.photoUrl);
    showMessage(t("video_chosen"), "warning");
  } else {
    el.before.src = state.photoUrl;
    el.before.alt = t("your_photo");
    hideVideo();
    el.compare.hidden = false;
  }
  el.go.textContent = t("stylize");
  setStatus("");
  resetRegion();
  if (live) state.rerunTimer = setTimeout(() => run({ auto: true }), RERUN_DELAY_MS);
}

function setStyleImage(file) {
  if (!file) return;
  clearMessage();
  const problem = fileProblem(file);
  if (problem) {
    showMessage(problem);
    el.styleImage.value = "";
    return;
  }
  state.styleImage = file;
  state.styleVersion += 1;
  if (state.styleImageUrl) URL.revokeObjectURL(state.styleImageUrl);
  state.styleImageUrl = URL.createObjectURL(file);
  el.styleImageName.textContent = `${file.name} · ${formatBytes(file.size)}`;
  el.customPreview.textContent = "";
  el.customPreview.style.backgroundImage = `url("${state.styleImageUrl}")`;
  el.customPreview.classList.add("filled");
  el.customRadio.checked = true;
  el.customPicker.hidden = false;
  scheduleRerun();
}

function showStrength() {
  el.strengthValue.textContent = `${el.strength.value}%`;
  el.strength.setAttribute("aria-valuetext", `${el.strength.value}%`);
}

function setRatio(w, h) {
  if (w > 0 && h > 0) el.compare.style.setProperty("--ratio", `${w} / ${h}`);
}

// -- where the style goes: region choice, its preview overlay and the brush ----------------------------
// The overlay canvas holds the mask at the preview's size (≤ 512 px): accent colour, alpha = the
// mask (255 = in the region). Painting adds alpha, erasing removes it; once painted, the mask
// itself travels with the job (regions=mask or keep=mask, plus a grey PNG `mask` file).
const OVERLAY_RGB = [79, 70, 229];
const MIN_COVERAGE = 0.002;  // as the server's "not found" (stylejax/compose.py MIN_AREA)
const MASK_SIDE = 512;

function selectedWhere() {
  return el.form.querySelector('input[name="where"]:checked')?.value ?? "everywhere";
}

function regionActive(where = selectedWhere()) {
  return where !== "everywhere" && Boolean(state.photo) && !state.photoIsVideo
    && !state.photoIsModel;
}

/** The job's region fields for a choice: {} (everywhere), {regions: "person"}, {keep: "faces"};
 *  with a painted mask the region is "mask" (the file is added by `appendRegion`). */
function regionFields(where) {
  if (where === "everywhere") return {};
  const keep = where === "keep-faces";
  const name = state.maskEdited ? "mask" : (keep ? "faces" : where);
  return keep ? { keep: name } : { regions: name };
}

async function appendRegion(form, where) {
  if (where === "everywhere") return;
  for (const [name, value] of Object.entries(regionFields(where))) form.append(name, value);
  if (state.maskEdited) form.append("mask", await maskBlob(), "mask.png");
}

function overlayContext() {
  return el.overlay.getContext("2d", { willReadFrequently: true });
}

/** The painted mask as a grey PNG (white = the region), at the overlay's size. */
function maskBlob() {
  const { width, height } = el.overlay;
  const src = overlayContext().getImageData(0, 0, width, height).data;
  const out = new ImageData(width, height);
  for (let i = 0; i < src.length; i += 4) {
    out.data[i] = out.data[i + 1] = out.data[i + 2] = src[i + 3];
    out.data[i + 3] = 255;
  }
  const canvas = document.createElement("canvas");
  Object.assign(canvas, { width, height });
  canvas.getContext("2d").putImageData(out, 0, 0);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

/** Put a grey mask picture (ImageBitmap), or an empty mask of w×h, on the overlay. */
function drawMask(bitmap, w, h) {
  const canvas = el.overlay;
  canvas.width = bitmap ? bitmap.width : w;
  canvas.height = bitmap ? bitmap.height : h;
  const ctx = overlayContext();
  ctx.globalCompositeOperation = "source-over";
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!bitmap) return;
  ctx.drawImage(bitmap, 0, 0);
  const img = ctx.getImageData(0, 0, canvas.width, canvas.height);
  const d = img.data;
  for (let i = 0; i < d.length; i += 4) {
    d[i + 3] = d[i];
    [d[i], d[i + 1], d[i + 2]] = OVERLAY_RGB;
  }
  ctx.putImageData(img, 0, 0);
}

function blankMask() {
  const w = el.before.naturalWidth || 4;
  const h = el.before.naturalHeight || 3;
  const scale = Math.min(1, MASK_SIDE / Math.max(w, h));
  drawMask(null, Math.max(1, Math.round(w * scale)), Math.max(1, Math.round(h * scale)));
}

function updateOverlay() {
  const active = regionActive();
  el.brushTools.hidden = !active;
  el.overlay.hidden = !(active && el.regionShow.checked && state.regionFor !== null);
  el.stage.dataset.overlay = el.overlay.hidden ? "no" : "yes";
}

/** A new photo or no photo: forget the mask; videos and models are styled everywhere. */
function resetRegion() {
  state.regionFor = null;
  state.maskEdited = false;
  state.regionRequest += 1;
  el.whereField.disabled = state.photoIsVideo || state.photoIsModel;
  el.regionStatus.textContent = "";
  el.regionShow.checked = true;
  showRegion();
}

/** Ask the server for the chosen region's mask of this photo and draw it on the overlay. */
async function showRegion({ force = false } = {}) {
  const where = selectedWhere();
  updateOverlay();
  if (!regionActive(where)) {
    el.stage.dataset.region = "";
    return;
  }
  const forKey = `${state.photoVersion}|${where}`;
  if (state.regionFor === forKey && !force) return;
  state.maskEdited = false;
  const request = ++state.regionRequest;
  el.regionStatus.textContent = t("region_loading");
  el.stage.dataset.region = "loading";
  const form = new FormData();
  form.append("image", state.photo, state.photo.name || "photo.jpg");
  form.append("region", where === "keep-faces" ? "faces" : where);
  let bitmap = null;
  let coverage = 1;
  let problem = null;
  try {
    const resp = await fetch(`${API}/regions/preview`, { method: "POST", body: form,
                                                         headers: headers() });
    if (!resp.ok) throw new Error(await errorText(resp));
    coverage = Number(resp.headers.get("X-Region-Coverage") ?? 1);
    bitmap = await createImageBitmap(await resp.blob());
  } catch (err) {
    problem = err instanceof TypeError ? t("network") : err.message;
  }
  if (request !== state.regionRequest) return;  // another photo or region meanwhile
  if (bitmap) drawMask(bitmap);
  else blankMask();  // the brush still works; the server finds the region itself
  state.regionFor = forKey;
  el.stage.dataset.region = problem ? "failed" : "shown";
  el.regionStatus.textContent = problem ? t("region_failed", { reason: problem })
    : coverage < MIN_COVERAGE ? t("region_empty")
      : t(where === "keep-faces" ? "region_shown_keep" : "region_shown");
  updateOverlay();
}

const brush = { down: false, last: null };

function brushPoint(ev) {
  const r = el.overlay.getBoundingClientRect();
  return { x: (ev.clientX - r.left) * (el.overlay.width / r.width),
           y: (ev.clientY - r.top) * (el.overlay.height / r.height),
           scale: el.overlay.width / r.width };
}

function brushStroke(ev) {
  const p = brushPoint(ev);
  const ctx = overlayContext();
  const erase = el.form.querySelector('input[name="brush"]:checked')?.value === "erase";
  ctx.globalCompositeOperation = erase ? "destination-out" : "source-over";
  ctx.fillStyle = ctx.strokeStyle = `rgb(${OVERLAY_RGB.join(",")})`;
  ctx.lineWidth = Number(el.brushSize.value) * p.scale;
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.beginPath();
  if (brush.last) {
    ctx.moveTo(brush.last.x, brush.last.y);
    ctx.lineTo(p.x, p.y);
    ctx.stroke();
  } else {
    ctx.arc(p.x, p.y, ctx.lineWidth / 2, 0, 2 * Math.PI);
    ctx.fill();
  }
  brush.last = p;
}

function wireBrush() {
  el.overlay.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0) return;
    ev.preventDefault();
    el.overlay.setPointerCapture(ev.pointerId);
    brush.down = true;
    brush.last = null;
    brushStroke(ev);
  });
  el.overlay.addEventListener("pointermove", (ev) => {
    if (brush.down) brushStroke(ev);
  });
  const end = () => {
    if (!brush.down) return;
    brush.down = false;
    brush.last = null;
    state.maskEdited = true;
    state.maskVersion += 1;
    el.regionStatus.textContent = t("region_painted");
    el.stage.dataset.region = "painted";
    scheduleRerun();
  };
  el.overlay.addEventListener("pointerup", end);
  el.overlay.addEventListener("pointercancel", end);
  el.regionShow.addEventListener("change", updateOverlay);
  el.brushReset.addEventListener("click", () => {
    showRegion({ force: true });
    scheduleRerun();
  });
}

// -- the 3D viewer ---------------------------------------------------------------------------------
// <model-viewer> (bots/web/vendor/model-viewer.min.js, @google/model-viewer, loaded on first use):
// a dropped .glb is previewed here; a job result of type model/gltf-binary is shown here too.
const MODEL_TYPE = "model/gltf-binary";
const MAX_MODEL_BYTES = 100_000_000;  // the viewer's own bound; the server's is in /config
let viewerLoading = null;

function isModel(file) {
  return file.type === MODEL_TYPE || /\.glb$/i.test(file.name || "");
}

function loadViewer() {
  viewerLoading ??= import("./vendor/model-viewer.min.js")
    .then(() => customElements.whenDefined("model-viewer"))
    .catch((err) => { viewerLoading = null; throw err; });
  return viewerLoading;
}

/** Show the GLB at `url` (a blob: URL) in the viewer, in place of the photo compare. */
async function showModel(url, label) {
  try {
    await loadViewer();
  } catch (err) {
    showMessage(t("viewer_failed", { reason: err.message }));
    return false;
  }
  el.compare.hidden = true;
  hideVideo();
  el.placeholder.hidden = true;
  el.viewerBox.hidden = false;
  el.viewerBox.dataset.loaded = "no";
  el.viewer.setAttribute("alt", label);
  el.viewer.setAttribute("aria-label", t("viewer"));
  el.viewer.src = url;
  return true;
}

function hideViewer() {
  if (el.viewerBox.hidden) return;
  el.viewerBox.hidden = true;
  el.viewer.removeAttribute("src");
}

function showModelFile(file) {
  const limit = Math.min(MAX_MODEL_BYTES, state.maxModel || MAX_MODEL_BYTES);
  if (file.size > limit) {
    showMessage(t("model_too_big", { name: file.name, size: formatBytes(file.size),
                                     limit: formatBytes(limit) }));
    return;
  }
  cancelJob();
  state.photo = file;
  state.photoIsModel = true;
  state.photoIsVideo = false;
  state.photoVersion += 1;
  state.hasResult = false;
  if (state.modelUrl) URL.revokeObjectURL(state.modelUrl);
  state.modelUrl = URL.createObjectURL(file);
  el.photoName.textContent = `${file.name} · ${formatBytes(file.size)}`;
  el.dropzone.classList.add("has-photo");
  el.dropzone.querySelector(".dz-main").innerHTML = t(TOUCH ? "tap_again" : "drop_again");
  el.download.hidden = true;
  el.stage.dataset.state = "model";
  resetRegion();
  showMessage(t("model_chosen"), "warning");
  showModel(state.modelUrl, file.name);
}

// -- running a job ------------------------------------------------------------------------------------
function scheduleRerun() {
  if (!state.hasResult && !state.job) return;  // only "live" once there is something to update
  clearTimeout(state.rerunTimer);
  state.rerunTimer = setTimeout(() => run({ auto: true }), RERUN_DELAY_MS);
}

function cancelJob({ announce = false } = {}) {
  const job = state.job;
  clearTimeout(state.rerunTimer);
  if (!job) return;
  state.job = null;
  job.stop();
  if (!job.finished) {
    fetch(job.statusUrl, { method: "DELETE", headers: headers(), keepalive: true })
      .catch(() => {});
  }
  setBusy(false);
  if (announce) setStatus(t("cancelled"));
}

/** Submit the current choices; `auto`: a re-run after a change, skipped when nothing changed. */
async function run({ auto = false } = {}) {
  clearTimeout(state.rerunTimer);
  clearMessage();
  const style = selectedStyle();
  if (!state.photo) {
    showMessage(t("need_photo"));
    el.photo.focus();
    return;
  }
  if (!style) {
    showMessage(t("need_style"));
    return;
  }
  if (style === CUSTOM && state.photoIsModel) {
    showMessage(t("model_custom"));
    return;
  }
  if (style === CUSTOM && state.photoIsVideo) {
    showMessage(t("video_custom"));
    return;
  }
  if (style === CUSTOM && !state.styleImage) {
    showMessage(t("need_style_image"));
    el.customPicker.hidden = false;
    el.styleImage.focus();
    return;
  }
  const strength = Number(el.strength.value);
  const stroke = selectedStroke();
  const refine = style === CUSTOM && el.refine.checked;
  const where = state.photoIsVideo || state.photoIsModel ? "everywhere" : selectedWhere();
  const key = [state.photoVersion, style, style === CUSTOM ? state.styleVersion : 0, strength,
               stroke, el.keepColors.checked, refine, where,
               state.maskEdited ? state.maskVersion : 0].join("|");
  if (auto && (state.job ? state.job.key === key : state.shownKey === key)) return;
  cancelJob();
  const form = new FormData();
  form.append("image", state.photo, state.photo.name || "photo.jpg");
  if (style === CUSTOM) form.append("style_image", state.styleImage, state.styleImage.name);
  else form.append("style", style);
  form.append("strength", String(strength / 100));
  form.append("keep_colors", el.keepColors.checked ? "true" : "false");
  form.append("stroke", stroke);
  if (refine) form.append("refine", "true");
  await appendRegion(form, where);

  const job = {
    id: null, statusUrl: null, resultUrl: null, finished: false, source: null, timer: null,
    stopped: false, style, strength, stroke, custom: style === CUSTOM, key,
    stop() {
      this.source?.close();
      clearTimeout(this.timer);
      this.stopped = true;
    },
  };
  state.job = job;
  state.lastAnnounced = -1;
  setBusy(true);
  setProgress(0);
  setStatus(t("uploading"));
  if (!state.hasResult) el.stage.dataset.state = state.photoIsModel ? "model" : "photo";

  let resp;
  try {
    resp = await fetch(`${API}/jobs`, { method: "POST", body: form, headers: headers() });
  } catch {
    return fail(job, t("network"));
  }
  if (state.job !== job) {  // superseded while uploading
    if (resp.ok) {
      const body = await resp.json().catch(() => null);
      if (body?.status_url) fetch(body.status_url, { method: "DELETE", headers: headers() }).catch(() => {});
    }
    return;
  }
  if (!resp.ok) {
    fail(job, await errorText(resp));
    if (auto && resp.status === 429) {  // a re-run hit the rate limit: try once more, later
      const wait = Math.min(60, Number(resp.headers.get("Retry-After")) || 5);
      state.rerunTimer = setTimeout(() => run({ auto: true }), wait * 1000);
    }
    return;
  }
  const body = await resp.json();
  Object.assign(job, { id: body.id, statusUrl: body.status_url, resultUrl: body.result_url });
  el.stage.dataset.jobId = body.id;
  if (body.state === "queued") update(job, body);  // its place in line, before the first event
  follow(job);
}

function fail(job, text) {
  if (state.job !== job) return;
  job.finished = true;
  job.stop();
  state.job = null;
  setBusy(false);
  setStatus("");
  showMessage(text);
}

function follow(job) {
  // EventSource cannot send an X-API-Key header: with a key, poll.
  if ("EventSource" in window && !el.apiKey.value.trim()) {
    const source = new EventSource(`${job.statusUrl}/events`);
    job.source = source;
    source.onmessage = (ev) => {
      let data;
      try { data = JSON.parse(ev.data); } catch { return; }
      update(job, data);
    };
    source.onerror = () => {  // the stream ended or broke: polling finds out which
      source.close();
      if (!job.finished && !job.stopped) poll(job);
    };
  } else {
    poll(job);
  }
}

async function poll(job, failures = 0) {
  if (job.finished || job.stopped || state.job !== job) return;
  try {
    const resp = await fetch(job.statusUrl, { headers: headers(), cache: "no-store" });
    if (resp.status === 404) return update(job, { state: "gone", progress: 0 });
    if (!resp.ok) return fail(job, await errorText(resp));
    update(job, await resp.json());
    failures = 0;
  } catch {
    if (failures >= 5) return fail(job, t("network"));
    failures += 1;
  }
  if (!job.finished && !job.stopped) {
    clearTimeout(job.timer);
    job.timer = setTimeout(() => poll(job, failures), POLL_MS * (1 + failures));
  }
}

function update(job, ev) {
  if (state.job !== job || job.finished) return;
  const percent = setProgress(ev.progress ?? 0);
  switch (ev.state) {
    case "queued":
      setStatus(queueText(ev));
      el.stage.dataset.queuePosition = String(ev.queue_position ?? "");
      break;
    case "running": {
      // Announce in steps of 10% so screen readers are not flooded.
      const step = Math.floor(percent / 10) * 10;
      if (step !== state.lastAnnounced) {
        state.lastAnnounced = step;
        setStatus(t(job.custom ? "running_custom" : "running", { percent: step }));
      }
      break;
    }
    case "done":
      job.finished = true;
      job.source?.close();
      showResult(job);
      break;
    case "failed":
      fail(job, t("failed", { reason: ev.error || "?" }));
      break;
    case "cancelled":
      job.finished = true;
      job.stop();
      state.job = null;
      setBusy(false);
      setStatus(t("cancelled"));
      break;
    case "gone":
      fail(job, t("gone"));
      break;
    default:
      break;
  }
}

function showVideo(url) {
  el.video.onloadedmetadata = () => setRatio(el.video.videoWidth, el.video.videoHeight);
  el.video.src = url;
  el.video.hidden = false;
}

function hideVideo() {
  el.video.pause();
  el.video.removeAttribute("src");
  el.video.hidden = true;
}

const RESULT_SUFFIX = { "video/mp4": "mp4", "image/gif": "gif", "image/webp": "webp",
                        [MODEL_TYPE]: "glb" };

async function showResult(job) {
  setProgress(1);
  setStatus(t("fetching"));
  let blob;
  try {
    const resp = await fetch(job.resultUrl, { headers: headers() });
    if (!resp.ok) return fail(job, await errorText(resp));
    blob = await resp.blob();
  } catch {
    return fail(job, t("network"));
  }
  if (state.job !== job) return;
  const url = URL.createObjectURL(blob);
  const clip = blob.type.startsWith("video/");
  const model = blob.type === MODEL_TYPE;  // a 3D model job's result: shown in the viewer
  const img = new Image();
  if (!clip && !model) {
    img.src = url;
    try { await img.decode(); } catch { /* shown anyway */ }
  }
  if (state.job !== job) { URL.revokeObjectURL(url); return; }
  const first = !state.hasResult;
  if (state.resultUrl) URL.revokeObjectURL(state.resultUrl);
  state.resultUrl = url;
  state.shownKey = job.key;
  const styleName = styleDisplayName(job.style);
  if (model) {
    await showModel(url, t("your_result", { style: styleName }));
  } else if (clip) {  // a video job: the result plays in <video> (GIF / WebP stay in the compare)
    el.compare.hidden = true;
    showVideo(url);
    el.video.setAttribute("aria-label", t("your_video", { style: styleName }));
  } else {
    hideVideo();
    hideViewer();
    el.compare.hidden = false;
    setRatio(img.naturalWidth, img.naturalHeight);
    el.after.src = url;
  }
  el.after.alt = t("your_result", { style: styleName });
  el.stage.dataset.state = "done";
  el.stage.dataset.jobId = job.id;
  el.download.href = url;
  const strokeTag = job.stroke === "medium" ? "" : `-${job.stroke}`;
  el.download.download =
    `stylejax-${job.custom ? "custom" : job.style}-${job.strength}${strokeTag}.`
    + (RESULT_SUFFIX[blob.type] || "png");
  el.download.hidden = false;
  state.hasResult = true;
  state.job = null;
  setBusy(false);
  el.go.textContent = t("restylize");
  setStatus(t("done", { style: styleName, strength: job.strength,
                       stroke: t(`stroke_${job.stroke}`) }));
  if (first && !el.overlay.hidden) {  // the result, not the region, is what to see now
    el.regionShow.checked = false;
    updateOverlay();
  }
  if (first) {
    const box = el.resultPanel.getBoundingClientRect();
    if (box.top > window.innerHeight * 0.6 || box.bottom < 0) {
      const smooth = !window.matchMedia("(prefers-reduced-motion: reduce)").matches;
      el.resultPanel.scrollIntoView({ behavior: smooth ? "smooth" : "auto", block: "start" });
    }
  }
}

// -- wiring -------------------------------------------------------------------------------------------
function wire() {
  el.photo.addEventListener("change", () => setPhoto(el.photo.files[0]));
  el.camera.addEventListener("change", () => setPhoto(el.camera.files[0]));
  el.styleImage.addEventListener("change", () => setStyleImage(el.styleImage.files[0]));

  // The camera input only makes sense where there is a camera (phones, tablets).
  el.cameraButton.hidden = !TOUCH;
  if (TOUCH) el.dropzone.querySelector(".dz-main").innerHTML = t("tap");

  // Drag and drop anywhere on the drop zone; a drop elsewhere must not navigate away.
  for (const type of ["dragenter", "dragover"]) {
    el.dropzone.addEventListener(type, (ev) => {
      ev.preventDefault();
      el.dropzone.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "dragend"]) {
    el.dropzone.addEventListener(type, () => el.dropzone.classList.remove("dragging"));
  }
  el.dropzone.addEventListener("drop", (ev) => {
    ev.preventDefault();
    el.dropzone.classList.remove("dragging");
    const file = ev.dataTransfer?.files?.[0];
    if (file) setPhoto(file);
  });
  window.addEventListener("dragover", (ev) => ev.preventDefault());
  window.addEventListener("drop", (ev) => ev.preventDefault());

  // Paste a picture from the clipboard.
  window.addEventListener("paste", (ev) => {
    const file = [...(ev.clipboardData?.files ?? [])].find((f) => f.type.startsWith("image/"));
    if (file) setPhoto(file);
  });

  el.form.addEventListener("change", (ev) => {
    if (ev.target.name === "where") {
      el.regionShow.checked = true;
      showRegion();
      scheduleRerun();
      return;
    }
    if (ev.target.name === "brush") return;
    if (ev.target.name === "stroke" || ev.target.name === "refine") {
      scheduleRerun();
      return;
    }
    if (ev.target.name !== "style") return;
    const custom = ev.target.value === CUSTOM;
    el.customPicker.hidden = !custom;
    if (custom && !state.styleImage) return;
    scheduleRerun();
  });
  el.strength.addEventListener("input", () => {
    showStrength();
    scheduleRerun();
  });
  el.keepColors.addEventListener("change", scheduleRerun);
  el.form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    run();
  });
  el.cancel.addEventListener("click", () => {
    cancelJob({ announce: true });
    el.go.focus();  // the Cancel button is gone: keep keyboard focus in the form
  });

  el.split.addEventListener("input", () => {
    el.compare.style.setProperty("--pos", `${el.split.value}%`);
  });

  el.viewer.addEventListener("load", () => { el.viewerBox.dataset.loaded = "yes"; });
  el.viewer.addEventListener("error", (ev) => {
    el.viewerBox.dataset.loaded = "failed";
    showMessage(t("viewer_failed", { reason: ev.detail?.sourceError?.message || ev.detail?.type
                                             || "?" }));
  });
  wireBrush();

  window.addEventListener("pagehide", () => cancelJob());
}

translatePage();
wire();
showStrength();
await loadConfig();
await loadStyles();
document.body.dataset.ready = "yes";
