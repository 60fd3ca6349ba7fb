"""The int8 ONNX generator (backend "onnx-int8"): close to fp32 on real photos, through the Engine
too (tiles share whole-photo statistics through the external-statistics graph), and cached.

The default pack's trained weights: quantisation error depends on real activations, which a
randomly initialised network would not show.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from stylejax.engine import Engine, Request
from stylejax.imageio import decode_image, resize_long_side, to_float
from stylejax.onnx_export import (
    OnnxGenerator,
    calibration_pictures,
    export_generator_onnx,
    residual_convs,
)
from stylejax.pack import default_pack_dir, load_pack

CONTENT = Path(__file__).resolve().parents[2] / "shared" / "data" / "content"
# evaluation photos (bench/eval_set.json), none of them a calibration picture
PHOTOS = ("animal_gc_erase_camels.jpg", "building_gc_explore_monuments_colosseum.jpg")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    a8, b8 = (np.round(np.clip(x, 0, 1) * 255) for x in (a, b))
    return float(10 * np.log10(255.0**2 / max(np.mean((a8 - b8) ** 2), 1e-12)))


@pytest.fixture(scope="module")
def pack():
    return load_pack(default_pack_dir())


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def q_gen(pack, cache) -> OnnxGenerator:
    return OnnxGenerator.quantized(pack.generator, cache_dir=cache, threads=2)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    if not all((CONTENT / p).is_file() for p in PHOTOS):
        pytest.skip("../shared/data/content is not beside the checkout")
    return [to_float(resize_long_side(decode_image(CONTENT / p).rgb, 640))[:356, :636]
            for p in PHOTOS]


def test_only_the_residual_convolutions_are_int8(pack, q_gen):
    fp32 = export_generator_onnx(pack.generator)
    res, others = residual_convs(fp32, pack.config.res_blocks)
    assert len(res) == 2 * pack.config.res_blocks and len(others) == 5
    for external in (False, True):
        graph = onnx.load_from_string(q_gen._models[external]).graph
        ops = [n.op_type for n in graph.node]
        assert ops.count("Conv") == len(res) + len(others)
        # a weight and an activation dequantised per quantised convolution
        assert ops.count("DequantizeLinear") >= 2 * len(res)
        conv_ops = {n.name: [i for i in n.input] for n in graph.node if n.op_type == "Conv"}
        dequantised = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
        int8 = [name for name, ins in conv_ops.items() if ins[1] in dequantised]
        assert len(int8) == len(res)


def test_close_to_fp32_on_real_photos(pack, q_gen, photos):
    fp32 = OnnxGenerator.from_generator(pack.generator, threads=2)
    for k, photo in enumerate(photos):
        w = np.eye(pack.config.num_styles, dtype=np.float32)[[k, 3 + k]]
        x = np.stack([photo, photo])
        y_ref, st_ref = fp32(x, w, return_stats=True)
        y, st = q_gen(x, w, return_stats=True)
        for i in range(2):
            assert psnr(y[i], y_ref[i]) > 31.0
        # the encoder runs in float: its statistics are fp32's; deeper ones move a little
        np.testing.assert_allclose(st[0][1], st_ref[0][1], rtol=1e-4)
        assert np.abs(st[-1][1] - st_ref[-1][1]).max() / st_ref[-1][1].max() < 0.1


def test_engine_tiles_with_whole_photo_stats(pack, cache, photos, monkeypatch):
    """Tiles of 256 px on a 356×636 photo: whole-photo statistics from the int8 own-statistics
    graph, fed to the int8 external-statistics graph per tile."""
    monkeypatch.setenv("STYLEJAX_ONNX_CACHE", str(cache))
    monkeypatch.setenv("STYLEJAX_ORT_THREADS", "2")
    photo, w = photos[0], np.eye(pack.config.num_styles, dtype=np.float32)[1]
    outs = {}
    for backend in ("onnx", "onnx-int8"):
        engine = Engine(pack.generator, backend=backend, tile=256, overlap=64,
                        compilation_cache=False)
        (outs[backend],) = engine.run([Request(photo, w)])
    assert isinstance(engine.backend, OnnxGenerator) and True in engine.backend._sessions
    assert outs["onnx-int8"].shape == photo.shape
    assert psnr(outs["onnx-int8"], outs["onnx"]) > 31.0


def test_cached_after_first_start(pack, q_gen, cache):
    assert len(list(cache.glob("generator-int8-*.onnx"))) == 2
    again = OnnxGenerator.quantized(pack.generator, cache_dir=cache)
    assert again._models == q_gen._models
    assert len(calibration_pictures()) == 4 and calibration_pictures()[0].shape == (360, 640, 3)
