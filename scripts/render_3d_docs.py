"""The picture and figures of docs/3d.md: a textured cube, stylised, rendered before and after.

    PYTHONPATH=. python scripts/render_3d_docs.py [--style great-wave] [--out docs/images]

The cube (tests/meshes.py) has six separate UV islands, so all 12 edges are seams; its
texture is the sample photo seen from the cube's centre (continuous over the surface). Three
columns: the original, the texture stylised as it is (no padding), and `stylize_model`
(across-seam padding + seam blending), each from two angles by a small numpy rasteriser
(perspective-correct UVs, bilinear texture lookups, z-buffer, Lambert shading).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stylejax import mesh_textures as mt  # noqa: E402
from stylejax.request import StyleRequest  # noqa: E402
from stylejax.stylizer import Stylizer  # noqa: E402
from tests.meshes import cube_model, write_cube_glb  # noqa: E402


def photo_colour(photo: np.ndarray):
    """3D points on the unit cube → the photo as seen from the cube's centre (a continuous
    panorama over the surface)."""
    h, w = photo.shape[:2]
    img = photo.astype(np.float32)

    def colour(p):
        d = p - 0.5
        d = d / np.linalg.norm(d, axis=-1, keepdims=True)
        lon = np.arctan2(d[..., 0], d[..., 2])  # -π..π
        lat = np.arcsin(np.clip(d[..., 1], -1, 1))  # -π/2..π/2
        x = (lon / np.pi * 0.5 + 0.5) * (w - 1)
        y = (0.5 - lat / np.pi) * (h - 1)
        flat = mt._bilinear(img, x.reshape(-1), y.reshape(-1))
        return flat.reshape(p.shape[:-1] + (3,))

    return colour


def look_at(eye, target=(0.5, 0.5, 0.5), up=(0, 1, 0)):
    eye, target, up = (np.asarray(v, np.float64) for v in (eye, target, up))
    f = target - eye
    f /= np.linalg.norm(f)
    r = np.cross(f, up)
    r /= np.linalg.norm(r)
    u = np.cross(r, f)
    return eye, np.stack([r, u, -f])


def render(pos, uv, idx, tex, eye, size=320, fov=38.0) -> np.ndarray:
    """Rasterise the textured triangles seen from `eye`: H×W×3 uint8 on a light background."""
    eye, R = look_at(eye)
    cam = (pos.astype(np.float64) - eye) @ R.T  # camera looks down -z
    f = 0.5 * size / np.tan(np.radians(fov) / 2)
    z = -cam[:, 2]
    sx = size / 2 + f * cam[:, 0] / z
    sy = size / 2 - f * cam[:, 1] / z
    out = np.full((size, size, 3), 238.0)
    depth = np.full((size, size), np.inf)
    th, tw = tex.shape[:2]
    texf = tex[..., :3].astype(np.float32)
    light = np.array([0.4, 0.8, 0.45])
    light /= np.linalg.norm(light)
    for t in idx.reshape(-1, 3):
        x, y, zz = sx[t], sy[t], z[t]
        x0, x1 = max(0, int(np.floor(x.min()))), min(size - 1, int(np.ceil(x.max())))
        y0, y1 = max(0, int(np.floor(y.min()))), min(size - 1, int(np.ceil(y.max())))
        if x1 < x0 or y1 < y0:
            continue
        gy, gx = np.mgrid[y0:y1 + 1, x0:x1 + 1] + 0.5
        den = (y[1] - y[2]) * (x[0] - x[2]) + (x[2] - x[1]) * (y[0] - y[2])
        if abs(den) < 1e-9:
            continue
        b0 = ((y[1] - y[2]) * (gx - x[2]) + (x[2] - x[1]) * (gy - y[2])) / den
        b1 = ((y[2] - y[0]) * (gx - x[2]) + (x[0] - x[2]) * (gy - y[2])) / den
        b2 = 1 - b0 - b1
        inside = (b0 >= 0) & (b1 >= 0) & (b2 >= 0)
        # perspective-correct interpolation
        w0, w1, w2 = b0 / zz[0], b1 / zz[1], b2 / zz[2]
        inv = w0 + w1 + w2
        d = 1 / inv
        ys, xs = np.nonzero(inside & (d < depth[y0:y1 + 1, x0:x1 + 1]))
        if len(ys) == 0:
            continue
        w0, w1, w2, d = w0[ys, xs], w1[ys, xs], w2[ys, xs], d[ys, xs]
        u = (w0 * uv[t[0], 0] + w1 * uv[t[1], 0] + w2 * uv[t[2], 0]) * d
        v = (w0 * uv[t[0], 1] + w1 * uv[t[1], 1] + w2 * uv[t[2], 1]) * d
        col = mt._bilinear(texf, u * tw - 0.5, v * th - 0.5)
        p = pos[t].astype(np.float64)
        n = np.cross(p[1] - p[0], p[2] - p[0])
        n /= np.linalg.norm(n)
        if np.dot(n, eye - p[0]) < 0:
            n = -n
        shade = 0.55 + 0.45 * max(0.0, float(np.dot(n, light)))
        out[ys + y0, xs + x0] = col * shade
        depth[ys + y0, xs + x0] = d
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--style", default="great-wave")
    ap.add_argument("--out", default=str(ROOT / "docs" / "images"))
    ap.add_argument("--size", type=int, default=512, help="texture side")
    args = ap.parse_args()
    from PIL import Image, ImageDraw

    photo = np.asarray(Image.open(ROOT / "stylejax" / "assets" / "sample.jpg").convert("RGB"))
    colour = photo_colour(photo)
    pos, uv, idx, tex = cube_model(args.size, colour=colour)
    stylizer = Stylizer()
    request = StyleRequest.create(style=args.style).resolved(stylizer.styles)
    with tempfile.TemporaryDirectory() as tmp:
        src = write_cube_glb(Path(tmp) / "cube.glb", args.size, colour=colour)
        res = mt.stylize_model(src, Path(tmp) / "styled.glb", stylizer, request)
        ours = mt.load_model(res.output).sites()[0].pixels
    rep = res.textures[0]
    import dataclasses

    raw = stylizer.run_many(dataclasses.replace(request, stroke=rep.stroke), [tex])[0]
    U = uv[idx].reshape(-1, 3, 2).astype(np.float64)
    P = pos[idx].reshape(-1, 3, 3).astype(np.float64)
    for name, t in (("original", tex), ("stylised as is", raw), ("stylize_model", ours)):
        s = mt.seam_mismatch(t, U, P, inset=0.5)
        print(f"{name:15s} across seams {s.across:5.1f}  within islands {s.inside:5.1f}  "
              f"ratio {s.ratio:.2f}")
    views = [(2.6, 2.1, 2.4), (-1.6, -1.2, -1.5)]
    labels = ["original texture", "stylised as it is (no padding)",
              "stylize model.glb (padded + seam blend)"]
    cell = 320
    sheet = Image.new("RGB", (3 * cell, 2 * cell + 24), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, (t, label) in enumerate(zip((tex, raw, ours), labels)):
        draw.text((c * cell + 8, 6), label, fill=(0, 0, 0))
        for r, eye in enumerate(views):
            sheet.paste(Image.fromarray(render(pos, uv, idx, t, eye, cell)),
                        (c * cell, 24 + r * cell))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sheet.save(out / "mesh_before_after.png", optimize=True)
    atlas = np.concatenate([tex[..., :3], raw[..., :3], ours[..., :3]], axis=1)
    Image.fromarray(atlas).resize((3 * 256, 256), Image.LANCZOS).save(
        out / "mesh_atlas.jpg", quality=85)
    print(f"wrote {out / 'mesh_before_after.png'} and {out / 'mesh_atlas.jpg'} "
          f"(texture {rep.width}×{rep.height}, stroke {rep.stroke:.2f}, {rep.seconds:.1f} s)")


if __name__ == "__main__":
    main()
