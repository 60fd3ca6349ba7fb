import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from stylejax import losses
from stylejax.discriminator import MultiScaleDiscriminator, PatchDiscriminator, SNConv

# One compiled forward shared by the tests (eager op-by-op dispatch is slow to warm up on CPU).
forward = nnx.jit(lambda d, x, style=None, style_weights=None: d(x, style, style_weights))
forward_conv = nnx.jit(lambda conv, x: conv(x))


def _top_singular_value(kernel: jax.Array) -> float:
    mat = np.asarray(kernel).reshape(-1, kernel.shape[-1])
    return float(np.linalg.svd(mat, compute_uv=False)[0])


@pytest.mark.parametrize(
    "hw, expected", [((64, 64), [(8, 8), (4, 4)]), ((96, 128), [(12, 16), (6, 8)])]
)
def test_output_shapes_two_scales(hw, expected):
    d = MultiScaleDiscriminator(5, ch=8, n_layers=3, num_scales=2, rngs=nnx.Rngs(0))
    x = jnp.zeros((2, *hw, 3))
    outs = forward(d, x, jnp.array([0, 4]))
    assert isinstance(outs, list)
    assert [o.shape for o in outs] == [(2, h, w, 1) for h, w in expected]


def test_channels_double_up_to_cap():
    d = PatchDiscriminator(2, ch=8, n_layers=5, rngs=nnx.Rngs(0))
    assert [c.kernel.shape[-1] for c in d.convs] == [8, 16, 32, 64, 64]
    assert d.embed.embedding.shape == (2, 64)


def test_conditioning_changes_logits():
    d = MultiScaleDiscriminator(3, ch=8, rngs=nnx.Rngs(1))
    d.eval()  # fixed power-iteration state, so repeated calls are comparable
    x = jax.random.uniform(jax.random.key(0), (1, 32, 32, 3))
    a = forward(d, x, jnp.array([0]))
    b = forward(d, x, jnp.array([2]))
    for oa, ob in zip(a, b, strict=True):
        assert float(jnp.max(jnp.abs(oa - ob))) > 1e-4
    # Soft weights: one-hot equals the hard id; a 50/50 mix is the midpoint (projection is linear).
    onehot = forward(d, x, style_weights=jax.nn.one_hot(jnp.array([2]), 3))
    mix = forward(d, x, style_weights=jnp.array([[0.5, 0.0, 0.5]]))
    for oa, ob, oh, om in zip(a, b, onehot, mix, strict=True):
        np.testing.assert_allclose(oh, ob, atol=1e-5)
        np.testing.assert_allclose(om, (oa + ob) / 2, atol=1e-5)
    with pytest.raises(ValueError):
        d(x)


def test_spectral_norm_train_updates_eval_fixed():
    conv = SNConv(3, 8, 4, strides=2, rngs=nnx.Rngs(2))
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    assert _top_singular_value(conv.normalized_kernel()) == pytest.approx(1.0, rel=0.05)
    # Replace the raw kernel (as a big optimiser step would): ``u`` is now stale, and train-mode
    # calls must track the new top singular vector.
    conv.kernel[...] = 7.0 * jax.random.normal(jax.random.key(9), conv.kernel.shape)
    u0 = np.asarray(conv.u[...])
    for _ in range(30):
        conv(x)  # train mode by default: one power iteration per call
    assert not np.allclose(u0, conv.u[...])
    assert _top_singular_value(conv.normalized_kernel()) == pytest.approx(1.0, rel=0.05)

    conv.eval()
    u1 = np.asarray(conv.u[...])
    y1, y2 = conv(x), forward_conv(conv, x)
    np.testing.assert_array_equal(u1, conv.u[...])
    np.testing.assert_allclose(y1, y2, atol=1e-5)
    # The raw weight is never overwritten: normalisation is recomputed from it on each call.
    assert _top_singular_value(conv.kernel[...]) > 3.0


def test_discriminator_kernels_normalised_after_train_calls():
    d = MultiScaleDiscriminator(2, ch=8, rngs=nnx.Rngs(3))
    x = jax.random.uniform(jax.random.key(2), (2, 32, 32, 3))
    style = jnp.array([0, 1])
    for _ in range(30):
        forward(d, x, style)
    convs = [m for _, m in nnx.iter_graph(d) if isinstance(m, SNConv)]
    assert len(convs) == 2 * 4
    for conv in convs:
        assert _top_singular_value(conv.normalized_kernel()) == pytest.approx(1.0, rel=0.05)


def test_nnx_jit_matches_eager_and_updates_state_in_train_mode():
    d = MultiScaleDiscriminator(2, ch=8, rngs=nnx.Rngs(4))
    x = jax.random.uniform(jax.random.key(3), (2, 32, 48, 3))
    style = jnp.array([1, 0])
    u0 = np.asarray(d.discs[0].convs[0].u[...])
    forward(d, x, style)  # train mode: u is updated through nnx.jit
    assert not np.allclose(u0, d.discs[0].convs[0].u[...])

    d.eval()
    u1 = np.asarray(d.discs[0].convs[0].u[...])
    eager = d(x, style)
    jitted = forward(d, x, style)
    np.testing.assert_array_equal(u1, d.discs[0].convs[0].u[...])  # eval: state stays fixed
    for a, b in zip(eager, jitted, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_gradient_penalty_through_discriminator():
    # For WGAN-GP, call the critic in eval mode (nnx.view): the penalty differentiates through it.
    d = MultiScaleDiscriminator(2, ch=8, rngs=nnx.Rngs(5))
    k1, k2, k3 = jax.random.split(jax.random.key(4), 3)
    real = jax.random.uniform(k1, (2, 16, 16, 3))
    fake = jax.random.uniform(k2, (2, 16, 16, 3))
    style = jnp.array([0, 1])

    @nnx.jit
    def penalty_and_grads(d):
        def loss(d):
            critic = nnx.view(d, use_running_average=True)
            return losses.gradient_penalty(lambda z: critic(z, style), real, fake, k3)

        return nnx.value_and_grad(loss)(d)

    gp, grads = penalty_and_grads(d)
    assert np.isfinite(float(gp))
    leaves = jax.tree.leaves(grads)
    assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)


def _smooth_images(key, n, size):
    """Random linear colour gradients: the 'real' class."""
    k1, k2 = jax.random.split(key)
    lin = jnp.linspace(0.0, 1.0, size)
    yy, xx = jnp.meshgrid(lin, lin, indexing="ij")
    coef = jax.random.uniform(k1, (n, 1, 1, 3, 2), minval=-0.5, maxval=0.5)
    base = jax.random.uniform(k2, (n, 1, 1, 3), minval=0.25, maxval=0.75)
    img = base + coef[..., 0] * yy[None, :, :, None] + coef[..., 1] * xx[None, :, :, None]
    return jnp.clip(img, 0.0, 1.0)


def test_discriminator_learns_real_vs_noise():
    n, size, num_styles = 8, 32, 3
    d = MultiScaleDiscriminator(num_styles, ch=8, num_scales=2, rngs=nnx.Rngs(6))
    opt = nnx.Optimizer(d, optax.adam(1e-2, b1=0.5, b2=0.999), wrt=nnx.Param)

    @nnx.jit
    def train_step(d, opt, key):
        k1, k2, k3 = jax.random.split(key, 3)
        real = _smooth_images(k1, n, size)
        fake = jax.random.uniform(k2, (n, size, size, 3))
        style = jax.random.randint(k3, (n,), 0, num_styles)

        def loss_fn(d):
            # One pass over real and fake together: a smaller program to compile.
            logits = d(jnp.concatenate([real, fake]), jnp.concatenate([style, style]))
            return losses.d_loss([o[:n] for o in logits], [o[n:] for o in logits], "hinge")

        loss, grads = nnx.value_and_grad(loss_fn)(d)
        opt.update(d, grads)
        return loss

    key = jax.random.key(7)
    history = []
    for _ in range(20):
        key, sub = jax.random.split(key)
        history.append(float(train_step(d, opt, sub)))
    # Hinge D loss starts near 2 (logits ~ 0); it must clearly fall.
    assert history[0] > 1.5, history
    assert np.mean(history[-3:]) < 0.5 * history[0], history

    # And on fresh images (eval mode), real patches score above fake ones at every scale.
    d.eval()
    k1, k2 = jax.random.split(jax.random.key(8))
    style = jnp.arange(n) % num_styles
    real_logits = forward(d, _smooth_images(k1, n, size), style)
    fake_logits = forward(d, jax.random.uniform(k2, (n, size, size, 3)), style)
    for r, f in zip(real_logits, fake_logits, strict=True):
        assert float(r.mean()) > float(f.mean()) + 0.5
