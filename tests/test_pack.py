"""Style packs: save/load round trip, style lookup, and a readable WeightsError for each defect."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CONFIG
from PIL import Image
from safetensors.numpy import load_file, save_file

from stylejax.errors import StyleJAXError, UnknownStyleError, WeightsError
from stylejax.pack import FORMAT_VERSION, StyleInfo, load_pack, module_arrays, save_pack

STYLES = [
    StyleInfo("starry", {"en": "Starry night", "zh": "星夜", "zh-TW": "星夜 (繁)"},
              source="https://example.org/starry", author="V. van Gogh", license="PD"),
    StyleInfo("starry-wave", {"en": "Starry wave", "zh": "星浪"}),
]


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory, tiny_generator) -> Path:
    thumb = np.zeros((24, 32, 3), np.uint8)
    thumb[:, :16] = (200, 30, 40)
    root = tmp_path_factory.mktemp("pack")
    save_pack(root, tiny_generator, STYLES, thumbnails={"starry": thumb},
              training={"steps": 123, "lr": 1e-3}, license_notes="Test weights, CC0.")
    return root


@pytest.fixture(scope="module")
def pack(pack_dir):
    return load_pack(pack_dir)


def _copy(pack_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(pack_dir, dst)
    return dst


def _edit_meta(root: Path, edit) -> None:
    meta = json.loads((root / "pack.json").read_text(encoding="utf-8"))
    edit(meta)
    (root / "pack.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")


def _load_error(root: Path) -> str:
    with pytest.raises(WeightsError) as err:
        load_pack(root)
    msg = str(err.value)
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


# -- round trip ----------------------------------------------------------------------------------


def test_round_trip_weights_identical(pack, tiny_generator):
    saved = module_arrays(tiny_generator)
    loaded = module_arrays(pack.generator)
    assert saved.keys() == loaded.keys()
    assert len(saved) > 10
    for key in saved:
        np.testing.assert_array_equal(loaded[key], saved[key], err_msg=key)
    assert pack.config == TINY_CONFIG


def test_round_trip_styles_names_and_metadata(pack, pack_dir):
    assert [s.id for s in pack.styles] == ["starry", "starry-wave"]
    starry = pack.styles[0]
    assert starry.name("zh") == "星夜"
    assert starry.name("zh-CN") == "星夜"          # falls back to the base language
    assert starry.name("zh-TW") == "星夜 (繁)"
    assert starry.name("fr") == "Starry night"    # falls back to English
    assert (starry.source, starry.author, starry.license) == (
        "https://example.org/starry", "V. van Gogh", "PD")
    assert pack.training == {"steps": 123, "lr": 1e-3}
    assert pack.license_notes == "Test weights, CC0."
    assert pack.root == pack_dir
    # Chinese is stored as UTF-8 text, not \u escapes (readable by other tools and people).
    assert "星夜" in (pack_dir / "pack.json").read_text(encoding="utf-8")


def test_thumbnails_written_and_resolvable(pack):
    path = pack.thumbnail_path("starry")
    assert path is not None and path.is_file()
    with Image.open(path) as im:
        assert im.format == "JPEG" and im.size == (32, 24)
        px = np.asarray(im.convert("RGB"))
    assert np.abs(px[12, 4].astype(int) - (200, 30, 40)).max() < 20
    assert pack.thumbnail_path("starry-wave") is None  # no thumbnail given


def test_save_pack_refuses_wrong_style_count(tmp_path, tiny_generator):
    with pytest.raises(ValueError, match="style"):
        save_pack(tmp_path / "p", tiny_generator, STYLES[:1])


def test_loaded_generator_computes_the_same(pack, tiny_generator, make_photo):
    import jax.numpy as jnp

    x = jnp.asarray(make_photo(64, 64)[None])
    w = jnp.asarray([[0.0, 1.0]])
    np.testing.assert_array_equal(np.asarray(pack.generator(x, w)),
                                  np.asarray(tiny_generator(x, w)))


# -- style lookup --------------------------------------------------------------------------------


def test_index_exact_and_unique_prefix(pack):
    assert pack.index("starry") == 0            # exact id wins over being a prefix of another
    assert pack.index("starry-wave") == 1
    assert pack.index("starry-w") == 1          # unique prefix
    assert pack.index("STARRY-W") == 1          # prefixes are case-insensitive


@pytest.mark.parametrize("query", ["star", "s", "", "cubism", "starry-wave-2"])
def test_index_ambiguous_or_unknown_lists_ids(pack, query):
    with pytest.raises(UnknownStyleError) as err:
        pack.index(query)
    assert isinstance(err.value, StyleJAXError)
    assert "starry, starry-wave" in str(err.value)


def test_index_exact_id_case_insensitive(pack):
    assert pack.index("Starry") == 0


def test_index_word_of_an_id(pack):
    assert pack.index("wave") == 1  # a word of "starry-wave", as users write in captions


def test_thumbnail_path_unknown_style(pack):
    with pytest.raises(UnknownStyleError):
        pack.thumbnail_path("nope")


# -- validation ----------------------------------------------------------------------------------


def test_missing_pack_json(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "pack.json is missing" in _load_error(tmp_path / "empty")


def test_invalid_json(pack_dir, tmp_path):
    root = _copy(pack_dir, tmp_path)
    (root / "pack.json").write_text('{"format_version": 1, "styles": [', encoding="utf-8")
    assert "not valid JSON" in _load_error(root)


def test_not_utf8_json(pack_dir, tmp_path):
    root = _copy(pack_dir, tmp_path)
    (root / "pack.json").write_bytes(b"\xff\xfe{}")
    assert "not valid JSON" in _load_error(root)


def test_json_not_an_object(pack_dir, tmp_path):
    root = _copy(pack_dir, tmp_path)
    (root / "pack.json").write_text("[1, 2]", encoding="utf-8")
    assert "object" in _load_error(root)


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, "1", None])
def test_wrong_format_version(pack_dir, tmp_path, version):
    root = _copy(pack_dir, tmp_path)
    _edit_meta(root, lambda m: m.update(format_version=version))
    msg = _load_error(root)
    assert "format" in msg and repr(version) in msg


def test_generator_section_missing(pack_dir, tmp_path):
    root = _copy(pack_dir, tmp_path)
    _edit_meta(root, lambda m: m.pop("generator"))
    assert "generator" in _load_error(root)


def test_duplicate_ids(pack_dir, tmp_path):
    root = _copy(pack_dir, tmp_path)
    _edit_meta(root, lambda m: m["styles"][1].update(id="starry"))
    assert "'starry' appears twice" in _load_error(root)


@pytest.mark.parametrize("bad_id", ["Starry", "a b", "-x", "", "x" * 41, 7, None, "../x"])
def test_bad_id(pack_dir, tmp_path, bad_id):
    root = _copy(pack_dir, tmp_path)
    _edit_meta(root, lambda m: m["styles"][1].update(id=bad_id))
    msg = _load_error(root)
    assert "style #2" in msg and "invalid id" in msg


def test_style_without_english_name(pack_dir, tmp_path):
    root = _copy(pack_dir, tmp_path)
    _edit_meta(root, lambda m: m["styles"][1].update(names={"zh": "星浪"}))
    assert "English" in _load_error(root)


@pytest.mark.parametrize("n", [1, 3])
def test_style_count_differs_from_num_styles(pack_dir, tmp_path, n):
    root = _copy(pack_dir, tmp_path)

    def edit(meta):
        meta["styles"] = [dict(meta["styles"][1], id=f"s{i}", thumbnail=None) for i in range(n)]

    _edit_meta(root, edit)
    msg = _load_error(root)
    assert f"lists {n} styles" in msg and "2 slots" in msg


def test_styles_not_a_list(pack_dir, tmp_path):
    root = _copy(pack_dir, tmp_path)
    _edit_meta(root, lambda m: m.update(styles={"id": "a"}))
    assert "non-empty list" in _load_error(root)


def test_missing_weights_file(pack_dir, tmp_path):
    root = _copy(pack_dir, tmp_path)
    (root / "weights.safetensors").unlink()
    assert "weights.safetensors" in _load_error(root)


def test_damaged_weights_file(pack_dir, tmp_path):
    root = _copy(pack_dir, tmp_path)
    data = (root / "weights.safetensors").read_bytes()
    (root / "weights.safetensors").write_bytes(data[: len(data) // 3])
    assert "damaged" in _load_error(root)


def _rewrite_weights(root: Path, edit) -> str:
    arrays = dict(load_file(str(root / "weights.safetensors")))
    key = edit(arrays)
    save_file(arrays, str(root / "weights.safetensors"))
    return key


def test_tensor_with_wrong_shape(pack_dir, tmp_path):
    root = _copy(pack_dir, tmp_path)

    def edit(arrays):
        key = next(k for k in sorted(arrays) if k.endswith("scale"))
        arrays[key] = np.ones((3, arrays[key].shape[1]), np.float32)  # 3 styles instead of 2
        return key

    key = _rewrite_weights(root, edit)
    msg = _load_error(root)
    assert key in msg and "(3, " in msg and "(2, " in msg


def test_nan_tensor(pack_dir, tmp_path):
    root = _copy(pack_dir, tmp_path)

    def edit(arrays):
        key = next(k for k in sorted(arrays) if k.endswith("kernel"))
        arrays[key] = arrays[key].copy()
        arrays[key].flat[3] = math.nan
        return key

    key = _rewrite_weights(root, edit)
    msg = _load_error(root)
    assert key in msg and "NaN" in msg


def test_missing_and_unexpected_tensors(pack_dir, tmp_path):
    root = _copy(pack_dir, tmp_path)

    def edit(arrays):
        key = sorted(arrays)[0]
        arrays["bogus.tensor"] = arrays.pop(key)
        return key

    key = _rewrite_weights(root, edit)
    msg = _load_error(root)
    assert key in msg and "bogus.tensor" in msg


def test_config_not_matching_weights(pack_dir, tmp_path):
    root = _copy(pack_dir, tmp_path)
    _edit_meta(root, lambda m: m["generator"].update(res_blocks=2))
    assert "does not match" in _load_error(root)


@pytest.mark.parametrize("thumb", ["../x.jpg", "thumbs/../../x.jpg", "/etc/hostname",
                                   "thumbs/none.jpg", "thumbs"])
def test_thumbnail_escaping_or_missing(pack_dir, tmp_path, thumb):
    root = _copy(pack_dir, tmp_path)
    (tmp_path / "x.jpg").write_bytes((root / "thumbs" / "starry.jpg").read_bytes())  # exists
    _edit_meta(root, lambda m: m["styles"][0].update(thumbnail=thumb))
    msg = _load_error(root)
    assert "thumbnail of 'starry'" in msg
    assert str(tmp_path) not in msg  # no paths in user-facing messages


def test_thumbnail_not_a_string(pack_dir, tmp_path):
    root = _copy(pack_dir, tmp_path)
    _edit_meta(root, lambda m: m["styles"][0].update(thumbnail=5))
    _load_error(root)


def test_generator_channels_wrong_length(pack_dir, tmp_path):
    root = _copy(pack_dir, tmp_path)
    _edit_meta(root, lambda m: m["generator"].update(channels=[8, 16]))
    _load_error(root)


def test_training_not_an_object(pack_dir, tmp_path):
    root = _copy(pack_dir, tmp_path)
    _edit_meta(root, lambda m: m.update(training="abc"))
    _load_error(root)


def test_index_finds_a_word_inside_the_id(tmp_path):
    from flax import nnx

    from stylejax.generator import Generator, GeneratorConfig
    from stylejax.pack import StyleInfo, load_pack, save_pack

    gen = Generator(GeneratorConfig(num_styles=3, channels=(4, 4, 8), res_blocks=0),
                    rngs=nnx.Rngs(0))
    pack = load_pack(save_pack(tmp_path / "p", gen, [
        StyleInfo("great-wave", {"en": "W"}), StyleInfo("starry-night", {"en": "S"}),
        StyleInfo("night-cafe", {"en": "N"})]))
    assert pack.index("wave") == 0
    assert pack.index("Star") == 1            # prefix wins, case-insensitive
    assert pack.index("cafe") == 2
    assert pack.index("night") == 2           # a prefix beats a word inside another id
