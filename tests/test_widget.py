"""The notebook widget's logic, driven from Python the way a browser would drive it."""

from __future__ import annotations

import base64
import datetime as dt
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from notebooks import CUSTOM, StylizeWidget, widget
from stylejax.custom_style import CustomStyleConfig
from stylejax.errors import StyleJAXError, UnknownStyleError
from stylejax.generator import preserve_colors
from stylejax.imageio import resize_max_side, to_float, to_uint8
from stylejax.stroke import stroke_name
from stylejax.stylizer import Stylizer

TINY_CUSTOM = CustomStyleConfig(size=48, steps=4, min_steps=1, time_budget_s=120)



@pytest.fixture(scope="module")
def stylizer() -> Stylizer:
    return Stylizer()  # the bundled pack: real thumbnails and eight styles


@pytest.fixture(scope="module")
def optimising(tmp_path_factory) -> Stylizer:
    """The bundled pack without an any-style model: custom styles are optimised (progress,
    cancel), as on an installation that has none."""
    return Stylizer(anystyle=tmp_path_factory.mktemp("none") / "no-model")


@pytest.fixture(scope="module")
def photo(make_photo) -> np.ndarray:
    """96×128 uint8."""
    return to_uint8(make_photo(96, 128, seed=3, noise=0.03))


@pytest.fixture(scope="module")
def style_png() -> bytes:
    yy, xx = np.mgrid[0:64, 0:64]
    stripes = np.stack([(np.sin(xx / 2.0 + yy / 3.0) > 0) * 230,
                        (np.sin(yy / 2.5) > 0) * 200, np.full_like(xx, 60)], -1)
    return _png(stripes.astype(np.uint8))


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _upload(name: str, content: bytes, kind: str = "image/png") -> tuple[dict, ...]:
    """What ipywidgets 8's FileUpload holds after the browser sent a file."""
    return ({"name": name, "type": kind, "size": len(content), "content": memoryview(content),
             "last_modified": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)},)


def _w(stylizer, **kw) -> StylizeWidget:
    kw.setdefault("sync", True)
    return StylizeWidget(stylizer=stylizer, custom_config=TINY_CUSTOM, **kw)


def _diff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


def test_gallery_has_every_style_with_its_thumbnail(stylizer):
    w = _w(stylizer)
    ids = [s.id for s in stylizer.styles]
    assert list(w.style_buttons) == ids + [CUSTOM]
    thumbs = [card.children[0].value for card in w.gallery.children[:-1]]
    assert all(t[:2] == b"\xff\xd8" for t in thumbs)  # JPEG thumbnails from the pack
    assert len(set(thumbs)) == len(ids)
    assert w.style_buttons["starry-night"].description == "Starry Night"
    assert w._custom_card.layout.display == "none"  # until a custom style exists
    assert w.result is None and "Upload a photo" in w.status.value
    assert w.run() is None
    bundle = w._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_result_is_a_full_size_pil_image_and_follows_strength(stylizer, photo):
    w = widget(photo, stylizer=stylizer, sync=True)
    assert isinstance(w.result, Image.Image)
    assert w.result.size == (128, 96) and w.result.mode == "RGB"
    assert w._style_id == "starry-night"  # the first style until one is chosen
    w.select_style("great")  # unambiguous word of an id, like the chat front ends
    assert w._style_id == "great-wave"
    assert w.style_buttons["great-wave"].button_style == "primary"
    assert w.style_buttons["starry-night"].button_style == ""
    w.strength.value = 0.25
    weak = np.asarray(w.result)
    w.strength.value = 1.0
    full = np.asarray(w.result)
    assert _diff(weak, full) > 8.0
    assert _diff(weak, photo) < 0.5 * _diff(full, photo)
    # the same pixels as the library's own path (the widget adds no model logic of its own)
    ref = stylizer.stylize(photo, "great-wave", strength=0.25)
    w.strength.value = 0.25
    assert np.abs(np.asarray(w.result).astype(int) - ref).max() <= 1
    assert "Great Wave" in w.status.value and "strength 0.25" in w.status.value


def test_keep_colours_changes_the_result_and_keeps_the_photo_chroma(stylizer, photo):
    w = _w(stylizer, image=photo)
    w.select_style("kandinsky")
    plain = np.asarray(w.result)
    w.keep_colors.value = True
    kept = np.asarray(w.result)
    assert _diff(plain, kept) > 3.0
    expected = to_uint8(np.asarray(preserve_colors(to_float(photo), to_float(plain))))
    assert np.abs(kept.astype(int) - expected).max() <= 2
    assert "photo colours" in w.status.value


def test_blending_two_styles(stylizer, photo):
    w = _w(stylizer, image=photo)
    w.select_style("starry-night")
    a = np.asarray(w.result)
    assert w.mix.disabled
    w.blend_with.value = "wood"
    assert not w.mix.disabled and w.style_buttons["wood"].button_style == "info"
    assert w.style_choice == {"starry-night": 0.5, "wood": 0.5}
    half = np.asarray(w.result)
    w.mix.value = 1.0
    b = np.asarray(w.result)
    assert w.style_choice == "wood"
    assert _diff(a, b) > 8 and _diff(half, a) > 3 and _diff(half, b) > 3
    ref = stylizer.stylize(photo, {"starry-night": 0.5, "wood": 0.5})
    w.mix.value = 0.5
    assert np.abs(np.asarray(w.result).astype(int) - ref).max() <= 1
    assert w.file_name == "photo_starry-night+wood.png"
    w.mix.value = 0.0
    assert np.array_equal(np.asarray(w.result), a)


def test_stroke_size_re_renders_like_the_library(stylizer, photo):
    w = _w(stylizer, image=photo)
    w.select_style("wave")
    assert w.stroke.value == "medium" and list(w.stroke.options) == ["small", "medium", "large"]
    medium = np.asarray(w.result)
    w.stroke.value = "large"  # a control change re-renders, like strength
    large = np.asarray(w.result)
    assert _diff(medium, large) > 2
    ref = stylizer.stylize(photo, "great-wave", stroke="large")
    assert np.abs(large.astype(int) - ref).max() <= 1
    assert "large strokes" in w.status.value and w.file_name == "photo_great-wave_large.png"
    w.stroke.value = "medium"  # back again: the cached raw output, the same picture
    assert np.array_equal(np.asarray(w.result), medium)


def test_stroke_size_re_optimises_a_custom_style(stylizer, photo, style_png, monkeypatch):
    """The custom style's stroke is learnt: a new stroke size optimises again, with it (a
    recording stand-in for the optimisation; the real one is tested below)."""
    from stylejax.custom_style import CustomStyleResult

    strokes = []

    def optimise(request, photo, style, **kwargs):
        stroke = stroke_name(request.stroke)  # the widget's preset names
        strokes.append(stroke)
        out = resize_max_side(photo, 48) // (2 if stroke == "large" else 1)
        return CustomStyleResult(image=out, seconds=0.0, steps=1, stopped_early=False)

    monkeypatch.setattr(stylizer, "run_custom", optimise)
    w = _w(stylizer, image=photo)
    w.style_upload.value = _upload("stripes.png", style_png)
    first = np.asarray(w.result)
    w.stroke.value = "large"
    assert strokes == ["medium", "large"] and _diff(np.asarray(w.result), first) > 10
    w.select_style("wood")
    w.stroke.value = "medium"  # on a pack style: no optimisation…
    assert strokes == ["medium", "large"]
    w.select_style(CUSTOM)     # …until the custom style, made at "large", is chosen again
    assert strokes == ["medium", "large", "medium"] and w._style_id == CUSTOM


def test_refine_toggle_reaches_the_request_and_remakes_the_custom_style(stylizer, photo,
                                                                       style_png, monkeypatch):
    """"Refine" asks for the optimisation on top of the instant any-style result: toggling
    it makes the custom style again, with the option on the request (a recording stand-in)."""
    from stylejax.custom_style import CustomStyleResult

    asked = []

    def make(request, photo, style, **kwargs):
        asked.append(request.refine)
        return CustomStyleResult(image=resize_max_side(photo, 48), seconds=0.0,
                                 steps=4 if request.refine else 0, stopped_early=False)

    monkeypatch.setattr(stylizer, "run_custom", make)
    w = _w(stylizer, image=photo)
    w.style_upload.value = _upload("stripes.png", style_png)
    assert asked == [False] and w.request.refine is False
    assert "Refine" in w.status.value  # the instant result says what Refine would add
    w.refine.value = True
    assert asked == [False, True] and w.request.refine is True
    w.select_style("wood")
    assert w.request.refine is False  # a pack style is never refined
    w.select_style(CUSTOM)  # made refined already: shown as it is
    assert asked == [False, True]


def test_accepts_paths_bytes_pil_and_arrays(stylizer, photo, tmp_path):
    w = _w(stylizer)
    path = tmp_path / "holiday.jpg"
    Image.fromarray(photo).save(path, quality=95)
    w.set_image(path)
    assert w.result.size == (128, 96) and w.file_name == "holiday_starry-night.png"
    w.set_image(_png(photo[:40, :50]))
    assert w.result.size == (50, 40)
    rgba = Image.fromarray(np.dstack([photo, np.full(photo.shape[:2], 128, np.uint8)]))
    w.set_image(rgba)
    assert w.result.size == (128, 96)
    w.set_image(photo.mean(axis=2).astype(np.uint8))  # greyscale array
    assert w.result.mode == "RGB"
    w.set_image(to_float(photo))  # float array in [0, 1]
    assert w.result.size == (128, 96)


def test_large_photos_are_shrunk_and_previewed_small(stylizer, make_photo):
    big = to_uint8(make_photo(300, 400, seed=5))
    w = _w(stylizer, image=big, max_size=200, preview_size=64)
    assert w.result.size == (200, 150)
    preview = w.run(full=False)
    assert preview.size == (64, 48) and w.preview_array.shape == (48, 64, 3)
    assert w.result.size == (200, 150)  # the result stays the full-resolution one


@pytest.mark.parametrize("content, expected", [
    (b"this is not a picture\n", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "damaged"),
    ("tiny", "too small"),
])
def test_bad_uploads_are_reported_in_the_status_line(stylizer, photo, content, expected):
    w = _w(stylizer, image=photo)
    before = w.result_array
    if content == "tiny":
        content = _png(np.zeros((8, 8, 3), np.uint8))
    w.upload.value = _upload("bad.png", content)  # must not raise
    assert expected in w.status.value.lower()
    assert w.status.style.text_color == "#c62828"
    assert w.last_error and expected in w.last_error.lower()
    assert w.result_array is before  # the previous photo and result are kept
    assert w.upload.value == ()      # ready for the next try
    w.upload.value = _upload("good.png", _png(photo[:64, :80]))
    assert w.result.size == (80, 64) and "Done" in w.status.value
    with pytest.raises(StyleJAXError):
        w.set_image(b"nope")  # the Python API raises, after showing the message
    with pytest.raises(UnknownStyleError):
        w.select_style("no-such-style")
    w.style_upload.value = _upload("style.txt", b"not a picture", "text/plain")
    assert "not an image" in w.status.value.lower()


def test_background_rendering_is_debounced_preview_then_full(stylizer, photo):
    w = _w(stylizer, sync=False, debounce=0.3, preview_size=64)
    w.set_image(photo)
    for s in (0.2, 0.4, 0.6):
        w.strength.value = s
    assert w.wait(60)
    assert w.renders == {"preview": 1, "full": 1}  # one burst of changes, one render each
    ref = stylizer.stylize(photo, "starry-night", strength=0.6)
    assert np.abs(np.asarray(w.result).astype(int) - ref).max() <= 1
    assert w.preview_array.shape == (48, 64, 3)
    assert w.after.value[:2] == b"\xff\xd8" and "Done" in w.status.value


def test_download_link_holds_the_result_as_png(stylizer, photo, tmp_path):
    w = _w(stylizer, image=photo)
    w.strength.value = 0.7
    link = w.download.value
    m = re.search(r'download="([^"]+)" href="data:image/png;base64,([A-Za-z0-9+/=]+)"', link)
    assert m and m.group(1) == "photo_starry-night.png"
    png = base64.b64decode(m.group(2))
    assert png.startswith(b"\x89PNG")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), w.result_array)
    assert "128×96" in link
    saved = w.save(tmp_path / "out.png")
    assert np.array_equal(np.asarray(Image.open(saved)), w.result_array)


def test_custom_style_runs_to_100_percent(optimising, photo, style_png):
    w = _w(optimising, image=photo)
    assert w.custom_button.disabled  # no style picture yet
    with pytest.raises(StyleJAXError):
        w.start_custom()
    w.style_upload.value = _upload("stripes.png", style_png)  # starts at once (sync here)
    assert w.progress.value == 100 and w.progress.bar_style == "success"
    assert w._style_id == CUSTOM and w.style_buttons[CUSTOM].button_style == "primary"
    assert w._custom_card.layout.display == "" and w.blend_with.disabled
    assert "Custom style done" in w.status.value
    full = np.asarray(w.result)
    assert full.shape == (32, 48, 3)  # the optimisation's size (TINY_CUSTOM.size = 48)
    w.strength.value = 0.3
    assert _diff(np.asarray(w.result), full) > 2
    w.select_style("wood")  # back to the pack, and back to the custom picture
    assert w.result.size == (128, 96)
    w.select_style(CUSTOM)
    assert w.result.size == (48, 32)


def test_custom_style_in_a_background_thread_and_cancel(optimising, photo, style_png):
    w = _w(optimising, image=photo, sync=False, debounce=0.05)
    w.set_style_image(style_png, "stripes.png")
    assert not w.custom_button.disabled
    seen = []
    w.progress.observe(lambda c: seen.append(c["new"]), "value")
    w.start_custom()
    assert w.wait(120)
    assert w.progress.value == 100 and seen[-1] == 100 and len(set(seen)) >= 3
    assert w.result.size == (48, 32) and "Custom style done" in w.status.value

    slow = CustomStyleConfig(size=48, steps=400, min_steps=1, time_budget_s=120)
    w.custom_config = slow
    w.progress.observe(lambda c: w.cancel_custom() if 0 < c["new"] < 100 else None, "value")
    w.start_custom()
    assert w.wait(120)
    assert 0 < w.progress.value < 100 and w.progress.bar_style == "warning"
    assert "cancelled" in w.status.value and w.result is not None
    assert w.cancel_button.disabled and not w.custom_button.disabled


def test_library_does_not_import_the_notebook_front_end():
    code = ("import sys, stylejax, stylejax.stylizer, stylejax.cli; "
            "bad = [m for m in ('notebooks', 'ipywidgets') if m in sys.modules]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_without_a_pack_custom_styles_still_work(tmp_path, photo, style_png):
    w = StylizeWidget(pack=tmp_path / "no-pack", sync=True, custom_config=TINY_CUSTOM)
    assert w.no_pack and "style picture" in w.status.value
    assert list(w.style_buttons) == [CUSTOM]
    w.set_image(photo)
    assert w.result is None and "no style pack" in w.status.value.lower()
    w.set_style_image(style_png)
    w.start_custom()
    # the bundled any-style model: one pass, the photo's aspect at the custom size
    assert w.progress.value == 100 and w.result.size == (48, 36)
    assert "Custom style done in" in w.status.value and "Refine" in w.status.value


def test_a_video_path_bytes_or_upload_plays_inline(stylizer, tmp_path, photo, style_png,
                                                   monkeypatch):
    """A clip (path or upload) → an inline ipywidgets.Video of the stylised mp4 (sound kept);
    a GIF as bytes → an animated ipywidgets.Image; a custom style is refused politely."""
    import ipywidgets
    from test_video_service import assert_clip_result, assert_gif_result, clip_bytes, gif_bytes

    from stylejax.errors import InvalidRequestError

    w = _w(stylizer)
    w.select_style("starry-night")
    w.stroke.value = "large"
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(clip_bytes())
    shown = w.stylize_video(clip, tmp_path / "out.mp4")
    assert isinstance(shown, ipywidgets.Video) and shown.format == "mp4"
    assert w.video_box.children[-1] is shown and w.video_result.frames == 12
    assert_clip_result(bytes(shown.value))
    assert w.progress.value == 100 and "12 frames" in w.status.value

    shown = w.stylize_video(gif_bytes())
    assert isinstance(shown, ipywidgets.Image) and shown.format == "gif"
    assert_gif_result(bytes(shown.value))

    w.upload.value = _upload("clip.mp4", clip_bytes(), "video/mp4")
    assert isinstance(w.video_widget, ipywidgets.Video) and w.video_path.suffix == ".mp4"

    from stylejax.custom_style import CustomStyleResult

    monkeypatch.setattr(stylizer, "run_custom", lambda request, photo, style, **kw:
                        CustomStyleResult(image=resize_max_side(photo, 48), seconds=0.0,
                                          steps=1, stopped_early=False))
    custom = _w(stylizer, image=photo)
    custom.style_upload.value = _upload("stripes.png", style_png)
    assert custom._style_id == CUSTOM
    with pytest.raises(InvalidRequestError):
        custom.stylize_video(clip)
    assert "gallery's styles only" in custom.status.value


# -- where the style goes: Where, keep faces, the overlay, the brush (issue 16) -----------------

CONTENT = Path(__file__).resolve().parents[2] / "shared" / "data" / "content"
PERSON_PHOTO = CONTENT / "people_kphotoalbum_anne_helene.jpg"  # one woman on a beach


@pytest.fixture(scope="module")
def beach() -> np.ndarray:
    """A real photo of a person, 256 px on the long side (171×256)."""
    if not PERSON_PHOTO.is_file():
        pytest.skip("shared photos not present")
    im = Image.open(PERSON_PHOTO).convert("RGB")
    im.thumbnail((256, 256), Image.LANCZOS)
    return np.asarray(im)


@pytest.fixture(scope="module")
def beach_masks(beach) -> dict[str, np.ndarray]:
    from stylejax import regions

    return {"person": regions.person_mask(beach), "face": regions.face_mask(beach),
            "head": regions.head_mask(beach)}


@pytest.fixture
def count_segmenter(monkeypatch) -> list[tuple[str, ...]]:
    """Every call of the region finder (stylejax.regions.region_masks), with the names."""
    from stylejax import regions

    calls: list[tuple[str, ...]] = []
    real = regions.region_masks
    monkeypatch.setattr(regions, "region_masks",
                        lambda rgb, names=regions.REGIONS: calls.append(tuple(names))
                        or real(rgb, names))
    return calls


def _levels(a, b, where) -> float:
    """The largest difference in grey levels between two pictures over a boolean mask."""
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))[where].max())


def _mean_levels(a, b, where) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))[where].mean())


def test_person_and_background_results_follow_the_region(stylizer, beach, beach_masks):
    w = _w(stylizer, image=beach)
    everywhere = w.result_array
    inside, outside = beach_masks["person"] > 0.99, beach_masks["person"] < 0.01
    assert inside.mean() > 0.2 and outside.mean() > 0.2
    assert w.canvas.layout.display == "none" and w.overlay_array is None  # nothing chosen yet
    renders = w.renders["full"]

    w.where.value = "person"  # changing Where re-renders, at full size
    assert w.renders["full"] == renders + 1
    person = w.result_array
    assert person.shape == beach.shape
    assert _levels(person, beach, outside) <= 3          # the background is the photo
    assert _levels(person, everywhere, inside) <= 3      # the person in the style
    assert _mean_levels(person, beach, inside) > 10
    assert "only the person" in w.status.value and w.file_name.endswith("_person.png")
    # the engine's own path gives the same pixels (the CLI's --region person)
    assert w.request.regions.entries[0].region == "person"
    assert _levels(person, stylizer.run(w.request, beach), np.ones(beach.shape, bool)) <= 2

    w.where.value = "background"
    background = w.result_array
    assert w.renders["full"] == renders + 2
    assert _levels(background, beach, inside) <= 3
    assert _levels(background, everywhere, outside) <= 3
    assert _mean_levels(background, beach, outside) > 10

    w.where.value = "everywhere"
    assert np.abs(w.result_array.astype(int) - everywhere).max() <= 1
    assert w.request.regions is None and w.canvas.layout.display == "none"
    assert w.before.layout.display == ""


def test_keep_faces_and_a_second_style_elsewhere(stylizer, beach, beach_masks):
    w = _w(stylizer, image=beach)
    starry = w.result_array
    face = beach_masks["face"] > 0.99
    assert face.sum() > 50
    w.keep_faces.value = True  # everywhere but the faces
    kept = w.result_array
    assert _levels(kept, beach, face) <= 3
    assert _levels(kept, starry, beach_masks["face"] < 0.01) <= 3
    assert "faces kept" in w.status.value

    w.select_style("great-wave")
    wave = stylizer.stylize(beach, "great-wave")
    w.where.value = "person"
    w.rest_style.value = "starry-night"  # the person in Great Wave, the rest in Starry Night
    both = w.result_array
    body = (beach_masks["person"] > 0.99) & (beach_masks["head"] < 0.01)
    assert body.sum() > 500
    assert _levels(both, wave, body) <= 3
    outside = (beach_masks["person"] < 0.01) & (beach_masks["face"] < 0.01)
    assert _levels(both, starry, outside) <= 3
    assert _levels(both, beach, face) <= 3
    assert "elsewhere Starry Night" in w.status.value
    # feathered, at a strength: still the engine's pixels
    w.feather.value = 6
    w.strength.value = 0.7
    spec = w.request.regions
    assert spec.feather == 6 and spec.keep == ("face",) and len(spec.entries) == 2
    assert _levels(w.result_array, stylizer.run(w.request, beach),
                   np.ones(beach.shape, bool)) <= 2
    assert _mean_levels(w.result_array, both, np.ones(beach.shape, bool)) > 1


def test_the_overlay_tints_the_region_and_is_computed_once_per_photo_and_region(
        stylizer, beach, beach_masks, count_segmenter):
    w = _w(stylizer, image=beach, display_size=128)
    assert count_segmenter == []
    w.where.value = "person"
    assert count_segmenter == [("person",)]
    over = w.overlay_array
    assert over.shape == (128, 86, 3) and (w.canvas.width, w.canvas.height) == (86, 128)
    assert w.canvas.layout.display == "" and w.before.layout.display == "none"
    small = resize_max_side(beach, 128)
    person = np.asarray(Image.fromarray((beach_masks["person"] * 255).astype(np.uint8))
                        .resize((86, 128), Image.BILINEAR)) / 255.0
    tint = np.array([79, 70, 229], np.float32)
    # the accent colour over the person, the photo elsewhere
    assert np.abs(over.astype(float) - small)[person < 0.01].max() <= 1
    inside = person > 0.99
    closer = (np.abs(over.astype(float) - tint).sum(-1) < np.abs(small.astype(float) - tint)
              .sum(-1))
    assert closer[inside].mean() > 0.95

    # other controls, previews, a second visit: no new segmenter run
    w.strength.value = 0.5
    w.feather.value = 4
    w.run(full=False)
    w.where.value = "background"
    w.where.value = "person"
    w.keep_faces.value = True
    assert count_segmenter == [("person",), ("background",), ("face",)]
    w.keep_faces.value = False
    w.where.value = "background"
    assert len(count_segmenter) == 3
    # a new photo: its own masks
    w.set_image(beach[:, ::-1].copy())
    assert len(count_segmenter) == 4 and count_segmenter[-1] == ("background",)


def test_painting_a_square_styles_only_that_square_and_erasing_brings_the_photo_back(
        stylizer, photo):
    w = _w(stylizer, image=photo)  # 96×128 synthetic: no person in it
    full = w.result_array
    w.where.value = "mask"  # "where I paint": nothing until painted
    assert "Paint where the style goes" in w.status.value and w.result_array is full
    assert w.overlay_array is not None and np.abs(
        w.overlay_array.astype(int) - photo).max() <= 1  # nothing tinted yet
    r = 4
    for y in range(30, 61, 2):  # a square 40..80 × 30..60, brushed row by row
        w.paint_line([(40, y), (80, y)], r, render=False)
    w.paint(60, 45, r)  # the last dab renders
    out = w.result_array
    square = np.zeros(photo.shape[:2], bool)
    square[30:61, 40:81] = True
    near = np.zeros(photo.shape[:2], bool)
    near[30 - r - 2:61 + r + 2, 40 - r - 2:81 + r + 2] = True
    assert _levels(out, photo, ~near) <= 1      # outside the square: the photo
    assert _levels(out, full, square) <= 2      # inside: the style
    assert _mean_levels(out, photo, square) > 10
    assert w.painted_mask[45, 60] == 255 and w.painted_mask[5, 5] == 0
    assert w.request.regions.entries[0].region == "mask"
    # the same as the CLI's --mask with that picture
    assert _levels(out, stylizer.run(w.request, photo, mask=w.painted_mask),
                   np.ones(photo.shape, bool)) <= 2
    assert "where you painted" in w.status.value

    for y in range(30, 61, 2):  # erase the left half, with a brush a little wider
        w.paint_line([(40, y), (58, y)], r + 2, erase=True, render=False)
    w.paint(50, 45, r + 2, erase=True)
    erased = w.result_array
    assert _levels(erased, photo, near & (np.arange(128) < 53)[None, :]) <= 1
    right = square & (np.arange(128) > 66)[None, :]
    assert _levels(erased, full, right) <= 2

    w.undo_painting()  # back to "nothing painted"
    assert w.painted_mask is None and "Paint where the style goes" in w.status.value


def test_painting_on_the_person_region_and_undo(stylizer, beach, beach_masks):
    w = _w(stylizer, image=beach)
    everywhere = w.result_array
    w.where.value = "person"
    person_only = w.result_array
    person = beach_masks["person"]
    ys, xs = np.nonzero(person > 0.99)
    cy, cx = int(np.median(ys)), int(np.median(xs))
    assert (person[cy - 12:cy + 13, cx - 12:cx + 13] > 0.99).all()
    assert w.undo_paint.disabled
    w.paint(cx, cy, 8, erase=True)  # a hole in the person: the photo there
    assert not w.undo_paint.disabled
    holed = w.result_array
    hole = np.zeros(person.shape, bool)
    hole[cy - 5:cy + 6, cx - 5:cx + 6] = True
    assert _levels(holed, beach, hole) <= 2
    away = (person > 0.99).copy()
    away[cy - 20:cy + 21, cx - 20:cx + 21] = False
    assert _levels(holed, everywhere, away) <= 3  # the rest of the person is still styled
    # and a patch of background painted in
    bg_ys, bg_xs = np.nonzero(person < 0.01)
    by, bx = int(bg_ys[len(bg_ys) // 2]), int(bg_xs[len(bg_xs) // 2])
    w.paint(bx, by, 6)
    patch = np.zeros(person.shape, bool)
    patch[by - 3:by + 4, bx - 3:bx + 4] = True
    patch &= person < 0.01
    assert _mean_levels(w.result_array, beach, patch) > 10
    assert w.request.regions.entries[0].region == "mask"

    w.undo_painting()
    assert w.request.regions.entries[0].region == "person" and w.undo_paint.disabled
    assert np.abs(w.result_array.astype(int) - person_only).max() <= 1
    # a painting belongs to its Where choice and its photo
    w.paint(bx, by, 6)
    w.where.value = "background"
    assert w.request.regions.entries[0].region == "background"
    w.where.value = "person"
    assert w.request.regions.entries[0].region == "mask"  # kept while the photo stays
    w.set_image(beach)
    assert w.painted_mask is None and w.request.regions.entries[0].region == "person"


def test_the_canvas_mouse_paints_in_photo_pixels_and_renders_on_release(stylizer, photo):
    w = _w(stylizer, image=photo, display_size=64)  # shown at half size: 64×48
    w.where.value = "mask"
    assert (w.canvas.width, w.canvas.height) == (64, 48)
    w.brush_size.value = 6  # 6 screen px across = 6 photo px radius at ×2
    renders = w.renders["full"]
    w._on_mouse_down(10, 10)
    w._on_mouse_move(20, 10)
    w._on_mouse_move(30, 10)
    assert w.renders["full"] == renders  # not while painting
    m = w.painted_mask
    assert m[20, 20] == 255 and m[20, 40] == 255 and m[20, 60] == 255  # photo = 2 × canvas
    assert m[20, 75] == 0 and m[40, 40] == 0
    w._on_mouse_up(30, 10)
    assert w.renders["full"] == renders + 1
    assert _mean_levels(w.result_array, photo, m == 255) > 10
    w._on_mouse_move(40, 40)  # the button is up: no paint
    assert w.painted_mask[80 - 1, 80 - 1] == 0
    w.brush.value = "erase"
    w._on_mouse_down(20, 10)
    w._on_mouse_up(20, 10)
    assert w.painted_mask[20, 40] == 0 and w.painted_mask[20, 20] == 255


def test_region_errors_are_friendly_and_lose_nothing(stylizer, photo, style_png, monkeypatch):
    from stylejax.custom_style import CustomStyleResult

    w = _w(stylizer, image=photo)
    before = w.result_array
    w.where.value = "person"  # a landscape of colour waves: no person
    assert "No person found" in w.status.value and "paint the region by hand" in w.status.value
    assert w.status.style.text_color == "#c62828" and "No person found" in w.last_error
    assert w.result_array is before and w._photo is not None  # nothing lost
    w.paint(30, 30, 6)  # the brush still works: the painting is the region
    assert _mean_levels(w.result_array, photo, w.painted_mask == 255) > 10
    w.where.value = "sky"
    assert "No sky found" in w.status.value
    w.where.value = "everywhere"
    assert "Done" in w.status.value and np.abs(w.result_array.astype(int) - before).max() <= 1

    monkeypatch.setattr(stylizer, "run_custom", lambda request, photo, style, **kw:
                        CustomStyleResult(image=resize_max_side(photo, 48), seconds=0.0,
                                          steps=1, stopped_early=False))
    w.style_upload.value = _upload("stripes.png", style_png)
    assert w._style_id == CUSTOM
    w.where.value = "mask"
    w.paint(30, 30, 6)
    assert "gallery's styles" in w.status.value  # regions take pack styles: said, not raised


def test_regions_in_the_background_thread_preview_then_full(stylizer, beach, beach_masks):
    w = _w(stylizer, sync=False, debounce=0.2, preview_size=128)
    w.set_image(beach)
    w.where.value = "person"
    w.feather.value = 2
    assert w.wait(120)
    assert w.renders == {"preview": 1, "full": 1} and w.overlay_array is not None
    import cv2

    # 2 px of feather: σ = 1 px, so 5 px from the border the mask is still exact
    outside = cv2.erode((beach_masks["person"] < 0.01).astype(np.uint8),
                        np.ones((11, 11), np.uint8)) > 0
    assert outside.mean() > 0.2
    assert _levels(w.result_array, beach, outside) <= 3
    assert _mean_levels(w.result_array, beach, beach_masks["person"] > 0.99) > 10
    small = resize_max_side(beach, 128)
    person_small = np.asarray(Image.fromarray((beach_masks["person"] * 255).astype(np.uint8))
                              .resize(small.shape[1::-1], Image.BILINEAR)) / 255.0
    assert w.preview_array.shape == small.shape
    away = cv2.erode((person_small < 0.01).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    assert _mean_levels(w.preview_array, small, away) <= 2  # photo
    assert _mean_levels(w.preview_array, small, person_small > 0.99) > 10  # style
