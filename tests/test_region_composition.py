"""A style per region (issue 16, part 2): the region spec of StyleRequest, the layered pixel-space
composition (stylejax.compose), the Stylizer's batching of styles, and `stylize --region`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stylejax import compose
from stylejax.cli import main
from stylejax.errors import InvalidRequestError, RegionNotFoundError
from stylejax.imageio import to_float, to_uint8
from stylejax.request import RegionSpec, RegionStyle, StyleRequest
from stylejax.stylizer import Stylizer

CONTENT = Path(__file__).resolve().parents[2] / "shared" / "data" / "content"
PERSON_PHOTO = CONTENT / "people_kphotoalbum_anne_helene.jpg"  # one woman on a beach


@pytest.fixture(scope="module")
def pack_dir(two_style_pack):
    return two_style_pack


@pytest.fixture(scope="module")
def stylizer(pack_dir) -> Stylizer:
    return Stylizer(pack_dir, backend="jax")


@pytest.fixture(scope="module")
def photo(make_photo) -> np.ndarray:
    return to_uint8(make_photo(96, 128, seed=3, noise=0.04))


def _halves(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    left = np.zeros((h, w), np.float32)
    left[:, : w // 2] = 1.0
    return left, 1.0 - left


# -- the pure composition -------------------------------------------------------------------------


def test_blend_is_the_style_where_the_mask_is_one_and_the_photo_where_zero():
    rng = np.random.default_rng(0)
    photo, styled = rng.random((2, 40, 60, 3), np.float32)
    left, _ = _halves(40, 60)
    (w,) = compose.layer_weights([("mask", left)])
    out = compose.blend(photo, [styled], [w], [1.0])
    np.testing.assert_allclose(out[:, :30], styled[:, :30], atol=1e-6)
    np.testing.assert_allclose(out[:, 30:], photo[:, 30:], atol=1e-6)
    half = compose.blend(photo, [styled], [w], [0.5])  # strength per region
    np.testing.assert_allclose(half[:, :30], (photo + styled)[:, :30] / 2, atol=1e-6)


def test_feathered_border_is_a_smooth_monotonic_ramp():
    left, _ = _halves(20, 200)
    f = compose.feather(left, 10.0)[10]
    assert np.all(np.diff(f) <= 1e-6)  # never rises: no ringing, no overshoot
    assert f[:80].min() > 0.999 and f[120:].max() < 0.001  # flat beyond ~2 radii
    assert 0.3 < f[99] < 0.7 and 0.3 < f[100] < 0.7
    ramp = f[88:112]
    assert np.all(np.diff(ramp) < -0.005)  # a real ramp across ± radius, not a step
    assert compose.feather(left, 0.0) is left


def test_layers_sum_to_at_most_one_and_the_specific_region_wins():
    h, w = 30, 40
    everywhere = np.ones((h, w), np.float32)
    person = np.zeros((h, w), np.float32)
    person[5:25, 10:30] = 1.0
    clothing = np.zeros((h, w), np.float32)
    clothing[15:25, 10:30] = 0.6  # soft: 40 % of clothing pixels fall through to person
    face = np.zeros((h, w), np.float32)
    face[5:10, 15:25] = 1.0
    # given in the "wrong" order on purpose: the order of specificity decides
    wc, we, wp = compose.layer_weights([("clothing", clothing), ("everywhere", everywhere),
                                        ("person", person)], keep=face)
    total = wc + we + wp
    assert total.max() <= 1 + 1e-6
    np.testing.assert_allclose(total[face > 0], 0.0)  # kept: the photo
    np.testing.assert_allclose(wc[20, 20], 0.6)
    np.testing.assert_allclose(wp[20, 20], 0.4)
    np.testing.assert_allclose(wp[12, 20], 1.0)
    np.testing.assert_allclose(we[0, 0], 1.0)
    np.testing.assert_allclose(we[12, 20], 0.0)


def test_complementary_regions_leave_no_gap_when_feathered():
    person, background = _halves(16, 64)
    wp, wb = compose.layer_weights([("person", compose.feather(person, 6)),
                                    ("background", compose.feather(background, 6))])
    np.testing.assert_allclose(wp + wb, 1.0, atol=1e-5)


# -- the request ---------------------------------------------------------------------------------


def test_request_round_trip_and_old_payloads():
    req = StyleRequest.create(regions=[("background", "starry"), {"region": "People",
                                                                  "style": "wave",
                                                                  "strength": 0.6}],
                              keep="faces", feather=4, strength=0.8)
    assert req.style == "starry"  # every entry has a style: the first is the request's
    assert req.regions == RegionSpec(entries=(RegionStyle("background", "starry"),
                                              RegionStyle("person", "wave", 0.6)),
                                     keep=("face",), feather=4.0)
    params = json.loads(json.dumps(req.to_params()))  # what the job book stores
    assert StyleRequest.from_params(params) == req
    old = {"style": "starry", "strength": 1.0, "keep_colors": False, "stroke": 1.0}
    assert StyleRequest.from_params(old).regions is None
    assert "regions" not in StyleRequest.create(style="a").to_params()
    assert req.batch_key() != StyleRequest.create(style="starry", strength=0.8).batch_key()
    # only a keep: styled everywhere but there
    keep_only = StyleRequest.create(style="a", keep=["face", "sky"])
    assert keep_only.regions.entries == (RegionStyle("everywhere"),)
    assert keep_only.with_changes(strength=0.5).regions == keep_only.regions


def test_request_resolves_region_styles(stylizer):
    req = StyleRequest.create(regions=["background=x"[:10].split("=")[0]], style="A")
    assert req.resolved(stylizer.styles).style == "a"
    req = StyleRequest.create(regions=[("person", "B"), ("background", "a")])
    resolved = req.resolved(stylizer.styles)
    assert [e.style for e in resolved.regions.entries] == ["b", "a"]


@pytest.mark.parametrize("kwargs, message", [
    ({"style": "a", "regions": ["nose"]}, "Unknown region 'nose'"),
    ({"style": "a", "keep": "everywhere"}, "Unknown region 'everywhere' to keep"),
    ({"style": "a", "regions": ["person", "people"]}, "given twice"),
    ({"style": "a", "regions": ["face"], "keep": "faces"}, "both styled and kept"),
    ({"regions": ["person"]}, "Choose a style for every region"),
    ({"style": "a", "regions": [("person", "b", 2)]}, "strength of person"),
    ({"style": "a", "regions": ["person"], "feather": -1}, "feather radius"),
    ({"style": "a", "regions": ["person"], "feather": "wide"}, "feather radius"),
    ({"style": "a", "regions": []}, "at least one region"),
    ({"style": "a", "regions": [{"region": "person", "colour": "red"}]}, "takes 'region'"),
    ({"style": "a", "regions": ["person"], "media": "video"}, "Regions work on photos"),
    ({"style_image": "me.png", "regions": ["person"]}, "gallery's styles"),
])
def test_bad_region_specs_are_refused_with_a_readable_message(kwargs, message):
    with pytest.raises(InvalidRequestError, match=message):
        StyleRequest.create(**kwargs)


# -- the Stylizer ----------------------------------------------------------------------------------


def test_a_region_gets_exactly_its_style(stylizer, photo):
    left, _ = _halves(*photo.shape[:2])
    full = to_float(stylizer.stylize(photo, "a"))
    req = StyleRequest.create(style="a", regions=["mask"])
    out = to_float(stylizer.run(req, photo, mask=(left * 255).astype(np.uint8)))
    assert np.abs(out[:, :64] - full[:, :64]).max() <= 1.5 / 255
    assert np.abs(out[:, 64:] - to_float(photo)[:, 64:]).max() <= 1.5 / 255
    # the old --mask path is the same case
    same = to_float(stylizer.stylize(photo, "a", mask=(left * 255).astype(np.uint8)))
    assert np.abs(same - out).max() <= 1.5 / 255


def test_two_styles_by_region_in_one_engine_batch(stylizer, photo, monkeypatch):
    """person = left half in style b, background = right half in style a (masks faked)."""
    import stylejax.regions as rg

    h, w = photo.shape[:2]
    left, right = _halves(h, w)
    monkeypatch.setattr(rg, "region_masks", lambda rgb, names: {
        "person": left, "background": right} if set(names) == {"person", "background"}
        else pytest.fail(f"asked for {names}"))
    calls = []
    run = stylizer.engine.run
    monkeypatch.setattr(stylizer.engine, "run",
                        lambda reqs, progress=None: calls.append(len(reqs)) or run(reqs, progress))
    req = StyleRequest.create(regions=[("background", "a"), ("person", "b", 0.5)])
    out = to_float(stylizer.run(req, photo))
    assert calls == [2]  # both styles of the photo in one engine call
    calls.clear()
    a = to_float(stylizer.stylize(photo, "a"))
    b = to_float(stylizer.stylize(photo, "b"))
    p = to_float(photo)
    assert np.abs(out[:, 64:] - a[:, 64:]).max() <= 1.5 / 255
    assert np.abs(out[:, :64] - (p + 0.5 * (b - p))[:, :64]).max() <= 1.5 / 255
    # several photos: still one call, photos × styles
    outs = stylizer.run_many(req, [photo, photo])
    assert calls[-1] == 4 and np.abs(to_float(outs[1]) - out).max() <= 1.5 / 255


def test_mask_region_without_a_mask_is_refused(stylizer, photo):
    with pytest.raises(InvalidRequestError, match="hand-made mask"):
        stylizer.run(StyleRequest.create(style="a", regions=["mask"]), photo)


def test_no_person_is_a_clear_error(stylizer, photo):
    with pytest.raises(RegionNotFoundError, match="No person found"):
        stylizer.run(StyleRequest.create(style="a", regions=["person"]), photo)


# -- the CLI on a real photo ---------------------------------------------------------------------


def _cli_image(pack_dir: Path, out: Path, *argv: str) -> np.ndarray:
    assert main([str(PERSON_PHOTO), "--pack", str(pack_dir), *argv, "--max-size", "256",
                 "-o", str(out), "-q"]) == 0
    return np.asarray(Image.open(out).convert("RGB"), np.float32) / 255


@pytest.mark.skipif(not PERSON_PHOTO.is_file(), reason="shared photos not present")
def test_cli_person_and_background_on_a_real_photo(pack_dir, tmp_path):
    from stylejax import regions

    photo = _cli_image(pack_dir, tmp_path / "photo.png", "--style", "a", "--strength", "0")
    full_a = _cli_image(pack_dir, tmp_path / "a.png", "--style", "a")
    full_b = _cli_image(pack_dir, tmp_path / "b.png", "--style", "b")
    person = regions.person_mask(photo)
    inside, outside = person > 0.99, person < 0.01
    assert inside.mean() > 0.2 and outside.mean() > 0.2

    styled = _cli_image(pack_dir, tmp_path / "person.png", "--style", "a", "--region", "person")
    assert np.abs(styled - full_a)[inside].max() <= 3 / 255  # the person in style a
    assert np.abs(styled - photo)[outside].max() <= 3 / 255  # the background is the photo

    both = _cli_image(pack_dir, tmp_path / "two.png", "--region", "background=a",
                      "--region", "person=b", "--keep", "faces")
    face = regions.face_mask(photo)
    assert face.max() > 0.9
    assert np.abs(both - full_a)[outside].max() <= 3 / 255
    body = inside & (regions.head_mask(photo) < 0.01)
    assert np.abs(both - full_b)[body].max() <= 3 / 255
    assert np.abs(both - photo)[face > 0.99].max() <= 3 / 255  # the face is kept
    # a smooth border: no pixel outside the range of its neighbourhood's two styles and photo
    lo = np.minimum(np.minimum(full_a, full_b), photo) - 3 / 255
    hi = np.maximum(np.maximum(full_a, full_b), photo) + 3 / 255
    assert np.all((both >= lo) & (both <= hi))


@pytest.mark.parametrize("argv, message", [
    (["--style", "a", "--region", "nose"], "Unknown region 'nose'"),
    (["--region", "person"], "Choose a style for every region"),
    (["--style", "a", "--keep", "everywhere"], "to keep"),
    (["--style", "a", "--region", "person=a:high"], "strength of person"),
    (["--style", "a", "--region", "person"], "No person found in this photo"),
    (["--region", "background=zzz"], "zzz"),
])
def test_cli_region_errors_are_one_line(capsys, pack_dir, tmp_path, photo, argv, message):
    src = tmp_path / "p.png"
    Image.fromarray(photo).save(src)
    code = main([str(src), "--pack", str(pack_dir), *argv, "-o", str(tmp_path / "o.png")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_cli_mask_with_regions_and_several_photos(capsys, pack_dir, tmp_path, photo):
    """--mask is the region 'mask'; a photo without a person is reported, the others written."""
    src, mask = tmp_path / "p.png", tmp_path / "m.png"
    Image.fromarray(photo).save(src)
    left, _ = _halves(*photo.shape[:2])
    Image.fromarray((left * 255).astype(np.uint8)).save(mask)
    out = tmp_path / "masked.png"
    assert main([str(src), "--pack", str(pack_dir), "--style", "a", "--mask", str(mask),
                 "--feather", "3", "-o", str(out), "-q"]) == 0
    got = np.asarray(Image.open(out), np.float32) / 255
    assert np.abs(got[:, 80:] - to_float(photo)[:, 80:]).max() <= 1.5 / 255
    if PERSON_PHOTO.is_file():
        folder = tmp_path / "many"
        code = main([str(src), str(PERSON_PHOTO), "--pack", str(pack_dir), "--style", "a",
                     "--region", "person", "--max-size", "128", "-o", str(folder)])
        err = capsys.readouterr().err
        assert code == 2 and "p.png: No person found" in err
        assert (folder / f"{PERSON_PHOTO.stem}.png").is_file()
        assert not (folder / "p.png").exists()
