"""Pure parts of trainer.corpus.build_style_corpus: hashes, filters, eval exclusion, manifest."""

import csv
import json

import numpy as np
from PIL import Image

from trainer.corpus import build_style_corpus as bsc


def _painting(seed: int, size=(320, 256)) -> Image.Image:
    """A busy, colourful picture: smooth blobs plus noise, different for each seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    img = np.zeros((h, w, 3))
    for c in range(3):
        fx, fy, ph = rng.uniform(2, 9, 3)
        img[..., c] = np.sin(fx * 6 * xx + ph) * np.cos(fy * 6 * yy - ph)
    img = (img + 1) * 110 + rng.normal(0, 12, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def test_dhash_groups_resized_copy_not_other_picture():
    a = _painting(1)
    resized = a.resize((160, 128), Image.Resampling.LANCZOS)
    other = _painting(2)
    h = bsc.dhash(a)
    assert bsc.hamming(h, bsc.dhash(resized)[None])[0] <= bsc.DUP_BITS
    assert bsc.hamming(h, bsc.dhash(other)[None])[0] > bsc.DUP_BITS


def test_filters_drop_flat_tiny_and_transparent():
    assert bsc.reject_reason(_painting(3), 192) is None
    assert bsc.reject_reason(Image.new("RGB", (400, 300), (90, 120, 200)), 192) == "flat"
    assert bsc.reject_reason(_painting(4, size=(120, 100)), 192) == "tiny"
    rgba = _painting(5).convert("RGBA")
    alpha = np.zeros((rgba.height, rgba.width), dtype=np.uint8)
    alpha[:60, :60] = 255                                    # a small opaque corner only
    rgba.putalpha(Image.fromarray(alpha))
    assert bsc.reject_reason(rgba, 192) == "transparent"
    assert bsc.opaque_crop(rgba, 192) is None                # too small to crop


def test_opaque_crop_of_a_cut_out():
    rgba = _painting(6, size=(512, 512)).convert("RGBA")
    alpha = np.zeros((512, 512), dtype=np.uint8)
    alpha[100:420, 80:440] = 255
    rgba.putalpha(Image.fromarray(alpha))
    inner = bsc.opaque_crop(rgba, 192)
    assert inner is not None and min(inner.size) >= 192
    assert bsc.reject_reason(inner, 192) is None


def test_selector_drops_eval_picture_and_duplicates(tmp_path):
    root = tmp_path / "data"
    (root / "style").mkdir(parents=True)
    _painting(7).save(root / "style" / "eval.png")
    eval_set = tmp_path / "eval_set.json"
    eval_set.write_text(json.dumps({"styles": [{"name": "x", "file": "style/eval.png"}]}))
    evals = bsc.EvalPictures.load(eval_set, root)
    stats = bsc.Stats()
    sel = bsc.Selector(evals, 192, stats)

    def jpeg(im):
        path = tmp_path / "c.jpg"
        im.save(path, quality=85)
        return path.read_bytes()

    # the evaluation picture, re-encoded and resized, is excluded
    assert sel.consider(jpeg(_painting(7).resize((300, 240))), "a.jpg", tile=False) is None
    assert stats.dropped["eval-set"] == 1
    assert sel.consider(jpeg(_painting(8)), "b.jpg", tile=False) is not None
    assert sel.consider(jpeg(_painting(8).resize((250, 200))), "c.jpg", tile=False) is None
    assert stats.dropped["near-duplicate"] == 1


def test_gimp_pat_decodes(tmp_path):
    w, h = 4, 3
    name = b"test\0"
    header = (24 + len(name)).to_bytes(4, "big") + b"".join(
        v.to_bytes(4, "big") for v in (1, w, h, 3)) + b"GPAT" + name
    im = bsc.decode_gimp_pat(header + bytes(range(w * h * 3)))
    assert im.mode == "RGB" and im.size == (w, h)
    assert bsc.tile_up(im, 10).size == (12, 12)


def test_licence_from_machine_readable_copyright():
    text = ("Format: https://example.org/dep5\n\nFiles: *\nCopyright: x\nLicense: GPL-2+\n\n"
            "Files: data/art/*\nCopyright: y\nLicense: CC-BY-SA-3.0\n")
    stanzas = bsc.parse_copyright(text)
    lic = bsc.Licences.__new__(bsc.Licences)
    lic.stanzas, lic.fallback = stanzas, "see copyright"
    assert lic.for_path("/usr/share/games/g/data/art/a.png") == "CC-BY-SA-3.0"
    assert lic.for_path("/usr/share/games/g/other/a.png") == "GPL-2+"


def test_manifest_row_has_every_column(tmp_path):
    kept = bsc.Kept(_painting(9), "pkg", "1.0-1", "/usr/share/x.png", "GPL-2+", "painting")
    rows = bsc.write_corpus([kept], tmp_path, 200, bsc.Stats())
    assert tuple(rows[0]) == bsc.MANIFEST_COLUMNS
    assert all(str(v) != "" for v in rows[0].values())
    with open(tmp_path / "manifest.csv") as f:
        row = next(csv.DictReader(f))
    assert row["file"] == "images/painting_00000.jpg"
    assert max(int(row["width"]), int(row["height"])) <= 200
    assert (tmp_path / row["file"]).exists()


def test_sidecar_licence_and_non_free(tmp_path):
    culture = tmp_path / "usr/share/stellarium/skycultures/x"
    culture.mkdir(parents=True)
    (culture / "info.ini").write_text("[info]\nlicense = CC BY-NC-ND 4.0 International\n")
    lic = bsc.sidecar_licence(tmp_path, "/usr/share/stellarium/skycultures/x/a.png")
    assert lic == "CC BY-NC-ND 4.0 International"
    assert bsc.NON_FREE.search(lic)
    assert not bsc.NON_FREE.search("CC-BY-SA-3.0; GPL-2+ and LGPL-2.1+")
    assert bsc.sidecar_licence(tmp_path, "/usr/share/other/b.png") is None


def test_path_rules_and_category():
    spec = bsc.Spec("digital-art", include=(r"/story/",))
    assert bsc.wanted("/usr/share/games/g/images/story/a.jpg", spec)
    assert not bsc.wanted("/usr/share/games/g/images/icons/story/a.jpg", spec)
    assert not bsc.wanted("/usr/share/games/g/images/units/a.png", spec)
    assert bsc.category_for("/usr/share/g/Themes/Art/LandTex.png", spec) == "texture"
    wall = bsc.Spec("wallpaper")
    assert bsc.category_for("/usr/share/wallpapers/Autumn/a.jpg", wall) == "wallpaper"
