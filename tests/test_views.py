"""The loss's random views (trainer/views.py): exact where the grid allows, and differentiable."""

import jax
import jax.numpy as jnp
import numpy as np

from trainer.views import draw_views, view


def _images(n: int = 2, side: int = 16) -> jax.Array:
    return jax.random.uniform(jax.random.PRNGKey(0), (n, side, side, 3))


def test_no_turn_no_zoom_is_the_image():
    x = _images()
    out = view(x, jnp.zeros(2), jnp.ones(2))
    np.testing.assert_allclose(np.asarray(out), np.asarray(x), atol=1e-5)


def test_quarter_turn_is_rot90_and_each_sample_gets_its_own():
    x = _images()
    out = view(x, jnp.array([np.pi / 2, 0.0]), jnp.ones(2))
    turned = np.asarray(out[0])
    assert np.allclose(turned, np.rot90(np.asarray(x[0]), k=1, axes=(0, 1)), atol=1e-4) or \
        np.allclose(turned, np.rot90(np.asarray(x[0]), k=-1, axes=(0, 1)), atol=1e-4)
    np.testing.assert_allclose(np.asarray(out[1]), np.asarray(x[1]), atol=1e-5)


def test_zoom_magnifies_about_the_centre():
    # a horizontal ramp: magnified ×2, its slope doubles and the centre value stays
    side = 33
    ramp = jnp.broadcast_to(jnp.arange(side, dtype=jnp.float32)[None, :, None], (side, side, 1))
    out = np.asarray(view(ramp[None], jnp.zeros(1), jnp.full(1, 2.0))[0, :, :, 0])
    mid = side // 2
    assert abs(out[mid, mid] - mid) < 1e-4
    assert abs((out[mid, mid + 4] - out[mid, mid - 4]) / 8 - 0.5) < 1e-4


def test_borders_are_mirrored_not_black():
    x = jnp.full((1, 16, 16, 3), 0.7)
    out = view(x, jnp.array([0.5]), jnp.array([0.8]))
    np.testing.assert_allclose(np.asarray(out), 0.7, atol=1e-5)


def test_gradient_reaches_the_image():
    x = _images(1)
    angles, scales = draw_views(jax.random.PRNGKey(3), 1, 30.0, 1.25)
    g = jax.grad(lambda a: jnp.sum(view(a, angles, scales) ** 2))(x)
    assert float(jnp.abs(g).sum()) > 0


def test_drawn_views_stay_in_range_and_vary():
    angles, scales = draw_views(jax.random.PRNGKey(1), 256, 30.0, 1.25)
    assert float(jnp.max(jnp.abs(angles))) <= np.deg2rad(30.0) + 1e-6
    assert float(scales.min()) >= 1 / 1.25 - 1e-6 and float(scales.max()) <= 1.25 + 1e-6
    assert float(jnp.std(angles)) > 0.2 and float(jnp.std(jnp.log(scales))) > 0.05
    # zoom 1 and 0 degrees: no transform at all
    a0, s0 = draw_views(jax.random.PRNGKey(1), 8, 0.0, 1.0)
    assert float(jnp.abs(a0).max()) == 0 and float(jnp.abs(s0 - 1).max()) == 0
