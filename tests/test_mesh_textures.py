"""3D model textures (stylejax.mesh_textures): a textured cube made here as GLB, glTF and
OBJ + MTL + PNG, stylised with the default pack, reloaded; seams measured; bad files."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pygltflib")

from stylejax import mesh_textures as mt  # noqa: E402
from stylejax.errors import (  # noqa: E402
    BrokenModelError,
    ModelTooLargeError,
    NotAModelError,
    NoTexturesError,
    StyleJAXError,
)
from stylejax.pack import default_pack_dir  # noqa: E402
from stylejax.request import StyleRequest  # noqa: E402
from tests.meshes import cube_model, png_bytes, write_cube_glb, write_cube_obj  # noqa: E402

needs_pack = pytest.mark.skipif(not (default_pack_dir() / "pack.json").is_file(),
                                reason="the default style pack is not installed")


@pytest.fixture(scope="module")
def stylizer():
    from stylejax.stylizer import Stylizer

    return Stylizer()


@pytest.fixture(scope="module")
def request_wave(stylizer):
    return StyleRequest.create(style="wave").resolved(stylizer.styles)


def _glb_parts(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    assert data[:4] == b"glTF"
    n = struct.unpack("<I", data[12:16])[0]
    doc = json.loads(data[20:20 + n])
    rest = data[20 + n:]
    blob = rest[8:8 + struct.unpack("<I", rest[:4])[0]] if rest else b""
    return doc, blob


def _texture(model) -> np.ndarray:
    sites = model.sites()
    assert len(sites) == 1
    return sites[0].pixels


def _cube_tris():
    pos, uv, idx, tex = cube_model()
    return (uv[idx].reshape(-1, 3, 2).astype(np.float64),
            pos[idx].reshape(-1, 3, 3).astype(np.float64), tex)


def _outside(tex_shape) -> np.ndarray:
    uv, _, _ = _cube_tris()
    return ~mt.island_mask(uv, tex_shape)


# -- islands, padding, seams (no network) ---------------------------------------------------
def test_island_mask_is_exact_and_seams_found():
    uv, pos, tex = _cube_tris()
    mask = mt.island_mask(uv, tex.shape[:2])
    assert mask.sum() == 6 * 65 * 65  # six 65×65 islands, texel centres only
    px = mt._to_px(uv, tex.shape[:2])
    assert len(mt.seam_edges(px, pos)) == 12  # every cube edge joins two islands


def test_overlapping_islands_counted_once():
    """Mirrored or stacked UVs (two triangles on the same texels) must not cancel out, as
    fillPoly's even-odd rule would do."""
    uv, _, _ = _cube_tris()
    one = mt.island_mask(uv[:2], (256, 256))
    np.testing.assert_array_equal(mt.island_mask(np.concatenate([uv[:2], uv[:2]]), (256, 256)),
                                  one)
    tiled = uv * 3  # repeating texture: each face covers 0.58 of it, all stacked
    assert mt.island_mask(tiled, (256, 256)).mean() == pytest.approx((3 * 65 / 256) ** 2, 0.03)


def test_padding_copies_the_surface_across_seams():
    uv, pos, tex = _cube_tris()
    filled, mask, links = mt.pad_texture(tex, uv, pos, 8)
    assert len(links) == 24  # both sides of the 12 seams
    # the gutter beyond each seam holds the other island's texels: sampled 3 texels outside
    # one island they equal the texels 3 inside the other (the surface continues)
    px = mt._to_px(uv, tex.shape[:2])
    s = np.linspace(0.1, 0.9, 20)
    worst = 0.0
    for t1, j1, t2, j2 in mt.seam_edges(px, pos):
        def at(t, j, params, d):
            a, b, c = px[t, j], px[t, (j + 1) % 3], px[t, (j + 2) % 3]
            e = (b - a) / np.linalg.norm(b - a)
            n = np.array([-e[1], e[0]])
            n = n if np.dot(n, c - a) > 0 else -n
            q = a + params[:, None] * (b - a) + d * n
            return mt._bilinear(filled, q[:, 0], q[:, 1])
        same = np.array_equal(pos[t2, j2], pos[t1, j1])
        worst = max(worst, np.abs(at(t1, j1, s, -3) - at(t2, j2, s if same else 1 - s, 3)).max())
    assert worst < 1.0
    # nothing of the magenta noise is left anywhere outside the islands
    out = ~mask
    noise = tex[out].astype(np.float32)
    assert np.corrcoef(noise[:, 1], filled[out][:, 1])[0, 1] < 0.2
    np.testing.assert_array_equal(filled[mask], tex[mask].astype(np.float32))


def test_texture_stroke_follows_texel_density():
    # one fully used texture covering the whole model: the photo's stroke
    assert mt.texture_stroke(1.0, (256, 256), 256 * 256, 6.0, 6.0) == pytest.approx(1.0)
    # a half-used atlas: strokes 1/√2 as big relative to the texture
    assert mt.texture_stroke(1.0, (256, 256), 256 * 128, 6.0, 6.0) == pytest.approx(0.7071, 1e-3)
    # two textures sharing the surface: bigger strokes each
    assert mt.texture_stroke(1.0, (256, 256), 256 * 256, 3.0, 6.0) == pytest.approx(1.4142, 1e-3)
    assert mt.texture_stroke(1.0, (256, 256), 0, 0, 0) == 1.0  # unknown: the plain stroke


# -- stylising real models ----------------------------------------------------------------
@needs_pack
def test_glb_stylised_same_structure(tmp_path, stylizer, request_wave):
    src = write_cube_glb(tmp_path / "cube.glb")
    lines = []
    result = mt.stylize_model(src, tmp_path / "out" / "styled.glb", stylizer, request_wave,
                              progress=lambda i, n, rep: lines.append((i, n, rep)))
    assert [(i, n) for i, n, _ in lines] == [(0, 1)] and lines[0][2].seam_edges == 24
    before, blob0 = _glb_parts(src)
    after, blob1 = _glb_parts(result.output)
    for key in ("nodes", "meshes", "accessors", "materials", "textures", "samplers", "scenes"):
        assert after[key] == before[key], key
    assert after["asset"] == before["asset"]
    # geometry bytes: same indices, positions and UVs, bit for bit
    for i in range(3):
        v0, v1 = before["bufferViews"][i], after["bufferViews"][i]
        assert blob0[v0["byteOffset"]:v0["byteOffset"] + v0["byteLength"]] == \
            blob1[v1["byteOffset"]:v1["byteOffset"] + v1["byteLength"]]
    assert all(v.get("byteOffset", 0) % 4 == 0 for v in after["bufferViews"])
    assert after["buffers"][0]["byteLength"] == len(blob1)
    old = mt.load_model(src)
    new = mt.load_model(result.output)
    for acc in range(3):
        np.testing.assert_array_equal(old.accessor(acc), new.accessor(acc))
    assert len(new.accessor(1)) == 24
    t0, t1 = _texture(old), _texture(new)
    assert t1.shape == t0.shape
    islands = ~_outside(t0.shape[:2])
    assert np.abs(t1[islands].astype(float) - t0[islands]).mean() > 15  # really stylised
    # outside the islands: stylised padding, not the magenta noise that was there
    out = ~islands
    assert np.corrcoef(t0[out][:, 1].astype(float), t1[out][:, 1].astype(float))[0, 1] < 0.2
    assert abs(float(t1[out].mean()) - float(t1[islands].mean())) < 60


@needs_pack
def test_seams_agree_better_with_padding(stylizer, request_wave):
    """The figures behind docs/3d.md: across-seam colour differences of the stylised texture
    (pairs 1 texel apart on the surface) without padding, with dilation only, with the
    across-seam fill, and with the fill plus seam blending."""
    uv, pos, tex = _cube_tris()
    shape = tex.shape[:2]
    pad = mt.default_pad(shape)
    uv_area, world = mt._areas(mt._to_px(uv, shape), pos)
    req = dataclasses.replace(request_wave, stroke=mt.texture_stroke(
        request_wave.stroke, shape, uv_area, world, world))

    def run(img):
        return stylizer.run_many(req, [np.clip(np.round(img), 0, 255).astype(np.uint8)])[0]

    score = {"none": mt.seam_mismatch(run(tex), uv, pos, inset=0.5)}
    filled, _, _ = mt.pad_texture(tex, uv, pos, pad, seams=False)
    score["dilation"] = mt.seam_mismatch(run(filled), uv, pos, inset=0.5)
    filled, mask, links = mt.pad_texture(tex, uv, pos, pad)
    styled = run(filled)
    score["fill"] = mt.seam_mismatch(styled, uv, pos, inset=0.5)
    score["fill+blend"] = mt.seam_mismatch(mt.blend_seams(styled, mask, links, pad), uv, pos,
                                           inset=0.5)
    print({k: (round(v.across, 1), round(v.ratio, 2)) for k, v in score.items()})
    assert score["fill+blend"].across < score["dilation"].across < score["none"].across
    assert score["fill"].across < score["none"].across
    assert score["fill+blend"].across < 0.5 * score["none"].across
    assert score["fill+blend"].ratio < 1.0  # the seams no rougher than the surface


@needs_pack
def test_obj_mtl_png(tmp_path, stylizer, request_wave):
    obj = write_cube_obj(tmp_path)
    # an alpha channel to keep
    from PIL import Image

    rgb = np.asarray(Image.open(tmp_path / "cube.png"))
    alpha = np.tile(np.linspace(40, 255, rgb.shape[1]).astype(np.uint8), (rgb.shape[0], 1))
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "cube.png")
    out_dir = tmp_path / "out"
    mt.stylize_model(obj, out_dir / "styled.obj", stylizer, request_wave)
    assert sorted(p.name for p in out_dir.iterdir()) == ["styled.mtl", "styled.obj",
                                                         "styled_cube.png"]
    a = obj.read_text().splitlines()
    b = (out_dir / "styled.obj").read_text().splitlines()
    assert len(a) == len(b)
    assert [x for x, y in zip(a, b) if x != y] == ["mtllib cube.mtl"]
    assert "mtllib styled.mtl" in b
    mtl = (out_dir / "styled.mtl").read_text()
    assert "map_Kd -s 1 1 1 styled_cube.png" in mtl and "newmtl painted" in mtl
    new = np.asarray(Image.open(out_dir / "styled_cube.png"))
    assert new.shape == (256, 256, 4)
    np.testing.assert_array_equal(new[..., 3], alpha)
    islands = ~_outside((256, 256))
    assert np.abs(new[islands][:, :3].astype(float) - rgb[islands]).mean() > 15
    # reloads with the same vertices and UVs
    m0, m1 = mt.load_model(obj), mt.load_model(out_dir / "styled.obj")
    np.testing.assert_array_equal(m0.v, m1.v)
    np.testing.assert_array_equal(m0.vt, m1.vt)


@needs_pack
def test_gltf_external_files_and_cli(tmp_path, capsys):
    """A .gltf with its geometry in a .bin and its texture as a .png, through the CLI into
    another folder: a new texture file, the .bin still found, the geometry unchanged."""
    import pygltflib

    glb = write_cube_glb(tmp_path / "cube.glb")
    doc = pygltflib.GLTF2.load(str(glb))
    blob = doc.binary_blob()
    view = doc.bufferViews[3]
    (tmp_path / "cube texture.png").write_bytes(
        blob[view.byteOffset:view.byteOffset + view.byteLength])
    doc.images[0].bufferView = None
    doc.images[0].uri = "cube%20texture.png"
    (tmp_path / "cube.bin").write_bytes(blob)
    doc.buffers[0].uri = "cube.bin"
    (tmp_path / "cube.gltf").write_text(doc.gltf_to_json())

    from stylejax.cli import main

    out = tmp_path / "styled" / "cube.gltf"
    assert main([str(tmp_path / "cube.gltf"), "--style", "wave", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "texture 1/1" in err and "seam sides padded" in err
    written = json.loads(out.read_text())
    assert written["images"][0]["uri"] == "cube_cube%20texture.png"
    assert (out.parent / "cube_cube texture.png").is_file()
    assert written["buffers"][0]["uri"] == "../cube.bin"
    m0, m1 = mt.load_model(tmp_path / "cube.gltf"), mt.load_model(out)
    for acc in range(3):
        np.testing.assert_array_equal(m0.accessor(acc), m1.accessor(acc))
    assert np.abs(_texture(m1).astype(float) - _texture(m0)).mean() > 15
    # a photo cannot be saved as a model, a model not as a photo
    assert main([str(glb), "--style", "wave", "-o", str(tmp_path / "x.png")]) == 2
    assert "Save a .glb model as .glb" in capsys.readouterr().err


# -- bad files ------------------------------------------------------------------------------
def _glb_without_texture(path: Path) -> Path:
    import pygltflib

    write_cube_glb(path)
    doc = pygltflib.GLTF2.load(str(path))
    doc.materials[0].pbrMetallicRoughness.baseColorTexture = None
    doc.save_binary(str(path))
    return path


def test_bad_files(tmp_path):
    class Never:
        def run_many(self, *a, **k):
            raise AssertionError("nothing should be stylised")

    req = StyleRequest.create(style="x")

    def stylise(src, dst, limits=mt.DEFAULT_LIMITS):
        return mt.stylize_model(src, tmp_path / dst, Never(), req, limits=limits)

    with pytest.raises(NoTexturesError, match="(?i)this model has no textures to stylise"):
        stylise(_glb_without_texture(tmp_path / "plain.glb"), "a.glb")
    import pygltflib

    shared = write_cube_glb(tmp_path / "shared.glb")  # the colour texture is the normal map
    doc = pygltflib.GLTF2.load(str(shared))
    doc.materials[0].normalTexture = pygltflib.NormalMaterialTexture(index=0)
    doc.save_binary(str(shared))
    with pytest.raises(NoTexturesError, match="normal or material maps"):
        stylise(shared, "s.glb")
    # not a model at all
    (tmp_path / "noise.glb").write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(NotAModelError):
        stylise(tmp_path / "noise.glb", "b.glb")
    (tmp_path / "notes.obj").write_text("hello, this is a shopping list\n")
    with pytest.raises(NotAModelError):
        stylise(tmp_path / "notes.obj", "c.obj")
    (tmp_path / "data.gltf").write_text('{"values": [1, 2, 3]}')
    with pytest.raises(NotAModelError):
        stylise(tmp_path / "data.gltf", "d.gltf")
    (tmp_path / "photo.obj").write_bytes(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    with pytest.raises(NotAModelError):
        stylise(tmp_path / "photo.obj", "e.obj")
    # broken references: a texture file that is missing, an image index out of range
    folder = tmp_path / "obj"
    folder.mkdir()
    obj = write_cube_obj(folder)
    (folder / "cube.png").unlink()
    with pytest.raises(BrokenModelError, match="cube.png"):
        stylise(obj, "f.obj")
    (folder / "cube.mtl").unlink()
    with pytest.raises(BrokenModelError, match="cube.mtl"):
        stylise(obj, "g.obj")
    glb = write_cube_glb(tmp_path / "broken.glb")
    doc = pygltflib.GLTF2.load(str(glb))
    doc.textures[0].source = 7
    doc.save_binary(str(glb))
    with pytest.raises(BrokenModelError):
        stylise(glb, "h.glb")
    (folder / "cube.mtl").write_text("newmtl painted\nmap_Kd cube.png\n")
    (folder / "cube.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # damaged picture
    with pytest.raises(BrokenModelError, match="not a picture"):
        stylise(obj, "i.obj")
    # huge textures
    write_cube_obj(folder)
    with pytest.raises(ModelTooLargeError, match="256×256"):
        stylise(obj, "j.obj", mt.ModelLimits(max_texture_pixels=128 * 128))
    with pytest.raises(ModelTooLargeError):
        stylise(write_cube_glb(tmp_path / "big.glb"), "k.glb", mt.ModelLimits(max_bytes=1000))
    # every one of them is a StyleJAXError the front ends translate; so is a wrong output
    with pytest.raises(StyleJAXError, match="as .obj"):
        mt.check_output(obj, tmp_path / "x.glb")
    with pytest.raises(StyleJAXError, match="overwrite"):
        mt.check_output(obj, obj)
