"""Small textured models made from scratch for the 3D texture tests and docs pictures.

`cube_model()` is a unit cube whose six faces are separate UV islands in a 3×2 atlas with
gaps, so every one of its 12 edges is a seam. The texture is painted from the 3D position of
each texel's surface point (stripes and waves), so it is continuous across every seam on the
surface while the atlas around the islands is filled with unrelated magenta noise.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

# per face: origin, u axis, v axis (right-handed, outward normal = u × v)
_FACES = [
    ((1, 0, 1), (0, 0, -1), (0, 1, 0)),   # +x
    ((0, 0, 0), (0, 0, 1), (0, 1, 0)),    # -x
    ((0, 1, 1), (1, 0, 0), (0, 0, -1)),   # +y
    ((0, 0, 0), (1, 0, 0), (0, 0, 1)),    # -y
    ((0, 0, 1), (1, 0, 0), (0, 1, 0)),    # +z
    ((1, 0, 0), (-1, 0, 0), (0, 1, 0)),   # -z
]
SIZE = 256
CELL = SIZE // 3  # 85 texels per atlas cell
MARGIN = 10  # texels of empty atlas around each island


def surface_colour(p: np.ndarray) -> np.ndarray:
    """RGB 0..255 for 3D points (…,3) on the cube: a pattern continuous over the surface."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    r = 0.5 + 0.45 * np.sin(9.0 * x + 4.0 * y)
    g = 0.5 + 0.45 * np.sin(7.0 * y - 5.0 * z + 1.0)
    b = 0.5 + 0.45 * np.cos(8.0 * z + 3.0 * x)
    stripes = (np.sin(20.0 * (x + y + z)) > 0.6).astype(np.float64)
    rgb = np.stack([r, g, b], -1) * (1 - 0.5 * stripes[..., None])
    return np.clip(rgb * 255, 0, 255)


def cube_model(size: int = SIZE, seed: int = 0, colour=surface_colour):
    """(positions (24,3) float32, uvs (24,2) float32 in glTF space, indices (36,) uint16,
    texture size×size×3 uint8); `colour` paints 3D points (…,3) → RGB 0..255."""
    cell = size // 3
    margin = max(2, round(MARGIN * size / SIZE))
    pos, uv, idx = [], [], []
    tex = np.random.default_rng(seed).integers(0, 256, (size, size, 3)).astype(np.float64)
    tex[..., 0] = 200 + tex[..., 0] * 0.2  # magenta-ish noise: clearly not the surface
    tex[..., 1] *= 0.2
    tex[..., 2] = 180 + tex[..., 2] * 0.2
    for f, (o, du, dv) in enumerate(_FACES):
        o, du, dv = (np.asarray(a, np.float64) for a in (o, du, dv))
        cx, cy = (f % 3) * cell + margin, (f // 3) * cell + margin
        side = cell - 2 * margin
        base = len(pos)
        for a, b in ((0, 0), (1, 0), (1, 1), (0, 1)):
            pos.append(o + a * du + b * dv)
            uv.append(((cx + a * side) / size, (cy + (1 - b) * side) / size))
        idx += [base, base + 1, base + 2, base, base + 2, base + 3]
        # paint the island (and 0 texels beyond) from the surface point of each texel
        ys, xs = np.mgrid[cy:cy + side, cx:cx + side]
        a = (xs + 0.5 - cx) / side
        b = 1 - (ys + 0.5 - cy) / side
        p = o + a[..., None] * du + b[..., None] * dv
        tex[ys, xs] = colour(p)
    return (np.asarray(pos, np.float32), np.asarray(uv, np.float32),
            np.asarray(idx, np.uint16), np.clip(tex, 0, 255).astype(np.uint8))


def png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def write_cube_glb(path: Path, size: int = SIZE, colour=surface_colour,
                   textures: list[np.ndarray] | None = None) -> Path:
    """The cube as a GLB with its texture embedded in the binary chunk (a buffer view).

    `textures`: images (any shape) to use instead of the painted atlas; with several, the
    cube's faces are split between that many primitives, each with its own material and
    texture (the UVs are the atlas's, in 0..1, so any image shape maps)."""
    import pygltflib as g

    pos, uv, idx, tex = cube_model(size, colour=colour)
    images = [png_bytes(t) for t in (textures or [tex])]
    n = len(images)
    per = -(-len(idx) // 3 // n) * 3  # indices per primitive, whole triangles
    chunks = [idx[k * per:(k + 1) * per] for k in range(n)]
    parts = [*(c.tobytes() for c in chunks), pos.tobytes(), uv.tobytes(), *images]
    blob, offsets = b"", []
    for p in parts:
        blob += b"\0" * (-len(blob) % 4)
        offsets.append(len(blob))
        blob += p
    blob += b"\0" * (-len(blob) % 4)
    targets = [g.ELEMENT_ARRAY_BUFFER] * n + [g.ARRAY_BUFFER] * 2 + [None] * n
    views = [g.BufferView(buffer=0, byteOffset=o, byteLength=len(p), target=t)
             for o, p, t in zip(offsets, parts, targets)]
    doc = g.GLTF2(
        asset=g.Asset(version="2.0", generator="stylejax tests"),
        scene=0, scenes=[g.Scene(nodes=[0])], nodes=[g.Node(mesh=0, name="cube")],
        meshes=[g.Mesh(name="cube", primitives=[g.Primitive(
            attributes=g.Attributes(POSITION=n, TEXCOORD_0=n + 1), indices=k, material=k)
            for k in range(n)])],
        accessors=[
            *(g.Accessor(bufferView=k, componentType=g.UNSIGNED_SHORT, count=len(chunks[k]),
                         type=g.SCALAR) for k in range(n)),
            g.Accessor(bufferView=n, componentType=g.FLOAT, count=len(pos), type=g.VEC3,
                       min=pos.min(0).tolist(), max=pos.max(0).tolist()),
            g.Accessor(bufferView=n + 1, componentType=g.FLOAT, count=len(uv), type=g.VEC2),
        ],
        bufferViews=views, buffers=[g.Buffer(byteLength=len(blob))],
        images=[g.Image(bufferView=n + 2 + k, mimeType="image/png",
                        name="cube-colours" if k == 0 else f"cube-colours-{k}")
                for k in range(n)],
        samplers=[g.Sampler(magFilter=9729, minFilter=9987)],
        textures=[g.Texture(source=k, sampler=0) for k in range(n)],
        materials=[g.Material(name="painted" if k == 0 else f"painted-{k}",
                              pbrMetallicRoughness=g.PbrMetallicRoughness(
                                  baseColorTexture=g.TextureInfo(index=k),
                                  metallicFactor=0.0)) for k in range(n)],
    )
    doc.set_binary_blob(blob)
    doc.save_binary(str(path))
    return path


def write_cube_obj(folder: Path, size: int = SIZE) -> Path:
    """The cube as OBJ + MTL + PNG in `folder`; returns the .obj."""
    pos, uv, idx, tex = cube_model(size)
    (folder / "cube.png").write_bytes(png_bytes(tex))
    (folder / "cube.mtl").write_text("# test material\nnewmtl painted\nKd 1 1 1\n"
                                     "map_Kd -s 1 1 1 cube.png\n")
    lines = ["# test cube", "mtllib cube.mtl", "o cube"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in pos]
    lines += [f"vt {u:.6f} {1 - v:.6f}" for u, v in uv]  # OBJ's v runs upwards
    lines.append("usemtl painted")
    for k in range(0, len(idx), 3):
        a, b, c = (int(i) + 1 for i in idx[k:k + 3])
        lines.append(f"f {a}/{a} {b}/{b} {c}/{c}")
    path = folder / "cube.obj"
    path.write_text("\n".join(lines) + "\n")
    return path
