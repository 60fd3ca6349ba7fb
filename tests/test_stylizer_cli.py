"""The Stylizer API and the `stylize` command on a tiny two-style pack built here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stylejax.cli import main
from stylejax.engine import Request
from stylejax.errors import StyleJAXError, UnknownStyleError, WeightsError
from stylejax.imageio import to_float, to_uint8
from stylejax.pack import StyleInfo, default_pack_dir, save_pack
from stylejax.stylizer import Stylizer

LUM = np.array([0.299, 0.587, 0.114], np.float32)



@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory, tiny_generator) -> Path:
    root = tmp_path_factory.mktemp("pack")
    save_pack(root, tiny_generator, [StyleInfo("a", {"en": "Style A", "zh": "风格甲"}),
                                     StyleInfo("b", {"en": "Style B"})])
    return root


@pytest.fixture(scope="module")
def stylizer(pack_dir) -> Stylizer:
    return Stylizer(pack_dir, backend="jax")


@pytest.fixture(scope="module")
def photo(make_photo) -> np.ndarray:
    """96×128 uint8 photo."""
    return to_uint8(make_photo(96, 128, seed=2, noise=0.04))


@pytest.fixture(scope="module")
def files(tmp_path_factory, photo) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("in")
    paths = {"photo": d / "photo.png", "photo2": d / "second.jpg", "rgba": d / "logo.png",
             "text": d / "notes.png", "style": d / "style.png"}
    Image.fromarray(photo).save(paths["photo"])
    Image.fromarray(np.ascontiguousarray(photo[:80, :100])).save(paths["photo2"], quality=95)
    alpha = np.zeros(photo.shape[:2], np.uint8)
    alpha[:, 40:] = 255
    alpha[10:30, 60:90] = 128
    Image.fromarray(np.dstack([photo, alpha])).save(paths["rgba"])
    paths["text"].write_text("this is not a picture\n")
    yy, xx = np.mgrid[0:80, 0:80]
    stripes = np.stack([(np.sin(xx / 2.0 + yy / 3.0) > 0) * 230,
                        (np.sin(yy / 2.5) > 0) * 200, np.full_like(xx, 60)], -1)
    Image.fromarray(stripes.astype(np.uint8)).save(paths["style"])
    return paths


# -- Stylizer ------------------------------------------------------------------------------------


def test_strength_zero_returns_the_photo(stylizer, photo):
    out = stylizer.stylize(photo, "a", strength=0)
    assert out.dtype == np.uint8 and out.shape == photo.shape
    assert np.abs(out.astype(int) - photo.astype(int)).max() <= 1


def test_full_strength_is_the_engine_output(stylizer, photo):
    """The engine paints at the stroke's working side; the result is resized to the photo."""
    from stylejax.imageio import resize_long_side, resize_to
    from stylejax.stroke import pack_work_side

    out = stylizer.stylize(photo, "a")
    assert out.shape == photo.shape
    work = to_float(resize_long_side(photo, pack_work_side(1.0)))
    raw = stylizer.engine.run([Request(work, stylizer.style_weights("a"))])[0]
    np.testing.assert_array_equal(out, resize_to(to_uint8(np.asarray(raw)), photo.shape[:2]))
    assert np.abs(out.astype(int) - photo.astype(int)).mean() > 5
    half = stylizer.stylize(photo, "a", strength=0.5)
    d_half = np.abs(half.astype(int) - photo.astype(int)).mean()
    d_full = np.abs(out.astype(int) - photo.astype(int)).mean()
    assert 0.4 * d_full < d_half < 0.6 * d_full


def test_styles_prefix_index_and_blend(stylizer, photo):
    assert [s.id for s in stylizer.styles] == ["a", "b"]
    np.testing.assert_array_equal(stylizer.style_weights(1), [0, 1])
    np.testing.assert_allclose(stylizer.style_weights({"a": 1, "b": 3}), [0.25, 0.75])
    a, b = stylizer.stylize(photo, "a"), stylizer.stylize(photo, "b")
    blend = stylizer.stylize(photo, {"a": 0.5, "b": 0.5})
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5
    assert np.abs(blend.astype(int) - a.astype(int)).mean() > 1
    assert np.abs(blend.astype(int) - b.astype(int)).mean() > 1
    with pytest.raises(UnknownStyleError, match="a, b"):
        stylizer.stylize(photo, "c")


@pytest.mark.parametrize("strength", [-0.1, 1.5, float("nan")])
def test_strength_out_of_range(stylizer, photo, strength):
    with pytest.raises(StyleJAXError, match="Strength"):
        stylizer.stylize(photo, "a", strength=strength)
    with pytest.raises(StyleJAXError, match="Strength"):
        stylizer.stylize_with_image(photo, photo, strength=strength)


def test_keep_colors_keeps_photo_chroma(stylizer, photo):
    out = to_float(stylizer.stylize(photo, "b", keep_colors=True))
    styled = to_float(stylizer.stylize(photo, "b"))
    p = to_float(photo)
    raw = (styled @ LUM)[..., None] + (p - (p @ LUM)[..., None])
    ok = np.all((raw > 0.02) & (raw < 0.98), axis=-1)
    assert ok.mean() > 0.5
    chroma = out - (out @ LUM)[..., None]
    np.testing.assert_allclose(chroma[ok], (p - (p @ LUM)[..., None])[ok], atol=3 / 255)
    np.testing.assert_allclose((out @ LUM)[ok], (styled @ LUM)[ok], atol=3 / 255)


def test_mask_array_styles_only_white_area(stylizer, photo):
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[:, 64:] = 255
    out = stylizer.stylize(photo, "a", mask=mask)
    full = stylizer.stylize(photo, "a")
    assert np.abs(out[:, :64].astype(int) - photo[:, :64].astype(int)).max() <= 1
    assert np.abs(out[:, 64:].astype(int) - full[:, 64:].astype(int)).max() <= 1


def test_max_size_and_path_input(stylizer, files):
    out = stylizer.stylize(str(files["photo"]), "a", max_size=64)
    assert out.shape == (48, 64, 3)


def test_bad_photo_array(stylizer):
    with pytest.raises(StyleJAXError):
        stylizer.stylize(np.zeros((10, 10), np.uint8), "a")


def test_style_index_out_of_range(stylizer, photo):
    with pytest.raises(UnknownStyleError):
        stylizer.stylize(photo, 5)


@pytest.fixture()
def no_default_pack(monkeypatch, tmp_path):
    """Pretend no pack is installed (a fresh checkout before the trainer ran)."""
    import stylejax.stylizer

    monkeypatch.setattr(stylejax.stylizer, "default_pack_dir", lambda: tmp_path / "none")


def test_default_pack_is_installed_and_valid():
    assert (default_pack_dir() / "pack.json").is_file()
    styles = Stylizer(backend="onnx").styles
    assert len(styles) >= 8 and len({s.id for s in styles}) == len(styles)
    assert all(s.name("zh") != s.name("en") for s in styles)  # Chinese names present


def test_no_default_pack_is_a_friendly_error(no_default_pack):
    with pytest.raises(WeightsError, match="No style pack is installed"):
        _ = Stylizer(backend="jax").styles


# -- CLI -----------------------------------------------------------------------------------------


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_cli_error(rc: int, err: str, needle: str) -> None:
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("stylize: error: ") and needle in lines[0]
    assert "Traceback" not in err


def test_cli_list_styles(capsys, pack_dir):
    rc, out, err = _cli(capsys, "--pack", pack_dir, "--list-styles")
    assert rc == 0 and out == "a\nb\n" and err == ""


def test_cli_one_photo_to_file_same_size(capsys, pack_dir, files, tmp_path, stylizer):
    target = tmp_path / "sub" / "out.png"
    rc, out, err = _cli(capsys, files["photo"], "--pack", pack_dir, "--style", "a",
                        "--backend", "jax", "-o", target)
    assert rc == 0 and out == ""
    assert err.strip().startswith("wrote 1 picture(s)")  # the summary goes to stderr
    with Image.open(target) as im:
        assert im.size == (128, 96) and im.mode == "RGB"
        result = np.asarray(im)
    np.testing.assert_array_equal(result, stylizer.stylize(files["photo"], "a"))


def test_cli_two_photos_to_folder(capsys, pack_dir, files, tmp_path):
    folder = tmp_path / "outs"
    rc, _, err = _cli(capsys, files["photo"], files["photo2"], "--pack", pack_dir,
                      "--style", "b", "--backend", "jax", "-q", "-o", folder)
    assert rc == 0 and err == ""
    assert sorted(p.name for p in folder.iterdir()) == ["photo.png", "second.png"]
    with Image.open(folder / "photo.png") as a, Image.open(folder / "second.png") as b:
        assert a.size == (128, 96) and b.size == (100, 80)


def test_cli_max_size_limits_long_side(capsys, pack_dir, files, tmp_path):
    target = tmp_path / "small.jpg"
    rc, _, _ = _cli(capsys, files["photo"], "--pack", pack_dir, "--style", "a", "--max-size",
                    "64", "--backend", "jax", "-q", "-o", target)
    assert rc == 0
    with Image.open(target) as im:
        assert im.format == "JPEG" and im.size == (64, 48)


def test_cli_blend(capsys, pack_dir, files, tmp_path, stylizer):
    target = tmp_path / "blend.png"
    rc, _, _ = _cli(capsys, files["photo"], "--pack", pack_dir, "--style", "a=0.5,b=0.5",
                    "--backend", "jax", "-q", "-o", target)
    assert rc == 0
    expected = stylizer.stylize(files["photo"], {"a": 0.5, "b": 0.5})
    with Image.open(target) as im:
        np.testing.assert_array_equal(np.asarray(im), expected)
    assert np.abs(expected.astype(int) - stylizer.stylize(files["photo"], "a")).mean() > 1


def test_cli_rgba_keeps_alpha(capsys, pack_dir, files, tmp_path):
    target = tmp_path / "logo_out.png"
    rc, _, _ = _cli(capsys, files["rgba"], "--pack", pack_dir, "--style", "a",
                    "--backend", "jax", "-q", "-o", target)
    assert rc == 0
    with Image.open(files["rgba"]) as src, Image.open(target) as im:
        assert im.mode == "RGBA" and im.size == src.size
        np.testing.assert_array_equal(np.asarray(im)[..., 3], np.asarray(src)[..., 3])


def test_cli_rgba_keeps_alpha_when_resized(capsys, pack_dir, files, tmp_path):
    target = tmp_path / "logo_small.png"
    rc, _, _ = _cli(capsys, files["rgba"], "--pack", pack_dir, "--style", "a", "--max-size",
                    "64", "--backend", "jax", "-q", "-o", target)
    assert rc == 0
    with Image.open(target) as im:
        assert im.mode == "RGBA" and im.size == (64, 48)
        a = np.asarray(im)[..., 3]
    assert a[:, :16].max() == 0 and a[:, 24:].min() > 0  # transparent left, opaque right


@pytest.mark.parametrize("case", ["not-an-image", "missing-file", "unknown-style", "no-style",
                                  "strength", "no-output", "bad-pack", "stroke-word",
                                  "stroke-nan", "stroke-range"])
def test_cli_errors_exit_2_with_one_line(capsys, pack_dir, files, tmp_path, case):
    target = tmp_path / "never.png"
    base = ["--pack", pack_dir, "--backend", "jax", "-q", "-o", target]
    args, needle = {
        "not-an-image": ([files["text"], "--style", "a", *base], "not an image"),
        "missing-file": ([tmp_path / "nope.png", "--style", "a", *base],
                         "file not found: nope.png"),
        "unknown-style": ([files["photo"], "--style", "zzz", *base], "Available styles: a, b"),
        "no-style": ([files["photo"], *base], "Choose a style"),
        "strength": ([files["photo"], "--style", "a", "--strength", "1.5", *base],
                     "between 0 and 1"),
        "no-output": ([files["photo"], "--style", "a", "--pack", pack_dir], "-o OUT"),
        "bad-pack": ([files["photo"], "--style", "a", "--backend", "jax", "--pack", tmp_path,
                      "-o", target], "pack.json is missing"),
        "stroke-word": ([files["photo"], "--style", "a", "--stroke", "huge", *base],
                        "Stroke size must be small, medium, large or a number"),
        "stroke-nan": ([files["style"], "--style-image", files["style"], "--stroke", "nan",
                        "-q", "-o", target], "Stroke size must be between 0.25 and 4"),
        "stroke-range": ([files["photo"], "--style", "a", "--stroke", "9", *base],
                         "Stroke size must be between 0.25 and 4"),
    }[case]
    rc, out, err = _cli(capsys, *args)
    _assert_cli_error(rc, err, needle)
    assert out == ""
    assert not target.exists()


def test_cli_without_installed_pack(capsys, files, tmp_path, no_default_pack):
    rc, _, err = _cli(capsys, files["photo"], "--style", "a", "-o", tmp_path / "x.png")
    _assert_cli_error(rc, err, "No style pack is installed")
    rc, _, err = _cli(capsys, "--list-styles")
    _assert_cli_error(rc, err, "No style pack is installed")


@pytest.mark.parametrize("case", [
    "zero-blend",
    "negative-blend",
    "negative-max-size",
    "directory-as-photo",
    "bad-blend-number",
])
def test_cli_more_user_errors(capsys, pack_dir, files, tmp_path, case):
    target = tmp_path / "never.png"
    base = ["--pack", pack_dir, "--backend", "jax", "-q", "-o", target]
    args = {
        "zero-blend": [files["photo"], "--style", "a=0,b=0", *base],
        "negative-blend": [files["photo"], "--style", "a=-1,b=2", *base],
        "negative-max-size": [files["photo"], "--style", "a", "--max-size", "-3", *base],
        "directory-as-photo": [tmp_path, "--style", "a", *base],
        "bad-blend-number": [files["photo"], "--style", "a=x,b=1", *base],
    }[case]
    try:
        rc, _, err = _cli(capsys, *args)
    except Exception as exc:  # what a user sees as a traceback
        pytest.fail(f"{type(exc).__name__} escaped main(): {exc}")
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_nan_blend_is_refused(capsys, pack_dir, files, tmp_path):
    target = tmp_path / "nan.png"
    rc, _, _ = _cli(capsys, files["photo"], "--pack", pack_dir, "--style", "a=nan,b=1",
                    "--backend", "jax", "-q", "-o", target)
    assert rc == 2 and not target.exists()


def test_cli_stroke_sizes_reach_the_pack_path(capsys, pack_dir, files, tmp_path, stylizer):
    """--stroke small/large: the pictures the library makes for those strokes, and they differ
    (bigger strokes = the generator paints a smaller canvas that is scaled up)."""
    outs = {}
    for size in ("small", "large"):
        target = tmp_path / f"{size}.png"
        rc, _, _ = _cli(capsys, files["photo"], "--pack", pack_dir, "--style", "a", "--stroke",
                        size, "--backend", "jax", "-q", "-o", target)
        assert rc == 0
        with Image.open(target) as im:
            outs[size] = np.asarray(im)
        assert outs[size].shape == (96, 128, 3)
        np.testing.assert_array_equal(outs[size],
                                      stylizer.stylize(files["photo"], "a", stroke=size))
    assert np.abs(outs["small"].astype(int) - outs["large"]).mean() > 1


def test_cli_stroke_reaches_the_style_image_path(capsys, files, tmp_path, monkeypatch):
    """--style-image passes the stroke on (the optimisation itself is tested elsewhere)."""
    from stylejax.custom_style import CustomStyleResult

    seen = {}

    def fake(self, request, photo, style_image=None, **kwargs):
        seen.update(kwargs, stroke=request.stroke)
        return CustomStyleResult(image=photo, seconds=0.0, steps=1, stopped_early=False)

    monkeypatch.setattr(Stylizer, "run_custom", fake)
    rc, _, err = _cli(capsys, files["photo"], "--style-image", files["style"], "--stroke", "1.3",
                      "-q", "-o", tmp_path / "custom.png")
    assert rc == 0, err
    assert seen["stroke"] == 1.3


def test_cli_refine_reaches_the_request(capsys, files, tmp_path, monkeypatch):
    """--refine asks the custom path to optimise on top of the any-style model's result."""
    from stylejax.custom_style import CustomStyleResult

    seen = {}

    def fake(self, request, photo, style_image=None, **kwargs):
        seen["refine"] = request.refine
        return CustomStyleResult(image=photo, seconds=0.0, steps=0, stopped_early=False)

    monkeypatch.setattr(Stylizer, "run_custom", fake)
    for flags, want in ((["--refine"], True), ([], False)):
        rc, _, err = _cli(capsys, files["photo"], "--style-image", files["style"], *flags,
                          "-q", "-o", tmp_path / "custom.png")
        assert rc == 0, err
        assert seen["refine"] is want


def test_cli_refine_needs_a_style_picture(capsys, pack_dir, files, tmp_path):
    rc, _, err = _cli(capsys, files["photo"], "--pack", pack_dir, "--style", "a", "--refine",
                      "-o", tmp_path / "x.png")
    assert rc == 2 and "Refine is for your own style picture" in err
    assert len(err.strip().splitlines()) == 1


def test_cli_same_stem_photos_do_not_overwrite(capsys, pack_dir, files, tmp_path):
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    Image.open(files["photo"]).save(tmp_path / "d1" / "x.png")
    Image.open(files["photo2"]).save(tmp_path / "d2" / "x.png")
    folder = tmp_path / "outs"
    rc, _, _ = _cli(capsys, tmp_path / "d1" / "x.png", tmp_path / "d2" / "x.png", "--pack",
                    pack_dir, "--style", "a", "--backend", "jax", "-q", "-o", folder)
    assert rc == 2 or len(list(folder.iterdir())) == 2


def test_cli_style_image(capsys, files, tmp_path):
    """Any style picture, no pack: a tiny optimisation through the EfficientNet features."""
    target = tmp_path / "custom.png"
    rc, out, err = _cli(capsys, files["photo"], "--style-image", files["style"], "--steps", "4",
                        "--max-size", "64", "-q", "-o", target)
    assert rc == 0 and out == "" and err == ""
    with Image.open(target) as im:
        assert im.size == (64, 48)
        px = np.asarray(im.convert("RGB")).astype(float)
    assert px.std() > 5  # a picture, not a flat fill


def test_console_entry_point(tmp_path):
    """The installed `stylize` script (or `python -m stylejax.cli`) runs main and exits with its
    code: a user error exits 2 with one line on stderr and no traceback. (Listing and
    stylising through main() are tested in-process above.)"""
    script = Path(sys.executable).parent / "stylize"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "stylejax.cli"]
    env = dict(os.environ, STYLEJAX_JAX_CACHE=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
    run = dict(capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    bad = subprocess.run([*cmd, "photo.png", "-o", "x.png"], **run)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip() == ("stylize: error: Choose a style: --style NAME or "
                                  "--style-image IMG.")
    assert not (tmp_path / "x.png").exists()
    helped = subprocess.run([*cmd, "--help"], **run)
    assert helped.returncode == 0 and "--style-image" in helped.stdout


def test_default_pack_styles_differ_on_the_sample_photo():
    """Every shipped style visibly changes the photo, and no two styles look alike."""
    from pathlib import Path

    sample = Path(__file__).parents[1] / "stylejax" / "assets" / "sample.jpg"
    s = Stylizer(backend="onnx")
    photo = s.stylize(sample, 0, strength=0.0, max_size=256).astype(np.float32)
    outs = [s.stylize(sample, info.id, max_size=256).astype(np.float32) for info in s.styles]
    for out in outs:
        assert out.shape == photo.shape
        assert np.abs(out - photo).mean() > 10  # of 255: clearly stylised
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert np.abs(outs[i] - outs[j]).mean() > 5, (s.styles[i].id, s.styles[j].id)
