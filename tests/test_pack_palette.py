"""A pack's palette (pack.json "palette"): results take their style's colours, read from the
style's thumbnail; blends take the mixture's; keep-colours, regions and video frames as
documented; bad values are refused when the pack loads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stylejax.colour import colour_stats
from stylejax.errors import WeightsError
from stylejax.imageio import to_uint8
from stylejax.pack import StyleInfo, load_pack, save_pack
from stylejax.request import StyleRequest
from stylejax.stylizer import Stylizer

RED = np.clip(np.random.default_rng(0).normal([0.8, 0.2, 0.15], 0.08, (40, 40, 3)), 0, 1)
BLUE = np.clip(np.random.default_rng(1).normal([0.1, 0.25, 0.8], 0.05, (40, 40, 3)), 0, 1)


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory, tiny_generator):
    root = tmp_path_factory.mktemp("palette-pack")
    styles = [StyleInfo("a", {"en": "A"}), StyleInfo("b", {"en": "B"})]
    return save_pack(root, tiny_generator, styles,
                     thumbnails={"a": to_uint8(RED), "b": to_uint8(BLUE)}, palette=1.0)


@pytest.fixture(scope="module")
def photo(make_photo):
    return to_uint8(make_photo(64, 80, seed=2, noise=0.02))


def _mean(rgb):
    return colour_stats(rgb).mean


def test_results_take_the_styles_thumbnail_colours(pack_dir, photo):
    painted, plain = Stylizer(pack_dir, backend="jax"), Stylizer(pack_dir, backend="jax",
                                                                   palette=0.0)
    assert load_pack(pack_dir).palette == 1.0 and painted.palette == 1.0
    for style, target in (("a", RED), ("b", BLUE)):
        out = painted.stylize(photo, style)
        assert np.abs(_mean(out) - _mean(target)).max() < 0.04, style
        assert np.abs(_mean(plain.stylize(photo, style)) - _mean(target)).max() > 0.1
    # keep-colours: the photo's colours, exactly as without a palette
    np.testing.assert_array_equal(painted.stylize(photo, "a", keep_colors=True),
                                  plain.stylize(photo, "a", keep_colors=True))


def test_a_blend_takes_the_mixtures_colours(pack_dir):
    s = Stylizer(pack_dir, backend="jax")
    both = np.concatenate([RED.reshape(-1, 3)[::4], BLUE.reshape(-1, 3)[::4]])  # 1:1 mixture
    stats = s.palette_stats(np.array([0.5, 0.5]))
    np.testing.assert_allclose(stats.mean, both.mean(0), atol=0.01)
    np.testing.assert_allclose(stats.cov, np.cov(both.T), atol=0.005)


def test_regions_apply_it_per_style_and_video_frames_leave_it_out(pack_dir, photo):
    s = Stylizer(pack_dir, backend="jax")
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[:, 40:] = 255
    masked = s.stylize(photo, "b", mask=np.repeat(mask[..., None], 3, axis=2))
    assert np.abs(_mean(masked[:, 44:]) - _mean(BLUE)).max() < 0.06
    request = StyleRequest.create(style="a")
    framed = s.run_many(request, [photo], palette=False)[0]
    np.testing.assert_array_equal(framed, Stylizer(pack_dir, backend="jax", palette=0.0)
                                  .run_many(request, [photo])[0])


@pytest.mark.parametrize("value", [1.5, -0.1, "0.8", True])
def test_a_bad_palette_is_refused_when_the_pack_loads(pack_dir, tmp_path, value):
    import shutil

    root = shutil.copytree(pack_dir, tmp_path / "p")
    meta = json.loads((root / "pack.json").read_text())
    meta["palette"] = value
    (root / "pack.json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match="palette"):
        load_pack(root)


def test_a_palette_needs_every_thumbnail(tmp_path, tiny_generator):
    root = save_pack(tmp_path / "p", tiny_generator, [StyleInfo("a", {"en": "A"}),
                                                      StyleInfo("b", {"en": "B"})],
                     thumbnails={"a": to_uint8(RED)}, palette=0.5)
    with pytest.raises(WeightsError, match="thumbnail"):
        load_pack(root)
    with pytest.raises(ValueError):
        save_pack(tmp_path / "q", tiny_generator, [StyleInfo("a", {"en": "A"}),
                                                   StyleInfo("b", {"en": "B"})], palette=2.0)
