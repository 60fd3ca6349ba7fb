"""The pure training step of the multi-style GAN: (state, batch) → (state, metrics).

Everything the step touches is passed in explicitly — generator, discriminator and feature-net
states, optimiser states, EMA weights, the PRNG key — so it jit-compiles once, runs data-parallel
under a device mesh, and an interrupted run resumes bit-for-bit from a checkpoint of `TrainState`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from stylejax import losses
from stylejax.discriminator import MultiScaleDiscriminator
from stylejax.features import DEFAULT_STYLE_TAPS, EfficientNetLite0
from stylejax.generator import Generator

from .views import draw_views, view


@dataclass(frozen=True)
class LossConfig:
    """Loss weights; `style` is the training-time strength knob."""

    content: float = 1.0
    style: float = 4.0
    adv: float = 0.05
    tv: float = 2.0
    adv_kind: str = "hinge"            # hinge | lsgan | wgan-gp
    adv_start: int = 0                 # generator ignores the critic before this step…
    adv_ramp: int = 1                  # …then its weight ramps up linearly over this many
    gp: float = 10.0                   # gradient-penalty weight (wgan-gp only)
    # Post-activation taps, as the custom-style optimiser and the any-style model use. The
    # first packs matched block outputs (features.BLOCK_OUTPUT_STYLE_TAPS), whose Gram
    # matrices high-frequency patterns satisfy: their herringbone (docs/training.md).
    style_taps: tuple[str, ...] = DEFAULT_STYLE_TAPS
    content_taps: tuple[str, ...] = ("stage4",)
    # The feature net sees the result and the photo shifted by a random 0..jitter-1 pixels (the
    # same shift for both), so the generator cannot exploit the feature net's stride-2 grid
    # (0 = off, as the first packs were trained).
    jitter: int = 0
    # The loss's views (trainer/views.py): each result and its photo are turned by up to
    # ±rotate degrees and zoomed by up to `zoom`, through one of `views` fixed transforms whose
    # style targets are computed once, from the style picture seen through the same transform.
    rotate: float = 0.0
    zoom: float = 1.0
    views: int = 12

    @property
    def viewed(self) -> bool:
        return self.rotate > 0 or self.zoom > 1

    @property
    def view_table(self) -> tuple[jax.Array, jax.Array]:
        """(angles, scales) of the fixed views; one identity view when they are off."""
        if not self.viewed:
            return jnp.zeros((1,)), jnp.ones((1,))
        return draw_views(jax.random.key(0), self.views, self.rotate, self.zoom)


@dataclass(frozen=True)
class OptimConfig:
    lr_g: float = 2e-3
    lr_d: float = 1e-3
    warmup: int = 100
    steps: int = 4000
    ema_decay: float = 0.995
    norm_lr_mult: float = 5.0          # per-style norm tables learn faster: styles part sooner
    b1: float = 0.5
    b2: float = 0.99


class TrainState(struct.PyTreeNode):
    """All that changes during training; a checkpoint is exactly this."""

    step: jax.Array
    g: Any                 # generator params (nnx.State)
    g_ema: Any             # exponential moving average of g: what gets exported
    d: Any                 # discriminator params
    d_stats: Any           # discriminator power-iteration vectors (spectral norm)
    g_opt: Any
    d_opt: Any
    key: jax.Array


@dataclass(frozen=True)
class Models:
    """Static structure (graphdefs) of the networks; their arrays live in TrainState."""

    g_graph: Any
    d_graph: Any
    d_eval_graph: Any
    f_graph: Any
    g_tx: optax.GradientTransformation
    d_tx: optax.GradientTransformation


def make_optimizers(cfg: OptimConfig) -> tuple[optax.GradientTransformation, ...]:
    def sched(lr):
        return optax.warmup_cosine_decay_schedule(0.0, lr, max(1, cfg.warmup),
                                                  max(cfg.steps, cfg.warmup + 1), lr * 0.05)

    def labels(params):
        def label(path, _):
            names = {getattr(k, "key", getattr(k, "name", None)) for k in path}
            return "norm" if names & {"scale", "shift"} else "body"

        return jax.tree_util.tree_map_with_path(label, params)

    g_tx = optax.multi_transform(
        {"body": optax.adam(sched(cfg.lr_g), b1=cfg.b1, b2=cfg.b2),
         "norm": optax.adam(sched(cfg.lr_g * cfg.norm_lr_mult), b1=cfg.b1, b2=cfg.b2)},
        labels)
    d_tx = optax.adam(sched(cfg.lr_d), b1=cfg.b1, b2=cfg.b2)
    return g_tx, d_tx


def init_state(generator: Generator, disc: MultiScaleDiscriminator, feature_net: EfficientNetLite0,
               optim: OptimConfig, seed: int) -> tuple[Models, TrainState, Any]:
    """Split the modules into static graphs and a TrainState (plus the frozen feature state)."""
    g_graph, g_params = nnx.split(generator, nnx.Param)
    d_graph, d_params, d_stats = nnx.split(disc, nnx.Param, nnx.BatchStat)
    d_eval_graph, _, _ = nnx.split(nnx.view(disc, use_running_average=True), nnx.Param,
                                   nnx.BatchStat)
    f_graph, f_state = nnx.split(feature_net)
    g_tx, d_tx = make_optimizers(optim)
    state = TrainState(
        step=jnp.zeros((), jnp.int32), g=g_params, g_ema=jax.tree.map(jnp.copy, g_params),
        d=d_params, d_stats=d_stats, g_opt=g_tx.init(g_params), d_opt=d_tx.init(d_params),
        key=jax.random.key_data(jax.random.PRNGKey(seed)),
    )
    return Models(g_graph, d_graph, d_eval_graph, f_graph, g_tx, d_tx), state, f_state


def style_targets(models: Models, f_state: Any, style_images: list[jax.Array],
                  cfg: LossConfig) -> dict[str, jax.Array]:
    """Gram matrices of every style picture through every view at every style tap, stacked:
    {tap: (S, V, C, C)} (V = 1 without views).

    Also the per-tap scale 1/mean(G²) over styles, so each layer has an equal say whatever the
    magnitude of its activations (the same normalisation the custom-style optimiser uses).
    """
    net = nnx.merge(models.f_graph, f_state)
    angles, scales = cfg.view_table
    grams: dict[str, list] = {t: [] for t in cfg.style_taps}
    for img in style_images:
        seen = view(jnp.repeat(img, len(angles), axis=0), angles, scales) if cfg.viewed else img
        feats = net.features(seen, cfg.style_taps)
        for t in cfg.style_taps:
            grams[t].append(losses.gram_matrix(feats[t]))
    out = {t: jnp.stack(g) for t, g in grams.items()}
    out.update({f"{t}/scale": 1.0 / (jnp.mean(out[t] ** 2) + 1e-12) for t in cfg.style_taps})
    return out


def shifted(x: jax.Array, dy: jax.Array, dx: jax.Array, jitter: int) -> jax.Array:
    """x (N,H,W,C) cropped by `jitter` px, starting at (dy, dx): what the loss sees."""
    n, h, w, c = x.shape
    return jax.lax.dynamic_slice(x, (0, dy, dx, 0), (n, h - jitter, w - jitter, c))


def seen_by_loss(fake: jax.Array, photo: jax.Array, turn: tuple[jax.Array, jax.Array] | None,
                 jitter: int, jitter_key: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """What the feature net compares: the result and its photo through the same view (per
    sample (angles, scales), trainer/views.py), then the same random shift. Every mode's step
    calls this, so the two cannot come apart again (the shift once replaced the views)."""
    if turn is not None:
        fake, photo = view(fake, *turn), view(photo, *turn)
    if jitter > 0:
        dy, dx = jax.random.randint(jitter_key, (2,), 0, jitter)
        fake, photo = shifted(fake, dy, dx, jitter), shifted(photo, dy, dx, jitter)
    return fake, photo


def _generator_losses(g_params, models: Models, d_params, d_stats, f_state, targets, batch,
                      cfg: LossConfig, step, jitter_key=None, view_key=None):
    gen = nnx.merge(models.g_graph, g_params)
    feat = nnx.merge(models.f_graph, f_state)
    photo, ids = batch["content"], batch["style_ids"]
    w = jax.nn.one_hot(ids, gen.config.num_styles)
    fake = gen(photo, w)
    taps = tuple(dict.fromkeys(cfg.style_taps + cfg.content_taps))
    angles, scales = cfg.view_table
    which = jnp.zeros(ids.shape, jnp.int32)  # each sample's view: its row of the targets
    turn = None
    if view_key is not None:
        which = jax.random.randint(view_key, ids.shape, 0, len(angles))
        turn = (angles[which], scales[which])
    seen_fake, seen_photo = seen_by_loss(fake, photo, turn, cfg.jitter, jitter_key)
    f_fake = feat.features(seen_fake, taps)
    f_real = jax.lax.stop_gradient(feat.features(seen_photo, cfg.content_taps))
    content = 0.0
    for t in cfg.content_taps:
        scale = jax.lax.stop_gradient(1.0 / (jnp.mean(f_real[t] ** 2) + 1e-12))
        content += scale * jnp.mean((f_fake[t] - f_real[t]) ** 2)
    content /= len(cfg.content_taps)
    style = 0.0
    for t in cfg.style_taps:
        g = losses.gram_matrix(f_fake[t])
        style += targets[f"{t}/scale"] * jnp.mean((g - targets[t][ids, which]) ** 2)
    style /= len(cfg.style_taps)
    tv = losses.total_variation(fake)
    disc = nnx.merge(models.d_eval_graph, d_params, d_stats)
    kind = "wgan" if cfg.adv_kind == "wgan-gp" else cfg.adv_kind
    adv = losses.g_loss(disc(fake, ids), kind) if cfg.adv > 0 else jnp.zeros(())
    ramp = jnp.clip((step - cfg.adv_start) / max(cfg.adv_ramp, 1), 0.0, 1.0)
    total = cfg.content * content + cfg.style * style + cfg.tv * tv + cfg.adv * ramp * adv
    return total, (fake, {"g_total": total, "content": content, "style": style, "tv": tv,
                          "g_adv": adv})


def power_iteration(models: Models, d_params, d_stats, num_styles: int):
    """Refresh the spectral-norm vectors: one train-mode call (its input is irrelevant).

    Done outside the gradient, because NNX refuses to mutate state across the grad trace.
    """
    disc = nnx.merge(models.d_graph, d_params, d_stats)
    disc(jnp.zeros((1, 32, 32, 3)), jnp.zeros((1,), jnp.int32) % num_styles)
    return nnx.split(disc, nnx.Param, nnx.BatchStat)[2]


def _discriminator_loss(d_params, d_stats, models: Models, real, fake, ids, key,
                        cfg: LossConfig):
    disc = nnx.merge(models.d_eval_graph, d_params, d_stats)
    kind = "wgan" if cfg.adv_kind == "wgan-gp" else cfg.adv_kind
    loss = losses.d_loss(disc(real, ids), disc(fake, ids), kind)
    gp = jnp.zeros(())
    if cfg.adv_kind == "wgan-gp":
        gp = losses.gradient_penalty(lambda x: disc(x, ids), real, fake, key)
        loss = loss + cfg.gp * gp
    return loss, {"d_loss": loss, "gp": gp}


def generator_update(models: Models, optim: OptimConfig, state: TrainState, grads: Any
                     ) -> tuple[Any, Any, Any]:
    """(params, EMA, optimiser state) after one generator step, as every mode takes it.

    The EMA is warmed up: early on the average would be dominated by the random
    initialisation.
    """
    updates, g_opt = models.g_tx.update(grads, state.g_opt, state.g)
    g_params = optax.apply_updates(state.g, updates)
    decay = jnp.minimum(optim.ema_decay, (1.0 + state.step) / (10.0 + state.step))
    ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state.g_ema, g_params)
    return g_params, ema, g_opt


def train_step(models: Models, cfg: LossConfig, optim: OptimConfig, state: TrainState,
               f_state: Any, targets: dict, batch: dict) -> tuple[TrainState, dict]:
    """One generator update and one discriminator update (pure; jit with models/cfg static)."""
    key = jax.random.wrap_key_data(state.key)
    key, gp_key = jax.random.split(key)
    jitter_key = None
    if cfg.jitter > 0:  # a separate split, so runs without jitter keep their random stream
        key, jitter_key = jax.random.split(key)
    view_key = None
    if cfg.viewed:  # likewise for the views
        key, view_key = jax.random.split(key)
    (_, (fake, g_metrics)), g_grads = jax.value_and_grad(_generator_losses, has_aux=True)(
        state.g, models, state.d, state.d_stats, f_state, targets, batch, cfg, state.step,
        jitter_key, view_key)
    g_params, ema, g_opt = generator_update(models, optim, state, g_grads)

    d_params, d_opt, d_stats, d_metrics = state.d, state.d_opt, state.d_stats, {}
    if cfg.adv > 0:
        fake = jax.lax.stop_gradient(fake)
        d_stats = power_iteration(models, state.d, state.d_stats, 1)
        (_, d_metrics), d_grads = jax.value_and_grad(
            _discriminator_loss, has_aux=True)(state.d, d_stats, models,
                                               batch["style_patches"], fake, batch["style_ids"],
                                               gp_key, cfg)
        d_updates, d_opt = models.d_tx.update(d_grads, state.d_opt, state.d)
        d_params = optax.apply_updates(state.d, d_updates)
    new = state.replace(step=state.step + 1, g=g_params, g_ema=ema, d=d_params, d_stats=d_stats,
                        g_opt=g_opt, d_opt=d_opt, key=jax.random.key_data(key))
    return new, {**g_metrics, **d_metrics}
