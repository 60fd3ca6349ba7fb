import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stylejax import losses


def test_content_loss_known_values():
    a = jnp.zeros((1, 2, 2, 1))
    b = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2, 1)
    # (1 + 4 + 9 + 16) / 4
    np.testing.assert_allclose(losses.content_loss(a, b), 7.5, rtol=1e-6)
    # List: mean of per-layer MSEs, (7.5 + 1) / 2.
    a2, b2 = jnp.zeros((1, 1, 1, 3)), jnp.ones((1, 1, 1, 3))
    np.testing.assert_allclose(losses.content_loss([a, a2], (b, b2)), 4.25, rtol=1e-6)
    assert float(losses.content_loss(b, b)) == 0.0


def test_gram_matrix_known_values():
    # Two positions (H=1, W=2), two channels: f = [[1, 2], [3, 4]].
    f = jnp.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    # f^T f = [[1+9, 2+12], [2+12, 4+16]] / (H*W*C = 4)
    expected = np.array([[10.0, 14.0], [14.0, 20.0]]) / 4
    g = losses.gram_matrix(f)
    assert g.shape == (1, 2, 2)
    np.testing.assert_allclose(g[0], expected, rtol=1e-6)


def test_gram_matrix_batch_and_size_invariance():
    f = jax.random.normal(jax.random.key(0), (3, 4, 5, 6))
    assert losses.gram_matrix(f).shape == (3, 6, 6)
    # Tiling the image 2x2 leaves the per-position average unchanged.
    tiled = jnp.tile(f, (1, 2, 2, 1))
    np.testing.assert_allclose(losses.gram_matrix(tiled), losses.gram_matrix(f), rtol=1e-5)


def test_style_loss_zero_for_same_features_positive_otherwise():
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    feats = [jax.random.normal(k1, (1, 8, 8, 4)), jax.random.normal(k2, (1, 4, 4, 8))]
    grams = [losses.gram_matrix(f) for f in feats]
    assert float(losses.style_loss(feats, grams)) == pytest.approx(0.0, abs=1e-10)
    other = [f + 0.5 * jax.random.normal(k3, f.shape) for f in feats]
    assert float(losses.style_loss(other, grams)) > 1e-3
    # Weights scale each layer's term.
    w0 = losses.style_loss(other, grams, weights=[1.0, 0.0])
    w1 = losses.style_loss(other, grams, weights=[0.0, 2.0])
    both = losses.style_loss(other, grams, weights=[1.0, 1.0])
    np.testing.assert_allclose(w0 + w1 / 2, both, rtol=1e-5)


def test_style_loss_broadcasts_batch_one_target():
    f = jax.random.normal(jax.random.key(2), (1, 4, 4, 3))
    batch = jnp.concatenate([f, f, f])
    target = losses.gram_matrix(f)  # batch 1
    assert float(losses.style_loss(batch, target)) == pytest.approx(0.0, abs=1e-10)
    g = losses.gram_matrix(f + 1.0)
    np.testing.assert_allclose(
        losses.style_loss(jnp.concatenate([f + 1.0] * 3), target),
        np.mean((g - target) ** 2),
        rtol=1e-5,
    )


def test_total_variation():
    const = jnp.full((2, 5, 7, 3), 0.3)
    assert float(losses.total_variation(const)) == 0.0
    assert float(losses.total_variation(const, kind="l2")) == 0.0
    # Horizontal ramp with step 0.1: vertical diffs 0, horizontal diffs all 0.1.
    ramp = jnp.broadcast_to(0.1 * jnp.arange(4.0)[None, None, :, None], (1, 3, 4, 2))
    np.testing.assert_allclose(losses.total_variation(ramp), 0.1, rtol=1e-5)
    np.testing.assert_allclose(losses.total_variation(ramp, kind="l2"), 0.01, rtol=1e-5)
    # Same ramp along both axes: 0.1 + 0.1.
    ramp2 = 0.1 * (jnp.arange(4.0)[:, None] + jnp.arange(4.0)[None, :])[None, :, :, None]
    np.testing.assert_allclose(losses.total_variation(ramp2), 0.2, rtol=1e-5)
    with pytest.raises(ValueError):
        losses.total_variation(ramp, kind="l3")


REAL = jnp.array([2.0, 0.5, -1.0])
FAKE = jnp.array([-2.0, 0.0, 1.0])


@pytest.mark.parametrize(
    "kind, d_expected, g_expected",
    [
        # D: mean(relu(1-real)) = (0 + .5 + 2)/3; mean(relu(1+fake)) = (0 + 1 + 2)/3
        ("hinge", 2.5 / 3 + 3.0 / 3, 1.0 / 3),
        # D: .5*mean((real-1)^2) = .5*(1+.25+4)/3; .5*mean(fake^2) = .5*(4+0+1)/3
        # G: .5*mean((fake-1)^2) = .5*(9+1+0)/3
        ("lsgan", 0.5 * 5.25 / 3 + 0.5 * 5.0 / 3, 0.5 * 10.0 / 3),
        # D: mean(fake) - mean(real) = -1/3 - 1.5/3
        ("wgan", -1.0 / 3 - 1.5 / 3, 1.0 / 3),
    ],
)
def test_adversarial_losses_known_values(kind, d_expected, g_expected):
    np.testing.assert_allclose(losses.d_loss(REAL, FAKE, kind), d_expected, rtol=1e-6)
    np.testing.assert_allclose(losses.g_loss(FAKE, kind), g_expected, rtol=1e-6)
    # Lists are averaged over scales.
    real2, fake2 = jnp.zeros((2, 2)), jnp.zeros((2, 2))
    d2 = losses.d_loss([REAL, real2], [FAKE, fake2], kind)
    d_zero = losses.d_loss(real2, fake2, kind)
    np.testing.assert_allclose(d2, (d_expected + d_zero) / 2, rtol=1e-6)
    g2 = losses.g_loss([FAKE, fake2], kind)
    np.testing.assert_allclose(g2, (g_expected + losses.g_loss(fake2, kind)) / 2, rtol=1e-6)


def test_unknown_gan_kind_raises():
    with pytest.raises(ValueError):
        losses.d_loss(REAL, FAKE, "vanilla")
    with pytest.raises(ValueError):
        losses.g_loss(FAKE, "vanilla")


def _linear_critic(norm: float, shape=(2, 3, 3, 1)):
    w = jax.random.normal(jax.random.key(3), shape[1:])
    w = norm * w / jnp.linalg.norm(w)
    return lambda x: jnp.sum(w * x, axis=(1, 2, 3))


def test_gradient_penalty_linear_critic():
    k1, k2, k3 = jax.random.split(jax.random.key(4), 3)
    real = jax.random.uniform(k1, (4, 2, 3, 3))
    fake = jax.random.uniform(k2, (4, 2, 3, 3))
    shape = (4, 2, 3, 3)
    gp1 = losses.gradient_penalty(_linear_critic(1.0, shape), real, fake, k3)
    np.testing.assert_allclose(gp1, 0.0, atol=1e-5)
    gp3 = losses.gradient_penalty(_linear_critic(3.0, shape), real, fake, k3)
    np.testing.assert_allclose(gp3, (3.0 - 1.0) ** 2, rtol=1e-5)


def test_gradient_penalty_multiscale_critic_sums_means():
    # Two "scales", each a per-pixel map 0.5 * w * x; the per-sample score is the sum over scales
    # of the mean over its 2*3*1 = 6 positions, so its gradient is w / 6 per element (whatever
    # the batch size).
    k1, k2, k3 = jax.random.split(jax.random.key(5), 3)
    real = jax.random.uniform(k1, (3, 2, 3, 1))
    fake = jax.random.uniform(k2, (3, 2, 3, 1))
    w = jnp.full((2, 3, 1), 6.0 * 1.5)  # gradient 1.5 per element

    def critic(x):
        return [0.5 * w * x, 0.5 * w * x]

    expected_norm = 1.5 * np.sqrt(6.0)
    gp = losses.gradient_penalty(critic, real, fake, k3)
    np.testing.assert_allclose(gp, (expected_norm - 1.0) ** 2, rtol=1e-5)


def test_all_losses_jit():
    k = jax.random.key(6)
    x = jax.random.uniform(k, (2, 8, 8, 3))
    y = x[::-1]
    grams = [losses.gram_matrix(x)[:1]]

    @jax.jit
    def everything(x, y, key):
        return jnp.stack(
            [
                losses.content_loss([x], [y]),
                losses.gram_matrix(x).sum(),
                losses.style_loss([y], grams, weights=[2.0]),
                losses.total_variation(x),
                losses.total_variation(x, kind="l2"),
                *[losses.d_loss([x, y], [y, x], kind) for kind in ("hinge", "lsgan", "wgan")],
                *[losses.g_loss([x], kind) for kind in ("hinge", "lsgan", "wgan")],
                losses.gradient_penalty(lambda z: [z * 2.0, z[:, ::2] ** 2], x, y, key),
            ]
        )

    out = everything(x, y, k)
    assert out.shape == (12,)
    assert bool(jnp.all(jnp.isfinite(out)))
    # And the jitted values match eager ones.
    np.testing.assert_allclose(out[3], losses.total_variation(x), rtol=1e-5)
    np.testing.assert_allclose(out[0], losses.content_loss(x, y), rtol=1e-5)


def test_shrink_scales_size_keeps_flat_colour_and_averages_detail():
    x = jnp.full((2, 32, 48, 3), 0.25)
    assert losses.shrink(x, 1.0) is x
    half = losses.shrink(x, 0.5)
    assert half.shape == (2, 16, 24, 3)
    np.testing.assert_allclose(np.asarray(half), 0.25, atol=1e-6)
    # a one-pixel stripe pattern is averaged away (antialiased), not aliased into stripes
    stripes = jnp.tile(jnp.array([0.0, 1.0]), 16)[None, None, :, None] * jnp.ones((1, 32, 1, 1))
    np.testing.assert_allclose(np.asarray(losses.shrink(stripes, 0.5))[:, :, 1:-1], 0.5,
                               atol=0.02)  # (the border columns see one side only)
    # never below 8 px, where the feature net's deepest taps would vanish
    assert losses.shrink(x, 0.1).shape[1:3] == (8, 8)
