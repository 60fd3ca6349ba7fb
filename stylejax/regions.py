"""Automatic regions of a photo: person, face, skin, clothing, sky, background (issue 16).

Everything runs offline on the CPU:

* **person**: MediaPipe's selfie segmentation model (Apache-2.0, shipped inside the mediapipe
  0.10.14 wheel, converted to ONNX by ``scripts/tflite_to_onnx.py`` and bundled in
  ``stylejax/assets/regions``; see docs/regions.md for why this one), run with ONNX Runtime at
  256×256, upsampled and refined with a colour guided filter so the edge follows hair and
  outlines in the full-size photo.
* **faces**: MediaPipe's BlazeFace short-range detector (same wheel, same licence), run on the
  whole picture and on overlapping tiles so that small faces in group photos are found too.
* **skin / clothing**: no clothing model ships in any package we can depend on, so these are
  classical and crude: skin is the colour of the detected faces (a Gaussian in CrCb), the head is
  an enlarged ellipse around each face, clothing is ``person × (1 − skin) × (1 − head)``. Bare
  arms of a skin tone unlike the face's, and hair hanging below the head ellipse, land in
  "clothing".
* **sky**: classical: bright, smooth pixels that are blue or colourless, in components touching
  the top border, minus the person. Fails on sunsets, on sky seen only through gaps, on
  white walls touching the top edge.
* **background**: ``1 − person``.

All masks are float32 H×W in [0, 1] (soft), the same size as the input. Models are loaded on
first use and their sessions cached; nothing is ever downloaded.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).resolve().parent / "assets" / "regions"
SEGMENTER = ASSETS / "selfie_segmentation.onnx"
FACE_DETECTOR = ASSETS / "face_detection_short_range.onnx"

REGIONS = ("person", "background", "face", "skin", "clothing", "sky")

_lock = threading.Lock()


# ----------------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------------
def _as_float_rgb(rgb) -> np.ndarray:
    """H×W×3 float32 in [0, 1] from uint8 or float input (a PIL image works too)."""
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"expected an H×W×3 RGB picture, got shape {a.shape}")
    a = a[..., :3]
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    return np.clip(a.astype(np.float32), 0.0, 1.0)


def _resize(a: np.ndarray, w: int, h: int) -> np.ndarray:
    import cv2

    interp = cv2.INTER_AREA if w < a.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(a, (w, h), interpolation=interp)


@functools.lru_cache(maxsize=4)
def _session(path: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def _run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    with _lock:  # one lazy load per process; ORT's run itself is thread-safe
        sess = _session(str(path))
    return sess.run(None, {sess.get_inputs()[0].name: x})


# ----------------------------------------------------------------------------------------------
# guided filter (He, Sun & Tang 2010), box filters as summed-area tables
# ----------------------------------------------------------------------------------------------
def box_filter(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)² window, shrunk at the borders (divides by the true pixel count)."""
    x = np.asarray(x, np.float32)
    h, w = x.shape[:2]

    def along(a: np.ndarray, axis: int) -> np.ndarray:
        n = a.shape[axis]
        c = np.cumsum(a, axis=axis, dtype=np.float64)
        pad = [(0, 0)] * a.ndim
        pad[axis] = (1, 0)
        c = np.pad(c, pad)  # c[k] = sum of the first k entries
        hi = np.minimum(np.arange(n) + r + 1, n)
        lo = np.maximum(np.arange(n) - r, 0)
        return (np.take(c, hi, axis=axis) - np.take(c, lo, axis=axis)).astype(np.float32)

    s = along(along(x, 0), 1)
    cnt_h = (np.minimum(np.arange(h) + r + 1, h) - np.maximum(np.arange(h) - r, 0))
    cnt_w = (np.minimum(np.arange(w) + r + 1, w) - np.maximum(np.arange(w) - r, 0))
    n = np.outer(cnt_h, cnt_w).astype(np.float32)
    return s / (n[..., None] if x.ndim == 3 else n)


def _inv3(m: np.ndarray) -> np.ndarray:
    """Inverse of a stack of symmetric 3×3 matrices (…×3×3), by the adjugate."""
    a, b, c = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    d, e, f = m[..., 1, 1], m[..., 1, 2], m[..., 2, 2]
    i00 = d * f - e * e
    i01 = c * e - b * f
    i02 = b * e - c * d
    i11 = a * f - c * c
    i12 = b * c - a * e
    i22 = a * d - b * b
    det = a * i00 + b * i01 + c * i02
    inv = np.stack([i00, i01, i02, i01, i11, i12, i02, i12, i22], -1) / det[..., None]
    return inv.reshape(m.shape)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float = 1e-3,
                  subsample: int = 1) -> np.ndarray:
    """Edge-aware smoothing of ``src`` (H×W) along the edges of ``guide`` (H×W or H×W×3).

    He, Sun & Tang's guided filter: each (2r+1)² window fits ``src ≈ aᵀ·I + b``; with a colour
    guide that is a 3×3 solve per pixel, which is what lets a coarse mask snap to hair and
    outlines. ``eps`` regularises in the guide's units (guide in [0, 1]). ``subsample`` > 1 is
    the "fast guided filter": a and b are fitted on a picture that much smaller and upsampled,
    the output is still computed at full resolution.
    """
    guide = np.asarray(guide, np.float32)
    p = np.asarray(src, np.float32)
    h, w = p.shape
    if subsample > 1:
        sw, sh = max(1, round(w / subsample)), max(1, round(h / subsample))
        g_s, p_s = _resize(guide, sw, sh), _resize(p, sw, sh)
        r = max(1, round(radius / subsample))
    else:
        g_s, p_s, r = guide, p, max(int(radius), 1)
    mean_p = box_filter(p_s, r)
    mean_i = box_filter(g_s, r)
    if g_s.ndim == 2:
        cov_ip = box_filter(g_s * p_s, r) - mean_i * mean_p
        var_i = box_filter(g_s * g_s, r) - mean_i * mean_i
        a = cov_ip / (var_i + eps)
        b = mean_p - a * mean_i
        mean_a, mean_b = box_filter(a, r), box_filter(b, r)
        if subsample > 1:
            mean_a, mean_b = _resize(mean_a, w, h), _resize(mean_b, w, h)
        return (mean_a * guide + mean_b).astype(np.float32)

    cov_ip = box_filter(g_s * p_s[..., None], r) - mean_i * mean_p[..., None]
    iu = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    prods = np.stack([g_s[..., i] * g_s[..., j] for i, j in iu], -1)
    corr = box_filter(prods, r)
    hs, ws = p_s.shape
    sigma = np.empty((hs, ws, 3, 3), np.float32)
    for k, (i, j) in enumerate(iu):
        v = corr[..., k] - mean_i[..., i] * mean_i[..., j] + (eps if i == j else 0.0)
        sigma[..., i, j] = v
        sigma[..., j, i] = v
    a = np.einsum("hwij,hwj->hwi", _inv3(sigma), cov_ip)
    b = mean_p - np.einsum("hwc,hwc->hw", a, mean_i)
    mean_a, mean_b = box_filter(a, r), box_filter(b, r)
    if subsample > 1:
        mean_a, mean_b = _resize(mean_a, w, h), _resize(mean_b, w, h)
    return (np.einsum("hwc,hwc->hw", mean_a, guide) + mean_b).astype(np.float32)


def refine(rgb, mask: np.ndarray, radius: int | None = None, eps: float = 1e-3,
           stretch: tuple[float, float] = (0.1, 0.9)) -> np.ndarray:
    """Snap a soft mask's edges to the picture's: a colour guided filter, then a contrast
    stretch, clipped to [0, 1].

    The guided filter puts a step where the photo has its edge but, being locally linear,
    keeps the faint tails of a blurred mask on either side (0.1–0.2 halos); the stretch maps
    ``stretch[0]`` → 0 and ``stretch[1]`` → 1 to drop them. The default radius is about 1/80 of
    the short side (6 px at 512 px), eps 1e-3; the coefficients are fitted at ≤ 320 px on the
    long side (fast guided filter), the output is computed at full size.
    """
    img = _as_float_rgb(rgb)
    h, w = mask.shape
    if radius is None:
        radius = max(2, round(min(h, w) / 80))
    sub = max(1, int(np.ceil(max(h, w) / 320)))
    q = guided_filter(img, mask, radius, eps, subsample=sub)
    lo, hi = stretch
    q = (q - lo) / (hi - lo)
    return np.clip(q, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# person
# ----------------------------------------------------------------------------------------------
def person_probability(rgb) -> np.ndarray:
    """The segmenter's raw person probability, upsampled bilinearly to the picture's size.

    The model sees the whole picture squeezed to 256×256 (as MediaPipe feeds it, aspect ratio
    not kept), RGB in [0, 1].
    """
    img = _as_float_rgb(rgb)
    h, w = img.shape[:2]
    x = _resize(img, 256, 256)[None].astype(np.float32)
    prob = _run(SEGMENTER, x)[0][0, :, :, 0]
    return np.clip(_resize(prob.astype(np.float32), w, h), 0.0, 1.0)


def person_mask(rgb, *, refined: bool = True) -> np.ndarray:
    """Soft person mask, float32 H×W in [0, 1]; edges refined on the photo unless refined=False."""
    prob = person_probability(rgb)
    return refine(rgb, prob) if refined else prob


def background_mask(rgb, *, person: np.ndarray | None = None) -> np.ndarray:
    """``1 − person``."""
    p = person_mask(rgb) if person is None else person
    return (1.0 - p).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# faces: BlazeFace short range
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FaceBox:
    """A face in picture pixels: box corners, score and six keypoints (eyes, nose, mouth, ears)."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float
    keypoints: tuple[tuple[float, float], ...] = ()

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0


@functools.lru_cache(maxsize=1)
def _anchors() -> np.ndarray:
    """MediaPipe's SSD anchors for the short-range model: 16×16×2 + 8×8×6 = 896 centres."""
    out = []
    for fm, per_cell in ((16, 2), (8, 6)):
        ys, xs = np.mgrid[0:fm, 0:fm]
        c = np.stack([(xs + 0.5) / fm, (ys + 0.5) / fm], -1).reshape(-1, 1, 2)
        out.append(np.repeat(c, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(out).astype(np.float32)


def _detect_square(img: np.ndarray, min_score: float) -> np.ndarray:
    """Faces in one crop, letterboxed to 128×128: rows (x0, y0, x1, y1, score, 12 keypoints)
    in the crop's pixels."""
    h, w = img.shape[:2]
    s = 128.0 / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    canvas = np.zeros((128, 128, 3), np.float32)
    ox, oy = (128 - nw) // 2, (128 - nh) // 2
    canvas[oy:oy + nh, ox:ox + nw] = _resize(img, nw, nh)
    x = (canvas * 2.0 - 1.0)[None]
    reg, cls = _run(FACE_DETECTOR, x)
    reg, score = reg[0], 1.0 / (1.0 + np.exp(-np.clip(cls[0, :, 0], -80.0, 80.0)))
    keep = score >= min_score
    if not keep.any():
        return np.zeros((0, 17), np.float32)
    a = _anchors()[keep]
    r = reg[keep] / 128.0
    cx, cy = r[:, 0] + a[:, 0], r[:, 1] + a[:, 1]
    bw, bh = r[:, 2], r[:, 3]
    kp = r[:, 4:16].reshape(-1, 6, 2) + a[:, None, :]
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
    # from the 128² canvas (normalised) back to the crop's pixels
    boxes = (boxes * 128.0 - np.array([ox, oy, ox, oy])) / s
    kp = (kp * 128.0 - np.array([ox, oy])) / s
    return np.concatenate([boxes, score[keep, None], kp.reshape(-1, 12)], 1).astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def _weighted_nms(det: np.ndarray, thresh: float = 0.3) -> np.ndarray:
    """MediaPipe's 'weighted' NMS: overlapping detections are averaged, weighted by score."""
    order = np.argsort(-det[:, 4])
    det = det[order]
    out = []
    while len(det):
        ov = _iou(det[0], det)
        group = det[ov >= thresh]
        wts = group[:, 4:5]
        merged = (group * wts).sum(0) / wts.sum()
        merged[4] = group[0, 4]
        out.append(merged)
        det = det[ov < thresh]
    return np.array(out, np.float32).reshape(-1, 17)


def face_boxes(rgb, *, min_score: float = 0.75, tiles: bool = True,
               person: np.ndarray | bool | None = True) -> list[FaceBox]:
    """Faces in the picture, best first.

    The short-range model is made for faces that fill a good part of its 128×128 input, so it
    also runs on overlapping square tiles (half and a quarter of the short side) to find the
    small faces of group photos; detections are merged with weighted NMS. On tiles it also
    "finds" faces in rocks and drums (scores 0.5–0.75), hence the 0.75 threshold and, unless
    ``person`` is False, the rule that a face's centre must lie on the person mask (≥ 0.3; pass
    the person probability if you have it, True computes it).
    """
    img = _as_float_rgb(rgb)
    h, w = img.shape[:2]
    dets = [_detect_square(img, min_score)]
    if tiles:
        short = min(h, w)
        for frac in (0.5, 0.25):
            side = int(short * frac)
            if side < 96:
                continue
            step = max(1, side * 2 // 3)
            for y in range(0, max(h - side, 0) + 1, step):
                for x in range(0, max(w - side, 0) + 1, step):
                    d = _detect_square(img[y:y + side, x:x + side], min_score)
                    if len(d):
                        d[:, [0, 2]] += x
                        d[:, [1, 3]] += y
                        d[:, 5::2] += x
                        d[:, 6::2] += y
                        dets.append(d)
    det = np.concatenate(dets)
    if not len(det):
        return []
    det = _weighted_nms(det)
    if person is not None and person is not False:
        prob = person_probability(img) if person is True else np.asarray(person)
        cx = np.clip(((det[:, 0] + det[:, 2]) / 2).astype(int), 0, w - 1)
        cy = np.clip(((det[:, 1] + det[:, 3]) / 2).astype(int), 0, h - 1)
        det = det[prob[cy, cx] >= 0.3]
    out = []
    for d in det:
        x0, y0, x1, y1 = (float(v) for v in d[:4])
        x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h))
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        kps = tuple((float(d[5 + 2 * i]), float(d[6 + 2 * i])) for i in range(6))
        out.append(FaceBox(x0, y0, x1, y1, float(d[4]), kps))
    return out


def _ellipses(shape, boxes, sx: float, sy: float, dy: float, feather: float = 0.15) -> np.ndarray:
    """Soft ellipses around boxes: semi-axes sx·w/2, sy·h/2, centre moved dy·h down."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    m = np.zeros((h, w), np.float32)
    for b in boxes:
        cx, cy = (b.x0 + b.x1) / 2, (b.y0 + b.y1) / 2 + dy * b.height
        ax, ay = max(sx * b.width / 2, 1.0), max(sy * b.height / 2, 1.0)
        d = np.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2)
        m = np.maximum(m, np.clip((1.0 + feather - d) / (2 * feather), 0.0, 1.0))
    return m


def face_mask(rgb, *, boxes: list[FaceBox] | None = None, refined: bool = True) -> np.ndarray:
    """Soft mask of the faces (forehead to chin, ear to ear): ellipses around the detections,
    refined with the guided filter so they follow the jaw and hairline."""
    img = _as_float_rgb(rgb)
    boxes = face_boxes(img) if boxes is None else boxes
    m = _ellipses(img.shape[:2], boxes, sx=1.05, sy=1.25, dy=-0.05)
    return refine(img, m) if (refined and boxes) else m


# ----------------------------------------------------------------------------------------------
# skin and clothing (classical, crude)
# ----------------------------------------------------------------------------------------------
def _crcb(img: np.ndarray) -> np.ndarray:
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return np.stack([(r - y) * 0.713, (b - y) * 0.564], -1)


def skin_mask(rgb, *, boxes: list[FaceBox] | None = None,
              person: np.ndarray | None = None) -> np.ndarray:
    """Pixels of the person whose colour (CrCb) is close to the faces' skin colour.

    The colour model is a Gaussian fitted to the inner part of the detected faces; without a
    face there is no skin model and the mask is empty.
    """
    img = _as_float_rgb(rgb)
    boxes = face_boxes(img) if boxes is None else boxes
    h, w = img.shape[:2]
    if not boxes:
        return np.zeros((h, w), np.float32)
    person = person_mask(img) if person is None else person
    crcb = _crcb(img)
    inner = _ellipses((h, w), boxes, sx=0.6, sy=0.6, dy=0.1, feather=0.01) > 0.5
    samples = crcb[inner]
    if len(samples) < 20:
        return np.zeros((h, w), np.float32)
    mu = samples.mean(0)
    cov = np.cov(samples.T) + np.eye(2) * 1e-4
    d = crcb - mu
    m2 = np.einsum("hwi,ij,hwj->hw", d, np.linalg.inv(cov), d)
    skin = np.clip((9.0 - m2) / 5.0, 0.0, 1.0)  # full below ~2σ, none beyond 3σ
    return refine(img, (skin * person).astype(np.float32))


def head_mask(rgb, *, boxes: list[FaceBox] | None = None) -> np.ndarray:
    """The whole head with hair, crudely: a large ellipse around each face."""
    img = _as_float_rgb(rgb)
    boxes = face_boxes(img) if boxes is None else boxes
    return _ellipses(img.shape[:2], boxes, sx=1.7, sy=1.9, dy=-0.2)


def clothing_mask(rgb, *, boxes: list[FaceBox] | None = None, person: np.ndarray | None = None,
                  skin: np.ndarray | None = None) -> np.ndarray:
    """``person × (1 − skin) × (1 − head)``: what is left of the person once the face, the hair
    around it and skin-coloured pixels are removed. Crude: no model of clothes ships in any
    package we can use, so bags, hair below the shoulders and skin of another tone count too."""
    img = _as_float_rgb(rgb)
    boxes = face_boxes(img) if boxes is None else boxes
    person = person_mask(img) if person is None else person
    skin = skin_mask(img, boxes=boxes, person=person) if skin is None else skin
    head = head_mask(img, boxes=boxes)
    return np.clip(person * (1.0 - skin) * (1.0 - head), 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# sky (classical)
# ----------------------------------------------------------------------------------------------
def sky_mask(rgb, *, person: np.ndarray | None = None) -> np.ndarray:
    """Sky: bright, smooth, blue or colourless pixels in regions that touch the top border.

    Works at ≤ 256 px: candidates by colour (HSV) and smoothness (local gradient), connected
    components that reach the top row kept, then the colour model of those seeds grows the
    mask to sky pixels of the same colour above the seeds' lowest row (sky through branches);
    the person is removed and the edge refined with the guided filter at full size.
    """
    import cv2

    img = _as_float_rgb(rgb)
    h, w = img.shape[:2]
    s = min(1.0, 256.0 / max(h, w))
    sw, sh = max(1, round(w * s)), max(1, round(h * s))
    small = _resize(img, sw, sh)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)  # H in degrees, S and V in [0, 1]
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    blue = (hue >= 180) & (hue <= 250) & (sat >= 0.12) & (val >= 0.35)
    grey = (sat < 0.18) & (val >= 0.6)
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    grad = cv2.blur(np.sqrt(gx * gx + gy * gy), (5, 5))
    smooth = grad < 0.07
    cand = ((blue | grey) & smooth).astype(np.uint8)
    n, labels = cv2.connectedComponents(cand, connectivity=4)
    top = np.unique(labels[: max(1, sh // 50)])
    top = top[top > 0]
    seed = np.isin(labels, top)
    if seed.sum() < 0.01 * sh * sw:
        return np.zeros((h, w), np.float32)
    # grow: pixels of the seeds' colour above the seeds' lowest row (gaps between branches)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB)
    samples = lab[seed]
    mu = samples.mean(0)
    cov = np.cov(samples.T) + np.eye(3) * 4.0
    d = lab - mu
    m2 = np.einsum("hwi,ij,hwj->hw", d, np.linalg.inv(cov), d)
    rows = np.nonzero(seed.any(1))[0]
    above = (np.arange(sh) <= rows.max())[:, None]
    grown = seed | ((m2 < 9.0) & above & (blue | grey))
    m = _resize(grown.astype(np.float32), w, h)
    m = refine(img, m)
    if person is not None:
        m = m * (1.0 - person)
    return np.clip(m, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# everything at once
# ----------------------------------------------------------------------------------------------
def region_masks(rgb, regions=REGIONS) -> dict[str, np.ndarray]:
    """The named masks, computing the person mask and the faces once."""
    unknown = set(regions) - set(REGIONS)
    if unknown:
        raise ValueError(f"unknown region(s) {sorted(unknown)}; known: {', '.join(REGIONS)}")
    img = _as_float_rgb(rgb)
    person = person_mask(img)
    need_faces = {"face", "skin", "clothing"} & set(regions)
    boxes = face_boxes(img, person=person) if need_faces else []
    out: dict[str, np.ndarray] = {}
    skin = None
    for r in regions:
        if r == "person":
            out[r] = person
        elif r == "background":
            out[r] = background_mask(img, person=person)
        elif r == "face":
            out[r] = face_mask(img, boxes=boxes)
        elif r in ("skin", "clothing"):
            if skin is None:
                skin = skin_mask(img, boxes=boxes, person=person)
            out[r] = skin if r == "skin" else clothing_mask(
                img, boxes=boxes, person=person, skin=skin)
        elif r == "sky":
            out[r] = sky_mask(img, person=person)
    return out
