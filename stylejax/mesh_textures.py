"""Stylised 3D model textures: a glTF / GLB / OBJ model's base-colour textures stylised in UV
space, geometry untouched.

    from stylejax.mesh_textures import stylize_model
    stylize_model("model.glb", "styled.glb", Stylizer(), StyleRequest.create(style="wave"))

For each base-colour texture that a material really uses:

1. **Islands.** The UV triangles that sample it are rasterised (OpenCV `fillPoly`: texels
   whose centres they cover) into an island mask. Texels just outside an edge, which bilinear
   lookups at the edge also read, are left to the padding: it puts the surface beyond the
   seam there, which is what a lookup should see.
2. **Padding.** The generator is a convolution network: at an island's border it sees the
   texels around it, which in a texture atlas are empty or unrelated (black, another island,
   a magenta "unused" fill). Each side of a seam (an edge shared in 3D by two triangles whose
   UVs differ) would then be painted against different surroundings, and the two sides stop
   matching. So before stylising, the empty texels around each island are filled:
   - *across seams*: the neighbouring triangle on the other side of the seam is unfolded into
     this island's UV plane (kept to its 3D shape, scaled by the edge's texel density) and its
     texels are copied there, up to `pad` texels out, so the generator sees the same surface
     continuing on both sides of the seam;
   - then *dilation*: `pad` rounds of spreading the border colours outward into what is left;
   - then *push-pull*: every remaining empty texel takes a smooth average of the coverage
     around it (no garbage left for mipmaps or for the generator's receptive field).
3. **Stylising** the padded texture with the `Stylizer` (see `texture_stroke` for the scale),
   keeping the original texels' alpha.
4. **Writing back** the same structure: glTF through pygltflib with the same nodes, meshes,
   accessors and materials, only the image bytes changing (GLB buffer views re-laid out);
   OBJ files copied as text, only the MTL's `map_Kd` paths pointing at the new texture files.

Limits: `ModelLimits` (defaults `MAX_*` below; the service passes its own settings);
`check_model` checks a model against them without decoding a texture, `unpack_model_zip`
unpacks a zipped .gltf / .obj safely (the service's uploads). Node transforms are not
applied when measuring texel density (the meshes' own coordinates are used); a
`KHR_texture_transform` rotation makes the whole texture count as covered (it is stylised
without island padding).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import math
import os
import stat
import time
import urllib.parse
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .errors import (
    BrokenModelError,
    JobCancelledError,
    ModelTooLargeError,
    NotAModelError,
    NoTexturesError,
    StyleJAXError,
    echo,
)
from .stroke import MAX_STROKE, MIN_STROKE

MODEL_SUFFIXES = (".glb", ".gltf", ".obj")
MAX_MODEL_BYTES = 256 * 1024 * 1024  # the model file, and each buffer or texture file it names
MAX_TEXTURE_SIDE = 8192
MAX_TEXTURE_PIXELS = 4096 * 4096
MAX_TEXTURES = 32
MAX_TRIANGLES = 4_000_000
GLB_MAGIC = b"glTF"
ZIP_MAGIC = b"PK\x03\x04"  # a zip holding a .gltf or an .obj with its files (the service)
MAX_ZIP_FILES = 256


@dataclass(frozen=True)
class ModelLimits:
    """What a model may be: its file (and each buffer or texture file it names), its number
    of base-colour textures, each texture's side and pixels, its triangles. The CLI uses the
    defaults (`MAX_*`); the service builds its own from its settings (`Settings.model_limits`)."""

    max_bytes: int = MAX_MODEL_BYTES
    max_textures: int = MAX_TEXTURES
    max_texture_side: int = MAX_TEXTURE_SIDE
    max_texture_pixels: int = MAX_TEXTURE_PIXELS
    max_triangles: int = MAX_TRIANGLES


DEFAULT_LIMITS = ModelLimits()


# -- what is stylised -------------------------------------------------------------------------
@dataclass
class TextureSite:
    """One texture image and the triangles that sample it as base colour."""

    key: object  # glTF: the image index; OBJ: the texture's absolute path
    name: str  # for progress lines (a file name or "image 0")
    pixels: np.ndarray  # H×W×3 or H×W×4 uint8 (H×W×0 when only checked: `check_model`)
    format: str  # Pillow format to write back: PNG, JPEG, WEBP
    uv: list[np.ndarray] = field(default_factory=list)  # (N,3,2), image space: (0,0) top left
    pos: list[np.ndarray] = field(default_factory=list)  # (N,3,3), the same triangles in 3D
    full_cover: bool = False  # UVs we cannot map exactly: treat the whole texture as used

    def triangles(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.uv:
            return np.zeros((0, 3, 2)), np.zeros((0, 3, 3))
        return np.concatenate(self.uv), np.concatenate(self.pos)


@dataclass
class TextureReport:
    name: str
    width: int
    height: int
    coverage: float  # fraction of texels inside UV islands
    seam_edges: int
    stroke: float  # the stroke factor the texture was stylised at
    seconds: float


@dataclass
class ModelResult:
    textures: list[TextureReport]
    seconds: float
    output: Path


# -- islands and padding --------------------------------------------------------------------
def _to_px(uv: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Image-space UVs → pixel coordinates (texel centres at integers)."""
    h, w = shape
    return np.stack([uv[..., 0] * w - 0.5, uv[..., 1] * h - 0.5], axis=-1)


def island_mask(uv: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """H×W bool: texels covered by the UV triangles (N,3,2 in image space), wrapping UVs
    outside 0..1 as a repeating sampler does."""
    h, w = shape
    mask = np.zeros((h, w), np.uint8)
    if len(uv) == 0:
        return mask.astype(bool)
    uv = uv - np.floor(uv.min(axis=1, keepdims=True))  # each triangle starts in [0,1)
    span = uv.max(axis=1) - uv.min(axis=1)
    if (span >= 1).any():  # a triangle that tiles the texture uses all of it
        return np.ones((h, w), bool)
    px = _to_px(uv, shape)
    for du in (0, -1):
        for dv in (0, -1):
            if du and not (uv[..., 0] > 1).any() or dv and not (uv[..., 1] > 1).any():
                continue
            _fill(mask, px + np.array([du * w, dv * h]))
    return mask.astype(bool)


def _fill(mask: np.ndarray, polys: np.ndarray, origin=(0, 0)) -> None:
    """Set the texels of `mask` whose centres lie inside the convex polygons (K,N,2 pixel
    coordinates; `origin` is the crop's top-left). OpenCV's fillPoly also sets the pixels an
    edge merely touches (it fills up to the rounded vertex positions, boundary included), so
    it draws on a grid twice as fine whose even points are the texel centres and keeps those:
    a texel counts when its centre is inside or within a quarter texel of an edge."""
    h, w = mask.shape
    fine = np.zeros((2 * h, 2 * w), np.uint8)
    pts = np.round((np.asarray(polys, np.float64) - np.asarray(origin)) * 32).astype(np.int32)
    for poly in pts:  # one by one: fillPoly's even-odd rule would cancel overlapping UVs
        cv2.fillConvexPoly(fine, poly, 1, lineType=cv2.LINE_8, shift=4)
    mask |= fine[0::2, 0::2]


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of H×W×C `img` at pixel coordinates, wrapping at the borders."""
    h, w = img.shape[:2]
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    xa, xb, ya, yb = x0 % w, (x0 + 1) % w, y0 % h, (y0 + 1) % h
    top = img[ya, xa] * (1 - fx) + img[ya, xb] * fx
    bottom = img[yb, xa] * (1 - fx) + img[yb, xb] * fx
    return top * (1 - fy) + bottom * fy


def seam_edges(uv_px: np.ndarray, pos: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Edges shared in 3D by exactly two triangles whose UVs along it differ:
    (triangle a, its edge index, triangle b, its edge index); edge j runs from vertex j to
    j+1, and b's edge runs the same 3D edge (either direction)."""
    n = len(pos)
    if n == 0:
        return []
    _, vid = np.unique(pos.reshape(-1, 3), axis=0, return_inverse=True)
    vid = vid.reshape(n, 3)
    a = vid[:, [0, 1, 2]].reshape(-1)
    b = vid[:, [1, 2, 0]].reshape(-1)
    keys = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)
    _, inv, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    shared = np.nonzero(counts[inv] == 2)[0]
    order = shared[np.argsort(inv[shared], kind="stable")]
    out = []
    for e1, e2 in zip(order[0::2], order[1::2]):
        t1, j1, t2, j2 = e1 // 3, e1 % 3, e2 // 3, e2 % 3
        p1 = uv_px[t1, [j1, (j1 + 1) % 3]]
        p2 = uv_px[t2, [j2, (j2 + 1) % 3]]
        if vid[t1, j1] != vid[t2, j2]:
            p2 = p2[::-1]  # b runs the edge the other way
        if np.abs(p1 - p2).max() > 1e-3:
            out.append((int(t1), int(j1), int(t2), int(j2)))
    return out


def _unfold(uv_px, pos, t1: int, j1: int, t2: int, j2: int):
    """Triangle t2 laid flat in t1's UV plane across their shared edge: its 3 pixel
    positions there, and the pixel positions of the same corners in t2's own chart."""
    ia, ib, ic = j1, (j1 + 1) % 3, (j1 + 2) % 3
    a, b, c = uv_px[t1, ia], uv_px[t1, ib], uv_px[t1, ic]
    P, Q = pos[t1, ia], pos[t1, ib]
    k = (j2 + 2) % 3  # t2's corner off the edge
    R = pos[t2, k]
    # t2's own chart, in the order (P, Q, R)
    same = np.array_equal(pos[t2, j2], P)
    pa, pb = (j2, (j2 + 1) % 3) if same else ((j2 + 1) % 3, j2)
    src = np.stack([uv_px[t2, pa], uv_px[t2, pb], uv_px[t2, k]])
    e3 = Q - P
    L3 = float(np.linalg.norm(e3))
    e = b - a
    L2 = float(np.linalg.norm(e))
    if L3 < 1e-12 or L2 < 1e-6:
        return None
    along = float(np.dot(R - P, e3)) / L3**2
    h = float(np.linalg.norm(R - P - along * e3))
    n = np.array([-e[1], e[0]]) / L2
    if np.dot(n, c - a) > 0:
        n = -n
    r = a + along * e + h * (L2 / L3) * n
    return np.stack([a, b, r]), src


@dataclass
class SeamLink:
    """One side of a seam edge in texture pixels: the edge a→b, the unit vector pointing out
    of this island across it, and the affine map from this island's plane to the other
    island's chart (this island's gutter → the surface beyond the seam; its interior → the
    other island's gutter, which holds this island's surface after padding)."""

    a: np.ndarray
    b: np.ndarray
    out: np.ndarray
    to_other: np.ndarray  # 2×3


def pad_texture(rgb: np.ndarray, uv: np.ndarray, pos: np.ndarray, pad: int, *,
                seams: bool = True, full_cover: bool = False
                ) -> tuple[np.ndarray, np.ndarray, list[SeamLink]]:
    """The texture with its empty texels filled (module docstring, step 2): float32 H×W×3,
    the island mask, and the seam sides whose gutter was filled from across the seam (for
    `blend_seams`). `seams=False` skips the across-seam copy (dilation and push-pull only)."""
    shape = rgb.shape[:2]
    col = rgb[..., :3].astype(np.float32)
    mask = np.ones(shape, bool) if full_cover else island_mask(uv, shape)
    if mask.all() or not mask.any():
        return col, mask, []
    filled = mask.copy()
    links: list[SeamLink] = []
    if seams and pad > 0:
        uv_px = _to_px(uv - np.floor(uv.min(axis=1, keepdims=True)), shape)
        dist = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 3)
        gutter = (dist <= pad) & ~mask
        h, w = shape
        # read from the islands grown by 2 texels, so bilinear lookups at an island's border
        # never mix in the unrelated texels around it
        source = _dilate(col.copy(), mask.copy(), 2)[0]
        for t1, j1, t2, j2 in seam_edges(uv_px, pos):
            for (ta, ja, tb, jb) in ((t1, j1, t2, j2), (t2, j2, t1, j1)):
                got = _unfold(uv_px, pos, ta, ja, tb, jb)
                if got is None:
                    continue
                dst, src = got
                # the strip beyond the edge, `pad` deep: texels there are read from the
                # other side through the unfolded triangle's affine map (kept only where that
                # lands inside the other island)
                a, b = dst[0], dst[1]
                out = dst[2] - a - np.dot(dst[2] - a, b - a) / np.dot(b - a, b - a) * (b - a)
                out = out / max(float(np.linalg.norm(out)), 1e-9)
                quad = np.stack([a, b, b + out * (pad + 1), a + out * (pad + 1)])
                covered = _quad_strip(quad, w, h)
                if covered is None:
                    continue
                x0, y0, strip = covered
                y1, x1 = y0 + strip.shape[0], x0 + strip.shape[1]
                region = strip & gutter[y0:y1, x0:x1] & ~filled[y0:y1, x0:x1]
                ys, xs = np.nonzero(region)
                A = cv2.getAffineTransform(dst.astype(np.float32), src.astype(np.float32))
                gx, gy = xs + x0, ys + y0
                sx = A[0, 0] * gx + A[0, 1] * gy + A[0, 2]
                sy = A[1, 0] * gx + A[1, 1] * gy + A[1, 2]
                inside = mask[np.round(sy).astype(np.int64) % h, np.round(sx).astype(np.int64) % w]
                gx, gy, sx, sy = gx[inside], gy[inside], sx[inside], sy[inside]
                if len(gx) == 0:
                    continue
                links.append(SeamLink(a, b, out, A.astype(np.float64)))
                col[gy, gx] = _bilinear(source, sx, sy)
                filled[gy, gx] = True
    col, filled = _dilate(col, filled, pad)
    return _push_pull(col, filled.astype(np.float32)), mask, links


def _quad_strip(quad: np.ndarray, w: int, h: int) -> tuple[int, int, np.ndarray] | None:
    """The texels a UV quad covers on a w×h texture: (x0, y0, boolean strip of its bounding
    box, clipped to the texture), or None when it lies off the texture."""
    x0 = max(0, int(np.floor(quad[:, 0].min())))
    y0 = max(0, int(np.floor(quad[:, 1].min())))
    x1 = min(w, int(np.ceil(quad[:, 0].max())) + 1)
    y1 = min(h, int(np.ceil(quad[:, 1].max())) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    strip = np.zeros((y1 - y0, x1 - x0), np.uint8)
    _fill(strip, quad[None], (x0, y0))
    return x0, y0, strip.astype(bool)


def blend_seams(styled: np.ndarray, mask: np.ndarray, links: list[SeamLink],
                width: float) -> np.ndarray:
    """Make the stylised texture continuous across its seams.

    Even with padding, the generator paints each side of a seam on its own and its strokes
    do not line up texel for texel. After padding, though, each island's gutter holds the
    stylised surface of the island across the seam, so every texel near a seam has a second
    opinion: the colour the *other* island's padding got for the same surface point. Within
    `width` texels of a seam each island texel is blended towards it, with a weight falling
    from ½ at the edge to 0 at `width` texels in, so both sides reach the same colour at
    the seam and fade back to their own strokes inside. H×W×C uint8 in and out (alpha kept).
    """
    if not links or width <= 0:
        return styled
    h, w = mask.shape
    img = styled[..., :3].astype(np.float32)
    acc = np.zeros_like(img)
    for link in links:
        a, b, out = link.a, link.b, link.out
        quad = np.stack([a, b, b - out * width, a - out * width])
        covered = _quad_strip(quad, w, h)
        if covered is None:
            continue
        x0, y0, strip = covered
        ys, xs = np.nonzero(strip & mask[y0:y0 + strip.shape[0], x0:x0 + strip.shape[1]])
        if len(ys) == 0:
            continue
        gx, gy = (xs + x0).astype(np.float64), (ys + y0).astype(np.float64)
        t = -((gx - a[0]) * out[0] + (gy - a[1]) * out[1])  # depth inside the island
        wgt = np.clip(0.5 * (1 - t / width), 0, 0.5)[:, None]
        M = link.to_other
        sx = M[0, 0] * gx + M[0, 1] * gy + M[0, 2]
        sy = M[1, 0] * gx + M[1, 1] * gy + M[1, 2]
        iy, ix = ys + y0, xs + x0
        acc[iy, ix] += wgt * (_bilinear(img, sx, sy) - img[iy, ix])
    out_img = styled.copy()
    out_img[..., :3] = np.clip(np.round(img + acc), 0, 255).astype(np.uint8)
    return out_img


def _dilate(col: np.ndarray, filled: np.ndarray, rounds: int) -> tuple[np.ndarray, np.ndarray]:
    """`rounds` rounds of the filled texels' colours spreading into their empty neighbours
    (each new texel: the mean of its filled 8-neighbours)."""
    kernel = np.ones((3, 3), np.float32)
    for _ in range(max(0, rounds)):
        if filled.all():
            break
        f = filled.astype(np.float32)
        s = cv2.filter2D(col * f[..., None], -1, kernel, borderType=cv2.BORDER_REFLECT)
        c = cv2.filter2D(f, -1, kernel, borderType=cv2.BORDER_REFLECT)
        new = ~filled & (c > 0.5)
        col[new] = s[new] / c[new][:, None]
        filled = filled | new
    return col, filled


def _push_pull(col: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Fill texels where `m` is 0 with coverage-weighted averages from a coarser level."""
    if m.min() > 0 or m.max() == 0 or max(col.shape[:2]) <= 1:
        return col
    h, w = col.shape[:2]
    h2, w2 = max(1, (h + 1) // 2), max(1, (w + 1) // 2)
    pc = cv2.resize(col * m[..., None], (w2, h2), interpolation=cv2.INTER_AREA)
    pm = cv2.resize(m, (w2, h2), interpolation=cv2.INTER_AREA)
    pc = pc.reshape(h2, w2, -1)
    small = np.where(pm[..., None] > 0, pc / np.maximum(pm, 1e-8)[..., None], 0)
    small = _push_pull(small.astype(np.float32), (pm > 0).astype(np.float32))
    up = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1)
    return np.where(m[..., None] > 0, col, up).astype(np.float32)


@dataclass
class SeamScore:
    """`across`: mean absolute RGB difference (0..255) between texel colours just inside each
    side of the seams, at the same surface point along the edge; `inside`: the same for pairs
    of points the same distance apart within one island (the texture's own roughness at that
    distance); `ratio` = across / inside: 1 means a seam is no rougher than the surface
    anywhere else, i.e. invisible."""

    across: float
    inside: float
    edges: int

    @property
    def ratio(self) -> float:
        return self.across / max(self.inside, 1e-9)


def seam_mismatch(texture: np.ndarray, uv: np.ndarray, pos: np.ndarray,
                  inset: float = 1.0, samples: int = 24, depth: float = 6.0) -> SeamScore:
    """How well a texture agrees with itself across its seams (`SeamScore`): colours sampled
    at `samples` points along every seam edge, `inset` texels into each side (so pairs
    2·inset apart on the surface), against pairs 2·inset apart at `depth` texels inside."""
    uv_px = _to_px(uv - np.floor(uv.min(axis=1, keepdims=True)), texture.shape[:2])
    img = texture[..., :3].astype(np.float32)
    s = (np.arange(samples) + 0.5) / samples * 0.8 + 0.1  # keep clear of the corners
    across, inside = [], []

    def side(t, j, params, d):
        a, b, c = uv_px[t, j], uv_px[t, (j + 1) % 3], uv_px[t, (j + 2) % 3]
        p = a + params[:, None] * (b - a)
        e = (b - a) / max(float(np.linalg.norm(b - a)), 1e-9)
        n = np.array([-e[1], e[0]])
        n = n if np.dot(n, c - a) > 0 else -n  # perpendicular to the edge, into the triangle
        q = p + d * n
        return _bilinear(img, q[:, 0], q[:, 1])

    for t1, j1, t2, j2 in seam_edges(uv_px, pos):
        same = np.array_equal(pos[t2, j2], pos[t1, j1])
        across.append(np.abs(side(t1, j1, s, inset) - side(t2, j2, s if same else 1 - s,
                                                           inset)).mean())
        for t, j in ((t1, j1), (t2, j2)):
            inside.append(np.abs(side(t, j, s, depth - inset)
                                 - side(t, j, s, depth + inset)).mean())
    if not across:
        return SeamScore(0.0, 0.0, 0)
    return SeamScore(float(np.mean(across)), float(np.mean(inside)), len(across))


def default_pad(shape: tuple[int, int]) -> int:
    """Gutter width in texels: about the generator's reach at the border (1/32 of the long
    side, at least 4 texels)."""
    return max(4, round(max(shape) / 32))


def texture_stroke(stroke: float, shape: tuple[int, int], uv_area_px: float,
                   world_area: float, total_world_area: float) -> float:
    """The stroke factor a texture is stylised at.

    The Stylizer paints at a working long side set by the stroke alone (stylejax.stroke), so a
    plain call gives strokes relative to the *texture's* size. On a model that is not enough:
    an atlas whose islands fill half of it, or a model split over several textures, would get
    strokes that look bigger on the surface than the same style on a photo. We therefore size
    strokes relative to the *model's surface*: a texture of long side L with texel density
    d = sqrt(UV area in texels / 3D area) is painted at a working side of
    `pack_work_side(stroke) · L / (d · sqrt(total 3D area))`, i.e. as if the model's whole
    surface were unrolled into one photo of the usual working size. One fully used texture
    covering the whole model gets exactly the photo's stroke; a half-used atlas gets strokes
    1/√2 as big relative to the texture (the same on the surface); two textures sharing the
    surface get bigger strokes each. The factor is clamped to the stroke range
    (MIN_STROKE..MAX_STROKE) and is the plain stroke when areas are unknown or degenerate.
    """
    L = max(shape)
    if uv_area_px <= 0 or world_area <= 0 or total_world_area <= 0:
        return stroke
    ratio = L * math.sqrt(world_area) / (math.sqrt(uv_area_px) * math.sqrt(total_world_area))
    return float(np.clip(stroke / ratio, MIN_STROKE, MAX_STROKE))


def _areas(uv_px: np.ndarray, pos: np.ndarray) -> tuple[float, float]:
    if len(pos) == 0:
        return 0.0, 0.0
    d1, d2 = uv_px[:, 1] - uv_px[:, 0], uv_px[:, 2] - uv_px[:, 0]
    uv_area = 0.5 * np.abs(d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]).sum()
    world = 0.5 * np.linalg.norm(np.cross(pos[:, 1] - pos[:, 0], pos[:, 2] - pos[:, 0]),
                                 axis=1).sum()
    return float(uv_area), float(world)


# -- decoding and encoding texture images ----------------------------------------------------
def _megapixels(n: int) -> str:
    return (f"{n / 1e6:.1f}" if n >= 1e6 else f"{n / 1e6:.2f}").removesuffix(".0")


def size_text(n: int) -> str:
    """Bytes as a person reads them in a limit's message: 62.1 MB, 150 kB."""
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{max(1, round(n / 1e3))} kB"


def _decode_texture(data: bytes, name: str, limits: ModelLimits = DEFAULT_LIMITS,
                    header_only: bool = False) -> tuple[np.ndarray, str]:
    """The texture's pixels and format; `header_only`: its size only (an H×W×0 array), read
    from the header, so a check costs no decoding."""
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(data))
        w, h = im.size
        if max(w, h) > limits.max_texture_side or w * h > limits.max_texture_pixels:
            raise ModelTooLargeError(
                f"The texture {echo(name)} is {w}×{h}; textures up to "
                f"{limits.max_texture_side} px on a side and "
                f"{_megapixels(limits.max_texture_pixels)} megapixels are taken.",
                limits.max_texture_pixels)
        fmt = im.format or "PNG"
        if header_only:
            return np.zeros((h, w, 0), np.uint8), fmt
        im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise BrokenModelError(f"The texture {echo(name)} is not a picture we can read.") \
            from err
    alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    arr = np.asarray(im.convert("RGBA" if alpha else "RGB"))
    return arr, fmt if fmt in ("PNG", "JPEG", "WEBP") else "PNG"


def _encode_texture(pixels: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    im = Image.fromarray(pixels)
    if fmt == "JPEG":
        im.convert("RGB").save(buf, "JPEG", quality=92)
    elif fmt == "WEBP":
        im.save(buf, "WEBP", quality=92)
    else:
        im.save(buf, "PNG")
    return buf.getvalue()


def _read_limited(path: Path, what: str, max_bytes: int = MAX_MODEL_BYTES) -> bytes:
    try:
        size = path.stat().st_size
    except OSError:
        raise BrokenModelError(f"The model refers to {echo(what)}, which is missing.") from None
    if size > max_bytes:
        raise ModelTooLargeError(f"{echo(what)} is {size_text(size)}; the limit is "
                                 f"{size_text(max_bytes)}.", max_bytes)
    return path.read_bytes()


# -- glTF / GLB ----------------------------------------------------------------------------
_COMPONENTS = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16,
               5125: np.uint32, 5126: np.float32}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


class _Gltf:
    def __init__(self, path: Path, data: bytes, limits: ModelLimits = DEFAULT_LIMITS):
        try:
            import pygltflib
        except ImportError:
            raise StyleJAXError("glTF and GLB models need pygltflib: install the 'mesh' "
                                "extra (pip install 'stylejax[mesh]').") from None
        self.path = path
        self.limits = limits
        self.glb = data[:4] == GLB_MAGIC
        try:
            if self.glb:
                self.doc = pygltflib.GLTF2.load_from_bytes(data)
            else:
                text = data.decode("utf-8-sig")
                if not isinstance(json.loads(text), dict) or '"asset"' not in text:
                    raise ValueError("no asset")
                self.doc = pygltflib.GLTF2.gltf_from_json(text)
        except StyleJAXError:
            raise
        except Exception as err:  # noqa: BLE001 - any parse failure: not a model we read
            raise NotAModelError() from err
        if self.doc is None:
            raise NotAModelError()
        self._buffers: dict[int, bytes] = {}
        self.skipped_shared = 0  # colour textures left alone: they are other maps too

    # data access
    def buffer(self, i: int) -> bytes:
        if i in self._buffers:
            return self._buffers[i]
        try:
            buf = self.doc.buffers[i]
        except (IndexError, TypeError):
            raise BrokenModelError("The model refers to a data buffer it does not have.") \
                from None
        if buf.uri is None:
            data = self.doc.binary_blob() or b""
        elif buf.uri.startswith("data:"):
            data = _data_uri(buf.uri)
        else:
            data = _read_limited(self._local(buf.uri), buf.uri, self.limits.max_bytes)
        if len(data) < (buf.byteLength or 0):
            raise BrokenModelError("The model's data buffer is shorter than it says.")
        self._buffers[i] = data
        return data

    def _local(self, uri: str) -> Path:
        return self.path.parent / urllib.parse.unquote(uri)

    def view(self, i: int) -> bytes:
        try:
            v = self.doc.bufferViews[i]
        except (IndexError, TypeError):
            raise BrokenModelError("The model refers to data it does not have.") from None
        data = self.buffer(v.buffer)
        start = v.byteOffset or 0
        if start + v.byteLength > len(data):
            raise BrokenModelError("The model's data is shorter than it says.")
        return data[start:start + v.byteLength]

    def accessor(self, i: int) -> np.ndarray:
        try:
            acc = self.doc.accessors[i]
        except (IndexError, TypeError):
            raise BrokenModelError("The model refers to an accessor it does not have.") \
                from None
        dtype = np.dtype(_COMPONENTS[acc.componentType]).newbyteorder("<")
        width = _WIDTH[acc.type]
        if acc.bufferView is None:
            return np.zeros((acc.count, width), np.float64)
        view = self.doc.bufferViews[acc.bufferView]
        raw = self.view(acc.bufferView)
        item = dtype.itemsize * width
        stride = view.byteStride or item
        off = acc.byteOffset or 0
        if off + stride * (acc.count - 1) + item > len(raw) and acc.count:
            raise BrokenModelError("The model's accessor runs past its data.")
        arr = np.lib.stride_tricks.as_strided(
            np.frombuffer(raw, np.uint8, offset=off), (acc.count, item), (stride, 1))
        out = np.ascontiguousarray(arr).view(dtype).reshape(acc.count, width).astype(np.float64)
        if acc.normalized and dtype.kind in "iu":
            out = out / np.iinfo(dtype).max
        return out

    def image_bytes(self, i: int) -> tuple[bytes, str]:
        try:
            img = self.doc.images[i]
        except (IndexError, TypeError):
            raise BrokenModelError("A material refers to a texture image the model does not "
                                   "have.") from None
        if img.bufferView is not None:
            return self.view(img.bufferView), img.name or f"image {i}"
        if img.uri is None:
            raise BrokenModelError(f"The model's image {i} has no data.")
        if img.uri.startswith("data:"):
            return _data_uri(img.uri), img.name or f"image {i}"
        return (_read_limited(self._local(img.uri), Path(img.uri).name, self.limits.max_bytes),
                Path(img.uri).name)

    # textures
    def sites(self, decode: bool = True) -> list[TextureSite]:
        """The base-colour textures and their triangles; `decode` False: sizes only."""
        doc = self.doc
        lim = self.limits
        used_elsewhere: set[int] = set()
        for mat in doc.materials:  # images that also serve as normal / other maps
            for info in (mat.normalTexture, mat.occlusionTexture, mat.emissiveTexture,
                         getattr(mat.pbrMetallicRoughness, "metallicRoughnessTexture", None)):
                if info is not None and info.index is not None \
                        and 0 <= info.index < len(doc.textures):
                    used_elsewhere.add(doc.textures[info.index].source)
        sites: dict[int, TextureSite] = {}
        n_tris = 0
        for mesh in doc.meshes:
            for prim in mesh.primitives:
                if prim.material is None or not 0 <= prim.material < len(doc.materials):
                    continue
                pbr = doc.materials[prim.material].pbrMetallicRoughness
                info = pbr.baseColorTexture if pbr is not None else None
                if info is None or info.index is None:
                    continue
                if not 0 <= info.index < len(doc.textures):
                    raise BrokenModelError("A material refers to a texture the model does not "
                                           "have.")
                src = doc.textures[info.index].source
                if src is None or not 0 <= src < len(doc.images):
                    raise BrokenModelError("A texture refers to an image the model does not "
                                           "have.")
                if src in used_elsewhere:
                    self.skipped_shared += 1  # also a normal / roughness map: stylising it
                    continue  # would break the shading
                if src not in sites:
                    if len(sites) >= lim.max_textures:
                        raise _too_many_textures(lim)
                    data, name = self.image_bytes(src)
                    pixels, fmt = _decode_texture(data, name, lim, header_only=not decode)
                    sites[src] = TextureSite(src, name, pixels, fmt)
                site = sites[src]
                uv, pos, full = self._triangles(prim, info)
                n_tris += len(pos)
                if n_tris > lim.max_triangles:
                    raise _too_many_triangles(lim)
                site.uv.append(uv)
                site.pos.append(pos)
                site.full_cover |= full
        return list(sites.values())

    def _triangles(self, prim, info) -> tuple[np.ndarray, np.ndarray, bool]:
        attrs = prim.attributes
        uv_acc = getattr(attrs, f"TEXCOORD_{info.texCoord or 0}", None)
        if attrs.POSITION is None or uv_acc is None:
            return np.zeros((0, 3, 2)), np.zeros((0, 3, 3)), uv_acc is None
        pos = self.accessor(attrs.POSITION)[:, :3]
        uv = self.accessor(uv_acc)[:, :2]
        n = len(pos)
        idx = (self.accessor(prim.indices)[:, 0].astype(np.int64) if prim.indices is not None
               else np.arange(n))
        mode = 4 if prim.mode is None else prim.mode
        if mode == 5:  # strip
            k = np.arange(len(idx) - 2)
            tris = np.stack([idx[k], idx[k + 1 + (k % 2)], idx[k + 2 - (k % 2)]], 1)
        elif mode == 6:  # fan
            k = np.arange(1, len(idx) - 1)
            tris = np.stack([np.full_like(k, idx[0]), idx[k], idx[k + 1]], 1)
        elif mode == 4:
            tris = idx[:len(idx) // 3 * 3].reshape(-1, 3)
        else:
            return np.zeros((0, 3, 2)), np.zeros((0, 3, 3)), False
        if len(tris) and (tris.max() >= min(n, len(uv)) or tris.min() < 0):
            raise BrokenModelError("The model's triangles refer to vertices it does not have.")
        t_uv = uv[tris]
        full = False
        ext = (info.extensions or {}).get("KHR_texture_transform")
        if ext:
            if ext.get("rotation"):
                full = True
            t_uv = t_uv * np.asarray(ext.get("scale", [1, 1]), np.float64) \
                + np.asarray(ext.get("offset", [0, 0]), np.float64)
        return t_uv, pos[tris], full

    # writing
    def write(self, dst: Path, new: dict[int, bytes]) -> None:
        doc = self.doc
        for i, data in new.items():
            img = doc.images[i]
            if img.bufferView is not None:
                continue
            if img.uri.startswith("data:"):
                mime = img.mimeType or _mime(data)
                img.uri = f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
            else:
                name = f"{dst.stem}_{Path(urllib.parse.unquote(img.uri)).name}"
                (dst.parent / name).write_bytes(data)
                img.uri = urllib.parse.quote(name)
        views = {doc.images[i].bufferView: data for i, data in new.items()
                 if doc.images[i].bufferView is not None}
        changed = {doc.bufferViews[v].buffer for v in views}
        for b in changed:
            blob = self._relayout(b, views)
            buf = doc.buffers[b]
            buf.byteLength = len(blob)
            if buf.uri is None:
                doc.set_binary_blob(blob)
            elif buf.uri.startswith("data:"):
                buf.uri = "data:application/octet-stream;base64," + \
                    base64.b64encode(blob).decode("ascii")
            else:
                name = f"{dst.stem}_{Path(urllib.parse.unquote(buf.uri)).name}"
                (dst.parent / name).write_bytes(blob)
                buf.uri = urllib.parse.quote(name)
        # resources we did not change, named relative to the source: keep them reachable
        if dst.parent.resolve() != self.path.parent.resolve():
            for i, buf in enumerate(doc.buffers):
                if buf.uri and not buf.uri.startswith("data:") and i not in changed:
                    buf.uri = _relative_uri(self._local(buf.uri), dst.parent)
            for i, img in enumerate(doc.images):
                if img.uri and not img.uri.startswith("data:") and i not in new:
                    img.uri = _relative_uri(self._local(img.uri), dst.parent)
        text = doc.gltf_to_json(separators=(",", ":"), indent=None)
        if dst.suffix.lower() == ".glb":
            _write_glb(dst, text.encode("utf-8"), doc.binary_blob())
        else:
            dst.write_text(text, encoding="utf-8")

    def _relayout(self, b: int, new_views: dict[int, bytes]) -> bytes:
        """Buffer `b` with the given views' bytes replaced: views laid out again in their
        order, each start 8-byte aligned (accessors inside a view keep their offsets).
        Overlapping views are left in place and the new image bytes appended instead."""
        doc = self.doc
        old = self.buffer(b)
        ids = sorted((i for i, v in enumerate(doc.bufferViews) if v.buffer == b),
                     key=lambda i: (doc.bufferViews[i].byteOffset or 0))
        spans = [((doc.bufferViews[i].byteOffset or 0),
                  (doc.bufferViews[i].byteOffset or 0) + doc.bufferViews[i].byteLength)
                 for i in ids]
        overlap = any(s2[0] < s1[1] for s1, s2 in zip(spans, spans[1:]))
        out = bytearray(old) if overlap else bytearray()
        for i in ids:
            v = doc.bufferViews[i]
            if overlap and i not in new_views:
                continue
            data = new_views.get(i, self.view(i))
            out += b"\0" * (-len(out) % 8)
            v.byteOffset = len(out)
            v.byteLength = len(data)
            out += data
        out += b"\0" * (-len(out) % 4)
        return bytes(out)


def _relative_uri(target: Path, folder: Path) -> str:
    try:
        rel = os.path.relpath(target.resolve(), folder.resolve())
    except ValueError:  # another drive
        rel = str(target.resolve())
    return urllib.parse.quote(Path(rel).as_posix())


def _data_uri(uri: str) -> bytes:
    try:
        head, _, payload = uri.partition(",")
        if ";base64" in head:
            return base64.b64decode(payload, validate=False)
        return urllib.parse.unquote_to_bytes(payload)
    except ValueError:
        raise BrokenModelError("The model holds damaged embedded data.") from None


def _mime(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:4] == b"RIFF":
        return "image/webp"
    return "image/png"


def _write_glb(dst: Path, json_bytes: bytes, blob: bytes | None) -> None:
    import struct

    json_bytes += b" " * (-len(json_bytes) % 4)
    chunks = [struct.pack("<I", len(json_bytes)) + b"JSON" + json_bytes]
    if blob:
        blob = blob + b"\0" * (-len(blob) % 4)
        chunks.append(struct.pack("<I", len(blob)) + b"BIN\0" + blob)
    body = b"".join(chunks)
    dst.write_bytes(GLB_MAGIC + struct.pack("<II", 2, 12 + len(body)) + body)


# -- OBJ + MTL ----------------------------------------------------------------------------
_MTL_OPTS = {"-blendu": 1, "-blendv": 1, "-bm": 1, "-boost": 1, "-cc": 1, "-clamp": 1,
             "-imfchan": 1, "-mm": 2, "-o": 3, "-s": 3, "-t": 3, "-texres": 1, "-type": 1}
_MAP_KEYS = ("map_ka", "map_kd", "map_ks", "map_ns", "map_d", "map_bump", "bump", "disp",
             "decal", "refl", "map_pr", "map_pm", "map_ps", "map_ke", "norm")


def _split_map(rest: str) -> tuple[str, str]:
    """An MTL map statement's arguments → (options text, file name)."""
    toks = rest.split()
    i = 0
    while i < len(toks) and toks[i].lower() in _MTL_OPTS:
        n = _MTL_OPTS[toks[i].lower()]
        i += 1
        taken = 0
        while taken < n and i < len(toks) - 1:
            try:
                float(toks[i])
            except ValueError:
                if toks[i - 1].lower() not in ("-blendu", "-blendv", "-clamp", "-imfchan",
                                               "-type"):
                    break
            i += 1
            taken += 1
    return " ".join(toks[:i]), " ".join(toks[i:])


def _too_many_textures(limits: ModelLimits) -> ModelTooLargeError:
    n = limits.max_textures
    return ModelTooLargeError(f"The model has more than {n} texture{'s' * (n != 1)}; up to "
                              f"{n} can be stylised.", n)


def _too_many_triangles(limits: ModelLimits) -> ModelTooLargeError:
    return ModelTooLargeError(f"The model has more than {limits.max_triangles:,} triangles.",
                              limits.max_triangles)


class _Obj:
    def __init__(self, path: Path, data: bytes, limits: ModelLimits = DEFAULT_LIMITS):
        self.path = path
        self.limits = limits
        if b"\0" in data[:4096]:
            raise NotAModelError()
        self.text = data.decode("utf-8", errors="replace")
        self.lines = self.text.splitlines(keepends=True)
        v: list[list[float]] = []
        vt: list[list[float]] = []
        self.mtllibs: list[tuple[int, list[str]]] = []  # (line number, file names)
        faces: dict[str, list[tuple[list[int], list[int]]]] = {}
        current = None
        try:
            for n, line in enumerate(self.lines):
                s = line.strip()
                if not s or s[0] == "#":
                    continue
                key, _, rest = s.partition(" ")
                if key == "v":
                    v.append([float(x) for x in rest.split()[:3]])
                elif key == "vt":
                    p = [float(x) for x in rest.split()[:2]]
                    vt.append(p + [0.0] * (2 - len(p)))
                elif key == "f":
                    vi, ti = [], []
                    for tok in rest.split():
                        parts = tok.split("/")
                        a = int(parts[0])
                        vi.append(a - 1 if a > 0 else len(v) + a)
                        t = int(parts[1]) if len(parts) > 1 and parts[1] else None
                        ti.append(-1 if t is None else (t - 1 if t > 0 else len(vt) + t))
                    faces.setdefault(current, []).append((vi, ti))
                elif key == "usemtl":
                    current = rest.strip()
                elif key == "mtllib":
                    name = rest.strip()
                    names = [name] if (path.parent / name).is_file() else name.split()
                    self.mtllibs.append((n, names))
        except ValueError:
            raise NotAModelError() from None
        if not v or not faces:
            raise NotAModelError()
        self.v = np.asarray(v, np.float64)
        self.vt = np.asarray(vt, np.float64).reshape(-1, 2)
        self.faces = faces
        self.materials: dict[str, str] = {}  # material → map_Kd file (relative to its mtl)
        self.mtl_of: dict[str, Path] = {}
        for _, names in self.mtllibs:
            for name in names:
                self._read_mtl(path.parent / name, name)

    def _read_mtl(self, mtl: Path, name: str) -> None:
        text = _read_limited(mtl, Path(name).name, self.limits.max_bytes).decode(
            "utf-8", errors="replace")
        current = None
        for line in text.splitlines():
            key, _, rest = line.strip().partition(" ")
            if key == "newmtl":
                current = rest.strip()
            elif key.lower() == "map_kd" and current is not None:
                _, fname = _split_map(rest)
                if fname:
                    self.materials[current] = fname
                    self.mtl_of[current] = mtl

    def sites(self, decode: bool = True) -> list[TextureSite]:
        """The map_Kd textures and their triangles; `decode` False: sizes only."""
        lim = self.limits
        sites: dict[Path, TextureSite] = {}
        n_tris = 0
        for mat, faces in self.faces.items():
            if mat not in self.materials:
                continue
            tex = (self.mtl_of[mat].parent / self.materials[mat].replace("\\", "/")).resolve()
            if tex not in sites:
                if len(sites) >= lim.max_textures:
                    raise _too_many_textures(lim)
                data = _read_limited(tex, Path(self.materials[mat]).name, lim.max_bytes)
                pixels, fmt = _decode_texture(data, tex.name, lim, header_only=not decode)
                sites[tex] = TextureSite(tex, tex.name, pixels, fmt)
            tris_v, tris_t = [], []
            for vi, ti in faces:
                if min(ti) < 0:
                    continue
                for k in range(1, len(vi) - 1):
                    tris_v.append([vi[0], vi[k], vi[k + 1]])
                    tris_t.append([ti[0], ti[k], ti[k + 1]])
            n_tris += len(tris_v)
            if n_tris > lim.max_triangles:
                raise _too_many_triangles(lim)
            if not tris_v:
                continue
            tv, tt = np.asarray(tris_v), np.asarray(tris_t)
            if tv.max() >= len(self.v) or tt.max() >= len(self.vt) or min(tv.min(),
                                                                           tt.min()) < 0:
                raise BrokenModelError("The model's faces refer to vertices it does not have.")
            uv = self.vt[tt].copy()
            uv[..., 1] = 1.0 - uv[..., 1]  # OBJ's v runs upwards, image rows downwards
            sites[tex].uv.append(uv)
            sites[tex].pos.append(self.v[tv])
        return list(sites.values())

    def write(self, dst: Path, new: dict[Path, bytes]) -> None:
        out_dir = dst.parent
        tex_names: dict[Path, str] = {}
        for tex, data in new.items():
            name = f"{dst.stem}_{tex.name}"
            (out_dir / name).write_bytes(data)
            tex_names[tex] = name
        lines = list(self.lines)
        mtl_count = sum(len(names) for _, names in self.mtllibs)
        k = 0
        for n, names in self.mtllibs:
            new_names = []
            for name in names:
                k += 1
                new_name = f"{dst.stem}.mtl" if mtl_count == 1 else f"{dst.stem}_{k}.mtl"
                self._write_mtl(self.path.parent / name, out_dir / new_name, tex_names)
                new_names.append(new_name)
            end = "\n" if lines[n].endswith("\n") else ""
            lines[n] = "mtllib " + " ".join(new_names) + end
        dst.write_text("".join(lines), encoding="utf-8", newline="")

    def _write_mtl(self, src: Path, dst: Path, tex_names: dict[Path, str]) -> None:
        text = src.read_bytes().decode("utf-8", errors="replace")
        out = []
        moved = dst.parent.resolve() != src.parent.resolve()
        for line in text.splitlines(keepends=True):
            key, _, rest = line.strip().partition(" ")
            if key.lower() in _MAP_KEYS:
                opts, fname = _split_map(rest)
                if fname:
                    target = (src.parent / fname.replace("\\", "/")).resolve()
                    end = "\n" if line.endswith("\n") else ""
                    if key.lower() == "map_kd" and target in tex_names:
                        line = f"{key} {opts + ' ' if opts else ''}{tex_names[target]}{end}"
                    elif moved:
                        rel = os.path.relpath(target, dst.parent.resolve())
                        line = f"{key} {opts + ' ' if opts else ''}{Path(rel).as_posix()}{end}"
            out.append(line)
        dst.write_text("".join(out), encoding="utf-8", newline="")


# -- the whole job ----------------------------------------------------------------------------
def is_model_file(path: str | os.PathLike) -> bool:
    """Whether a file is a model we stylise (.glb .gltf .obj, or GLB content)."""
    p = Path(path)
    if p.suffix.lower() in MODEL_SUFFIXES:
        return True
    try:
        with open(p, "rb") as f:
            return f.read(4) == GLB_MAGIC
    except OSError:
        return False


def load_model(path: str | os.PathLike, limits: ModelLimits = DEFAULT_LIMITS):
    """The model's reader (glTF/GLB or OBJ), checked for size and format."""
    p = Path(path)
    data = _read_limited(p, p.name, limits.max_bytes) if p.exists() else None
    if data is None:
        raise FileNotFoundError(2, "No such file", str(p))
    if data[:4] == GLB_MAGIC or p.suffix.lower() in (".glb", ".gltf"):
        return _Gltf(p, data, limits)
    if p.suffix.lower() == ".obj":
        return _Obj(p, data, limits)
    raise NotAModelError()


def _zip_member(info: zipfile.ZipInfo, dest: Path) -> Path | None:
    """Where a zip member goes under `dest` (None: skipped, e.g. macOS metadata); refuses
    names that would land outside it (absolute, '..', a drive) and links."""
    name = info.filename.replace("\\", "/")
    parts = name.split("/")
    if info.is_dir() or parts[0] == "__MACOSX" or parts[-1].startswith("._"):
        return None
    if name.startswith("/") or ":" in parts[0] or any(p in ("", ".", "..") for p in parts):
        raise BrokenModelError(f"The zip holds a file outside its folder ({echo(name)}); "
                               "zip the model's folder as it is.")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise BrokenModelError(f"The zip holds a link ({echo(name)}); put the file itself "
                               "in the zip.")
    if info.flag_bits & 0x1:
        raise BrokenModelError("The zip is password-protected; send it without a password.")
    target = dest.joinpath(*parts)
    if not target.resolve().is_relative_to(dest.resolve()):
        raise BrokenModelError(f"The zip holds a file outside its folder ({echo(name)}).")
    return target


def unpack_model_zip(data: bytes, dest: str | os.PathLike,
                     limits: ModelLimits = DEFAULT_LIMITS) -> Path:
    """Unpack a zip of one model (.gltf or .obj with its .bin / .mtl and textures) into the
    folder `dest` and return the model file. Safe for any upload: no member lands outside
    `dest` (absolute names, '..', links refused), at most MAX_ZIP_FILES files, and the
    unpacked bytes are counted while they are written, so a zip bomb stops at
    `limits.max_bytes` whatever its headers claim."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError):
        raise NotAModelError("That zip file cannot be read; zip the model's folder again.") \
            from None
    if len(infos) > MAX_ZIP_FILES:
        raise ModelTooLargeError(f"The zip holds {len(infos)} files; up to {MAX_ZIP_FILES} "
                                 "are taken.", MAX_ZIP_FILES)
    total = 0
    models: list[Path] = []
    with zf:
        for info in infos:
            target = _zip_member(info, dest)
            if target is None:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(1 << 20):
                        total += len(chunk)
                        if total > limits.max_bytes:
                            raise ModelTooLargeError(
                                f"The zip unpacks to more than {size_text(limits.max_bytes)};"
                                f" models up to {size_text(limits.max_bytes)} are taken.",
                                limits.max_bytes)
                        out.write(chunk)
            except (zipfile.BadZipFile, EOFError, OSError, ValueError,
                    NotImplementedError) as err:  # CRC, truncation, an unknown compression
                raise BrokenModelError(f"The zip is damaged ({echo(info.filename)} cannot be "
                                       "unpacked).") from err
            if target.suffix.lower() in MODEL_SUFFIXES:
                models.append(target)
    if not models:
        raise NotAModelError("The zip holds no .gltf, .glb or .obj model.")
    if len(models) > 1:
        names = ", ".join(echo(m.relative_to(dest).as_posix()) for m in models[:3])
        raise NotAModelError(f"The zip holds several models ({names}); send one at a time.")
    return models[0]


def zip_folder(folder: str | os.PathLike) -> bytes:
    """Every file under `folder` as a zip (names relative to it, sorted): a zip job's result,
    the unpacked upload with the stylised model beside the original."""
    folder = Path(folder)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            zf.write(path, path.relative_to(folder).as_posix())
    return buf.getvalue()


@dataclass(frozen=True)
class ModelSummary:
    """What `check_model` found: the base-colour textures and their pixels in all."""

    textures: int
    texture_pixels: int


def _no_textures(model) -> NoTexturesError:
    if getattr(model, "skipped_shared", 0):
        return NoTexturesError("This model's colour textures are also its normal or material "
                               "maps; stylising them would break its shading, so there is "
                               "nothing to stylise.")
    return NoTexturesError()


def check_model(path: str | os.PathLike, limits: ModelLimits = DEFAULT_LIMITS) -> ModelSummary:
    """Check a model as `stylize_model` will read it, without decoding a texture: the format,
    every reference (buffers, images, indices, vertices), the limits (texture sizes from their
    headers) and that it has a texture to stylise. For a service's submit: the errors are the
    same ModelError a job would fail with, raised before anything is stored."""
    model = load_model(path, limits)
    sites = model.sites(decode=False)
    if not sites:
        raise _no_textures(model)
    return ModelSummary(len(sites), sum(s.pixels.shape[0] * s.pixels.shape[1] for s in sites))


def check_output(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """The output path, if it suits the input: the same kind of file, not the input itself."""
    s, d = Path(src), Path(dst)
    kind = ".obj" if s.suffix.lower() == ".obj" else ".gl"
    ok = d.suffix.lower() == ".obj" if kind == ".obj" else d.suffix.lower() == s.suffix.lower()
    if not ok:
        want = ".obj" if kind == ".obj" else (s.suffix.lower() or ".glb")
        raise StyleJAXError(f"Save a {want} model as {want} (-o styled{want}).")
    if d.exists() and d.resolve() == s.resolve():
        raise StyleJAXError("The output would overwrite the model; choose another name.")
    return d


def stylize_model(src: str | os.PathLike, dst: str | os.PathLike, stylizer, request, *,
                  pad: int | None = None, seams: bool = True, relative_stroke: bool = True,
                  progress: Callable[[int, int, TextureReport], None] | None = None,
                  limits: ModelLimits = DEFAULT_LIMITS,
                  should_stop: Callable[[], bool] | None = None) -> ModelResult:
    """Stylise every base-colour texture of the model `src` and write the model to `dst`
    (module docstring). `pad` is the gutter width in texels (None: `default_pad`); `seams`
    and `relative_stroke` switch off the across-seam fill and the texel-density stroke (for
    comparisons). `progress(i, n, report)` is called after each texture; `should_stop()`
    before each one (True: JobCancelledError, nothing written). `limits`: `ModelLimits`."""
    start = time.monotonic()
    dst = check_output(src, dst)
    model = load_model(src, limits)
    sites = model.sites()
    if not sites:
        raise _no_textures(model)
    tris = [s.triangles() for s in sites]
    areas = [_areas(_to_px(uv, s.pixels.shape[:2]), pos) for s, (uv, pos) in zip(sites, tris)]
    total_world = sum(a[1] for a in areas)
    new: dict = {}
    reports = []
    for i, (site, (uv, pos), (uv_area, world)) in enumerate(zip(sites, tris, areas)):
        if should_stop is not None and should_stop():
            raise JobCancelledError()
        t0 = time.monotonic()
        shape = site.pixels.shape[:2]
        width = default_pad(shape) if pad is None else pad
        filled, mask, links = pad_texture(site.pixels, uv, pos, width, seams=seams,
                                          full_cover=site.full_cover)
        stroke = (texture_stroke(request.stroke, shape, uv_area, world, total_world)
                  if relative_stroke and not site.full_cover else request.stroke)
        req = dataclasses.replace(request, stroke=stroke)
        rgb = np.clip(np.round(filled), 0, 255).astype(np.uint8)
        styled = stylizer.run_many(req, [rgb])[0]
        if seams:
            styled = blend_seams(styled, mask, links, width)
        if site.pixels.shape[2] == 4:
            styled = np.concatenate([styled, site.pixels[..., 3:]], axis=2)
        new[site.key] = _encode_texture(styled, site.format)
        report = TextureReport(site.name, shape[1], shape[0], float(mask.mean()), len(links),
                               stroke, time.monotonic() - t0)
        reports.append(report)
        if progress is not None:
            progress(i, len(sites), report)
    dst.parent.mkdir(parents=True, exist_ok=True)
    model.write(dst, new)
    return ModelResult(reports, time.monotonic() - start, dst)


__all__ = ["DEFAULT_LIMITS", "MODEL_SUFFIXES", "ModelLimits", "ModelResult", "ModelSummary",
           "SeamLink", "SeamScore", "TextureReport", "TextureSite", "blend_seams",
           "check_model", "check_output", "default_pad", "is_model_file", "island_mask",
           "load_model", "pad_texture", "seam_edges", "seam_mismatch", "size_text",
           "stylize_model", "texture_stroke", "unpack_model_zip", "zip_folder"]
