"""bench/training_objective.py and bench/style_vector_fit.py: the halo diagnostics' arithmetic."""

from __future__ import annotations

import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

pytestmark = pytest.mark.skipif(not (ROOT.parent / "shared" / "data").is_dir(),
                                reason="needs ../shared/data beside the checkout")


@pytest.fixture(scope="module")
def feature_net():
    from stylejax.features import load_feature_net

    return load_feature_net()


def _pictures():
    rng = np.random.default_rng(0)
    photo = (rng.random((64, 96, 3)) * 255).astype(np.uint8)
    style = (rng.random((80, 80, 3)) * 255).astype(np.uint8)
    return photo, style


def test_the_photo_itself_has_no_content_term_and_its_total_is_style_plus_tv(feature_net):
    from training_objective import STYLE_WEIGHT, objective

    photo, style = _pictures()
    same = objective(feature_net, photo, photo, style)
    assert same["content"] == pytest.approx(0.0, abs=1e-9)
    assert same["total"] == pytest.approx(STYLE_WEIGHT * same["style"] + same["tv"])
    flat = objective(feature_net, np.full_like(photo, 128), photo, style)
    assert flat["content"] > 0.1 and flat["tv"] < same["tv"]  # a grey picture is no photo


@pytest.mark.slow
def test_fitting_the_style_vector_lowers_the_objective_on_its_photo(feature_net):
    from style_vector_fit import fit, make_objective, photo_array

    from stylejax.anystyle import load_model

    model = load_model(ROOT / "stylejax" / "assets" / "anystyle")
    _, style = _pictures()
    style_x = jnp.asarray(style, jnp.float32)[None] / 255
    objective = make_objective(feature_net, style_x)
    x = photo_array("camels", 64)
    assert x.shape[1] % 4 == 0 and x.shape[2] % 4 == 0
    z0 = model.encode(feature_net, style_x)
    z = fit(z0, lambda z, p: model(p, z), objective, x, steps=8, lr=0.05)
    before, after = float(objective(model(x, z0), x)), float(objective(model(x, z), x))
    assert after < before
    assert not np.allclose(np.asarray(z), np.asarray(z0))
