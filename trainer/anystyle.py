"""Training the any-style model (`stylejax.anystyle`): one generator for every style picture.

Each step draws B photo crops and B augmented style pictures from the corpus, plus I identity
photos. The frozen EfficientNet-Lite0 reads each style picture once: its Gram matrices are that
sample's style target and its channel statistics are the encoder's input. The encoder's style
vector drives the generator's norms; the identity photos get the zero vector and must come back
unchanged (that is what makes strength an interpolation towards 0). Losses are the pack's:
content (Lite0 stage4), Gram style at the post-activation taps of the custom-style optimiser,
total variation, and an adversarial term against the PatchGAN conditioned on the style vector
by projection (hinge, LSGAN or WGAN-GP). Adam via Optax, EMA of the weights.

The step is pure and the batches are a function of (seed, step), as in trainer/steps.py, so a
resumed run is exactly the uninterrupted one.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from stylejax import losses
from stylejax.anystyle import (
    AnyStyleConfig,
    AnyStyleModel,
    load_model,
    save_model,
    statistics_size,
    without_blocks,
)
from stylejax.colour import DEFAULT_PALETTE, map_between, pixel_stats
from stylejax.discriminator import MultiScaleDiscriminator
from stylejax.features import DEFAULT_CONTENT_TAPS, DEFAULT_STYLE_TAPS, load_feature_net
from stylejax.generator import GeneratorConfig
from stylejax.imageio import decode_image, resize_long_side

from .anystyle_data import (
    AnyStyleStream,
    StyleCorpus,
    drop_held_out,
    held_out_digests,
    held_out_names,
    held_out_style_files,
)
from .checkpoints import Checkpoints
from .config import UPSAMPLES, JsonConfig, opt
from .data import PhotoFolder, PrefetchIterator
from .grid import center_square, save_grid
from .loop import data_mesh, resume
from .steps import (
    Models,
    OptimConfig,
    TrainState,
    generator_update,
    init_state,
    power_iteration,
    seen_by_loss,
)
from .views import draw_views, view

log = logging.getLogger("stylejax.train")

CONFIG_FILE = "anystyle_config.json"


@dataclass
class AnyStyleTrainConfig(JsonConfig):
    content: str = opt("", "folder of photos (the benchmark's held-out photos are dropped)")
    corpus: list[str] = opt([], "style pictures: files or folders (held-out ones dropped)")
    data_root: str = opt("../shared/data", "where bench/eval_set.json's files live")
    out: str = opt("runs/anystyle", "run folder: checkpoints, metrics, samples")
    steps: int = opt(20_000, "train to this step")
    batch: int = opt(4, "styled photos per step")
    identity_batch: int = opt(1, "extra photos per step with the zero style vector")
    size: int = opt(128, "photo crop side (multiple of 4)")
    style_side: int = opt(256, "style picture side, as the encoder and the loss see it")
    seed: int = opt(0, "seed of the initialisation and of every batch")
    cache_side: int = opt(256, "photos are cached with this short side")
    corpus_cache_side: int = opt(320, "style pictures are cached with this long side")
    channels: tuple[int, int, int] = opt((16, 32, 64), "generator widths at 1, 1/2, 1/4 res")
    res_blocks: int = opt(5, "residual blocks at 1/4 resolution")
    upsample: str = opt("nearest", "decoder upsampling (nearest: no sub-pixel grid)",
                        choices=UPSAMPLES)
    photo_skip: bool = opt(False, "the decoder also reads the photo at 1/2 res, where outlines "
                                  "are (run L: the halo stayed; stylejax.generator)")
    style_dim: int = opt(100, "size of the style vector")
    hidden: int = opt(512, "width of the encoder's hidden layer")
    photo_hidden: int = opt(0, "width of the photo-aware correction of the style vector, which "
                               "also reads the photo's statistics (stylejax.anystyle."
                               "PhotoCorrection; 0: off)")
    disc_ch: int = opt(32, "discriminator base width")
    disc_scales: int = opt(2, "discriminator scales")
    content_weight: float = opt(1.0, "content loss weight")
    style_weight: float = opt(24.0, "Gram style loss weight")
    identity_weight: float = opt(20.0, "weight of 'the zero vector gives the photo back'")
    tv_weight: float = opt(1.0, "total variation weight")
    jitter: int = opt(0, "the loss sees result and photo shifted by 0..jitter-1 px (against "
                         "the feature net's stride grid; 0: off)")
    colour_match: float = opt(0.0, "the losses see the result with the style's palette moved "
                                   "onto it by this amount, as serving does (stylejax.colour; "
                                   "0: off)")
    rotate: float = opt(0.0, "the losses see each result, its photo and its style picture "
                             "turned by a random angle in ±this many degrees (trainer/views.py; "
                             "0: off)")
    zoom: float = opt(1.0, "the losses' views are also magnified by a random factor in "
                           "[1/zoom, zoom] (1: off)")
    style_scales: tuple[float, ...] = opt((1.0,), "the Gram terms are also taken on result and "
                                          "style picture shrunk by these factors, where the "
                                          "taps see larger strokes (1: the pictures as they are)")
    content_taps: tuple[str, ...] = opt(DEFAULT_CONTENT_TAPS, "feature-net taps of the content "
                                        "term, averaged (stage4 alone, at 1/16, cannot see a "
                                        "band a few pixels wide: docs/training.md, the halo)")
    init_model: str = opt("", "a new run starts from this any-style model folder's weights "
                              "(its shape must match; discriminator and optimiser start fresh)")
    init_drop_blocks: tuple[int, ...] = opt((), "residual blocks of --init-model left out, so a "
                                            "generator with fewer starts from it (its last "
                                            "block changes F's pictures least)")
    adv_weight: float = opt(0.05, "adversarial weight (0: no discriminator)")
    adv_loss: str = opt("hinge", "adversarial loss", choices=("hinge", "lsgan", "wgan-gp"))
    adv_start: int = opt(1000, "adversarial term off before this step")
    adv_ramp: int = opt(1000, "then ramped up over this many steps")
    gp: float = opt(10.0, "gradient penalty weight (wgan-gp)")
    lr_g: float = opt(1e-3, "generator + encoder learning rate")
    lr_d: float = opt(1e-3, "discriminator learning rate")
    warmup: int = opt(200, "learning-rate warm-up steps")
    ema_decay: float = opt(0.999, "EMA decay of the exported weights")
    norm_lr_mult: float = opt(1.0, "learning-rate factor of the identity style's norm rows")
    log_every: int = opt(10, "steps between metrics records")
    sample_every: int = opt(500, "steps between sample grids")
    ckpt_every: int = opt(250, "steps between checkpoints")
    keep: int = opt(3, "checkpoints kept")

    def validate(self) -> None:
        if not self.content:
            raise ValueError("no content folder given (--content)")
        if not self.corpus:
            raise ValueError("no style corpus given (--corpus)")
        if self.adv_loss not in ("hinge", "lsgan", "wgan-gp"):
            raise ValueError(f"adv_loss must be hinge, lsgan or wgan-gp, not {self.adv_loss!r}")
        if self.size % 4:
            raise ValueError("size must be a multiple of 4")
        if self.photo_hidden < 0:
            raise ValueError("photo_hidden must be 0 (off) or a layer width")
        self.require_positive("steps", "batch", "size", "style_side", "log_every", "sample_every",
                              "ckpt_every", "keep", "style_dim")

    def model(self) -> AnyStyleConfig:
        return AnyStyleConfig(
            generator=GeneratorConfig(num_styles=1, channels=tuple(self.channels),
                                      res_blocks=self.res_blocks, upsample=self.upsample,
                                      photo_skip=self.photo_skip),
            style_dim=self.style_dim, hidden=self.hidden, taps=DEFAULT_STYLE_TAPS,
            photo_hidden=self.photo_hidden)

    def optim(self) -> OptimConfig:
        return OptimConfig(lr_g=self.lr_g, lr_d=self.lr_d, warmup=self.warmup, steps=self.steps,
                           ema_decay=self.ema_decay, norm_lr_mult=self.norm_lr_mult)


@dataclass(frozen=True)
class AnyStyleLoss:
    """The static part of the step: weights and taps (hashable, so jit treats it as constant)."""

    content: float
    style: float
    identity: float
    tv: float
    adv: float
    adv_kind: str
    adv_start: int
    adv_ramp: int
    gp: float
    identity_batch: int
    jitter: int = 0
    colour_match: float = 0.0
    rotate: float = 0.0
    zoom: float = 1.0
    style_scales: tuple[float, ...] = (1.0,)
    style_taps: tuple[str, ...] = DEFAULT_STYLE_TAPS
    content_taps: tuple[str, ...] = DEFAULT_CONTENT_TAPS

    @classmethod
    def of(cls, cfg: AnyStyleTrainConfig) -> AnyStyleLoss:
        return cls(content=cfg.content_weight, style=cfg.style_weight,
                   identity=cfg.identity_weight, tv=cfg.tv_weight, adv=cfg.adv_weight,
                   adv_kind=cfg.adv_loss, adv_start=cfg.adv_start, adv_ramp=cfg.adv_ramp,
                   gp=cfg.gp, identity_batch=cfg.identity_batch, jitter=cfg.jitter,
                   colour_match=cfg.colour_match, rotate=cfg.rotate, zoom=cfg.zoom,
                   style_scales=tuple(cfg.style_scales),
                   content_taps=tuple(cfg.content_taps))

    @property
    def viewed(self) -> bool:
        return self.rotate > 0 or self.zoom > 1

    @property
    def gan_kind(self) -> str:
        return "wgan" if self.adv_kind == "wgan-gp" else self.adv_kind


def scaled_mse(a: jax.Array, b: jax.Array) -> jax.Array:
    """MSE over all but the batch axis, per sample, divided by the target's mean square (so
    every layer and every style picture has an equal say whatever its magnitude)."""
    axes = tuple(range(1, a.ndim))
    scale = jax.lax.stop_gradient(1.0 / (jnp.mean(b ** 2, axis=axes) + 1e-12))
    return scale * jnp.mean((a - b) ** 2, axis=axes)


def _with_style_palette(fake: jax.Array, style: jax.Array, amount: float) -> jax.Array:
    """The serving path's colour map (stylejax.colour) inside the step: the map is computed
    from the statistics without gradient and applied linearly, so the generator's gradient
    is the loss's gradient through one 3×3 map, and it learns texture, not palette."""
    flat = lambda x: x.reshape(x.shape[0], -1, 3)  # noqa: E731
    src = pixel_stats(jax.lax.stop_gradient(flat(fake)), jnp)
    dst = pixel_stats(flat(style), jnp)
    a, b = jax.lax.stop_gradient(map_between(*src, *dst, amount, xp=jnp))
    return jnp.clip(jnp.einsum("bhwj,bij->bhwi", fake, a) + b[:, None, None, :], 0.0, 1.0)


def _generator_losses(g_params, models: Models, d_params, d_stats, f_state, batch,
                      cfg: AnyStyleLoss, step, jitter_key=None, view_key=None):
    model: AnyStyleModel = nnx.merge(models.g_graph, g_params)
    feat = nnx.merge(models.f_graph, f_state)
    photos = batch["content"]
    n_id = cfg.identity_batch
    n = photos.shape[0] - n_id
    turn = None
    if cfg.viewed:  # one transform per sample, for its result, photo and style picture alike
        turn = draw_views(view_key, n, cfg.rotate, cfg.zoom)
    # The style picture is read once, in its view: the encoder's channel statistics barely
    # move under a turn, and the Gram target turns with the strokes.
    style_seen = batch["style"] if turn is None else view(batch["style"], *turn)
    f_style = jax.lax.stop_gradient(feat.features(style_seen, model.config.taps))
    f_own = None  # a photo-aware vector reads the crop it paints, unturned (serving: the photo)
    if model.photo_aware:
        f_own = jax.lax.stop_gradient(feat.features(photos[:n], model.config.taps))
    z = model.encode_features(f_style, f_own)
    z_all = jnp.concatenate([z, jnp.zeros((n_id, z.shape[1]), z.dtype)]) if n_id else z
    fake_all = model(photos, z_all)
    fake, photo = fake_all[:n], photos[:n]
    if cfg.colour_match > 0:
        fake = _with_style_palette(fake, batch["style"], cfg.colour_match)
    seen_fake, seen_photo = seen_by_loss(fake, photo, turn, cfg.jitter, jitter_key)
    taps = tuple(dict.fromkeys(cfg.style_taps + cfg.content_taps))
    f_fake = feat.features(seen_fake, taps)
    f_photo = jax.lax.stop_gradient(feat.features(seen_photo, cfg.content_taps))
    content = sum(jnp.mean(scaled_mse(f_fake[t], f_photo[t])) for t in cfg.content_taps)
    content = content / len(cfg.content_taps)
    style = 0.0
    for s in cfg.style_scales:  # one Gram term per (scale, tap), averaged
        fs_fake, fs_style = f_fake, f_style
        if s != 1:
            fs_fake = feat.features(losses.shrink(seen_fake, s), cfg.style_taps)
            fs_style = jax.lax.stop_gradient(
                feat.features(losses.shrink(style_seen, s), cfg.style_taps))
        style += sum(jnp.mean(scaled_mse(losses.gram_matrix(fs_fake[t]),
                                          losses.gram_matrix(fs_style[t])))
                     for t in cfg.style_taps)
    style = style / (len(cfg.style_taps) * len(cfg.style_scales))
    identity = jnp.mean((fake_all[n:] - photos[n:]) ** 2) if n_id else jnp.zeros(())
    tv = losses.total_variation(fake)
    adv = jnp.zeros(())
    if cfg.adv > 0:
        disc = nnx.merge(models.d_eval_graph, d_params, d_stats)
        adv = losses.g_loss(disc(fake, style_weights=jax.lax.stop_gradient(z)), cfg.gan_kind)
    ramp = jnp.clip((step - cfg.adv_start) / max(cfg.adv_ramp, 1), 0.0, 1.0)
    total = (cfg.content * content + cfg.style * style + cfg.identity * identity
             + cfg.tv * tv + cfg.adv * ramp * adv)
    metrics = {"g_total": total, "content": content, "style": style, "identity": identity,
               "tv": tv, "g_adv": adv, "z_norm": jnp.mean(jnp.linalg.norm(z, axis=-1))}
    return total, (jax.lax.stop_gradient(fake), jax.lax.stop_gradient(z), metrics)


def _discriminator_loss(d_params, d_stats, models: Models, real, fake, z, key,
                        cfg: AnyStyleLoss):
    disc = nnx.merge(models.d_eval_graph, d_params, d_stats)
    loss = losses.d_loss(disc(real, style_weights=z), disc(fake, style_weights=z), cfg.gan_kind)
    gp = jnp.zeros(())
    if cfg.adv_kind == "wgan-gp":
        gp = losses.gradient_penalty(lambda x: disc(x, style_weights=z), real, fake, key)
        loss = loss + cfg.gp * gp
    return loss, {"d_loss": loss, "gp": gp}


def anystyle_step(models: Models, cfg: AnyStyleLoss, optim: OptimConfig, state: TrainState,
                  f_state: Any, batch: dict) -> tuple[TrainState, dict]:
    """One generator (+ encoder + head) update and one discriminator update; pure."""
    key = jax.random.wrap_key_data(state.key)
    key, gp_key = jax.random.split(key)
    jitter_key = None
    if cfg.jitter > 0:  # a separate split, so runs without jitter keep their random stream
        key, jitter_key = jax.random.split(key)
    view_key = None
    if cfg.viewed:  # likewise
        key, view_key = jax.random.split(key)
    (_, (fake, z, g_metrics)), g_grads = jax.value_and_grad(_generator_losses, has_aux=True)(
        state.g, models, state.d, state.d_stats, f_state, batch, cfg, state.step, jitter_key,
        view_key)
    g_params, ema, g_opt = generator_update(models, optim, state, g_grads)
    d_params, d_opt, d_stats, d_metrics = state.d, state.d_opt, state.d_stats, {}
    if cfg.adv > 0:
        d_stats = power_iteration(models, state.d, state.d_stats, 1)
        (_, d_metrics), d_grads = jax.value_and_grad(_discriminator_loss, has_aux=True)(
            state.d, d_stats, models, batch["style_patches"], fake, z, gp_key, cfg)
        d_updates, d_opt = models.d_tx.update(d_grads, state.d_opt, state.d)
        d_params = optax.apply_updates(state.d, d_updates)
    new = state.replace(step=state.step + 1, g=g_params, g_ema=ema, d=d_params, d_stats=d_stats,
                        g_opt=g_opt, d_opt=d_opt, key=jax.random.key_data(key))
    return new, {**g_metrics, **d_metrics}


def build_state(cfg: AnyStyleTrainConfig):
    """(models, fresh TrainState, frozen feature-net state, feature net) for `cfg`; no data."""
    feature_net = load_feature_net()
    model_cfg = cfg.model()
    rngs = nnx.Rngs(cfg.seed)
    model = AnyStyleModel(model_cfg, statistics_size(feature_net, model_cfg.taps), rngs=rngs)
    disc = MultiScaleDiscriminator(cfg.style_dim, ch=cfg.disc_ch, num_scales=cfg.disc_scales,
                                   rngs=rngs)
    models, template, f_state = init_state(model, disc, feature_net, cfg.optim(), cfg.seed)
    return models, template, f_state


def export_model(run_dir: str | Path, out_dir: str | Path, step: int | None = None,
                 palette: float | None = None) -> Path:
    """A run's EMA weights → an any-style model folder (`stylejax.anystyle.save_model`).
    The serving palette amount is the run's `colour_match` (`DEFAULT_PALETTE` for a run
    trained without the map, which still gains from it: docs/training.md) unless `palette`
    says otherwise."""
    run_dir = Path(run_dir)
    cfg = AnyStyleTrainConfig.load(run_dir / CONFIG_FILE)
    models, template, _ = build_state(cfg)
    ckpt = Checkpoints(run_dir / "checkpoints", keep=cfg.keep)
    state, _ = ckpt.restore(template, step)
    ckpt.close()
    model = nnx.merge(models.g_graph, jax.device_get(state.g_ema))
    record = {"steps": int(state.step), "batch": cfg.batch, "identity_batch": cfg.identity_batch,
              "size": cfg.size, "style_side": cfg.style_side, "seed": cfg.seed,
              "corpus": cfg.corpus,
              "losses": {"content": cfg.content_weight, "style": cfg.style_weight,
                         "identity": cfg.identity_weight, "tv": cfg.tv_weight,
                         "adv": cfg.adv_weight, "adv_loss": cfg.adv_loss,
                         "colour_match": cfg.colour_match, "jitter": cfg.jitter,
                         "rotate": cfg.rotate, "zoom": cfg.zoom,
                         "style_scales": list(cfg.style_scales),
                         "content_taps": list(cfg.content_taps)},
              "init_model": cfg.init_model or None}
    if palette is None:  # the run's own amount, else the shipped default (docs/training.md)
        palette = cfg.colour_match if cfg.colour_match > 0 else DEFAULT_PALETTE
    return save_model(out_dir, model, record, palette=palette)


def with_model_weights(state: TrainState, models: Models, folder: str | Path,
                       config: AnyStyleConfig, drop_blocks: Sequence[int] = ()) -> TrainState:
    """A fresh state whose generator (and its EMA) are an exported model's weights: a fine-tune
    of a shipped model, whose checkpoints may be gone. Its parameters must have the run's
    shapes; the decoder's upsampling may differ (the resize decoders share their weights),
    which is how a model moves to another decoder without starting over. `drop_blocks`: the
    model's residual blocks to leave out (`anystyle.without_blocks`)."""
    model = load_model(folder)
    if drop_blocks:
        log.info("residual blocks %s of %s left out", list(drop_blocks), folder)
        model = without_blocks(model, drop_blocks)
    if model.config.taps != config.taps:
        raise ValueError(f"{folder} reads other feature taps than this run")
    if model.config.generator.upsample != config.generator.upsample:
        log.info("decoder upsampling %s -> %s", model.config.generator.upsample,
                 config.generator.upsample)
    grow = config.generator.photo_skip and not model.config.generator.photo_skip
    if grow:
        log.info("the decoder's photo skip starts at zero: the run starts as %s", folder)
    _, params = nnx.split(model, nnx.Param)
    if config.photo_hidden and not model.photo_aware:  # its output layer starts at zero
        log.info("the photo-aware correction starts at zero: the run starts as %s", folder)
        params["photo"] = state.g["photo"]
    if jax.tree.structure(state.g) != jax.tree.structure(params):
        raise ValueError(f"{folder} does not have this run's parameters")
    params = jax.tree.map(lambda have, want: _fit(have, want.shape, grow), params, state.g)
    log.info("starting from the weights of %s", folder)
    return state.replace(g=params, g_ema=jax.tree.map(jnp.copy, params),
                         g_opt=models.g_tx.init(params))


def _fit(have: np.ndarray, want: tuple[int, ...], grow: bool) -> jax.Array:
    """`have` as the run's parameter of shape `want`. With `grow` (the run adds the decoder's
    photo skip) a conv kernel with fewer input channels gets zero kernels for the new ones, so
    the grown network computes exactly what the old one did."""
    if have.shape == want:
        return jnp.asarray(have)
    if (grow and have.ndim == 4 and have.shape[:2] + have.shape[3:] == want[:2] + want[3:]
            and want[2] > have.shape[2]):
        extra = np.zeros((*want[:2], want[2] - have.shape[2], want[3]), have.dtype)
        return jnp.asarray(np.concatenate([have, extra], axis=2))
    raise ValueError(f"a parameter of shape {have.shape} does not fit this run's parameter shapes "
                     f"({want})")


class AnyStyleTrainer:
    """A run of the any-style model: data, state, the jitted step, samples and checkpoints."""

    def __init__(self, cfg: AnyStyleTrainConfig):
        cfg.validate()
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        held_photos, held_styles = held_out_names()
        photos = drop_held_out(PhotoFolder(cfg.content, cache_side=cfg.cache_side), held_photos)
        self.corpus = StyleCorpus(cfg.corpus, cache_side=cfg.corpus_cache_side,
                                  exclude_names=held_styles,
                                  exclude_digests=held_out_digests(cfg.data_root))
        self.models, template, self.f_state = build_state(cfg)
        self.loss_cfg, self.optim_cfg = AnyStyleLoss.of(cfg), cfg.optim()
        self.ckpt = Checkpoints(self.out / "checkpoints", keep=cfg.keep)
        if cfg.init_model and self.ckpt.latest_step() is None:
            template = with_model_weights(template, self.models, cfg.init_model, cfg.model(),
                                          cfg.init_drop_blocks)
        self.state: TrainState = resume(self.ckpt, template, cfg, self.out / CONFIG_FILE)
        self.mesh, self.replicated, self.sharded = data_mesh(cfg.batch)
        self.state = jax.device_put(self.state, self.replicated)
        self.f_state = jax.device_put(self.f_state, self.replicated)
        self._step = jax.jit(functools.partial(anystyle_step, self.models, self.loss_cfg,
                                               self.optim_cfg),
                             out_shardings=(self.replicated, self.replicated),
                             donate_argnums=(0,))
        self.stream = AnyStyleStream(photos, self.corpus, batch=cfg.batch, size=cfg.size,
                                     style_side=cfg.style_side, identity=cfg.identity_batch,
                                     seed=cfg.seed)
        self.samples = self._sample_pairs(photos)
        (self.out / CONFIG_FILE).write_text(cfg.to_json())

    # -- what the loop needs ------------------------------------------------------------------
    @property
    def step(self) -> int:
        return int(self.state.step)

    def batches(self, start: int, until: int) -> PrefetchIterator:
        return PrefetchIterator(self.stream.batch_at, start, prefetch=2, stop_step=until,
                                name=f"AnyStyle-prefetch-{start}")

    def train_step(self, state: TrainState, batch: dict[str, np.ndarray]):
        # The batch axis of "content" is B + I, which need not split over the devices:
        # the whole batch is replicated, the step is data-parallel only in XLA's own sense.
        return self._step(state, self.f_state, {k: jax.device_put(v, self.replicated)
                                                for k, v in batch.items()})

    def postfix(self, m: dict[str, float]) -> dict[str, str]:
        return {k: f"{m[k]:.3f}" for k in ("content", "style", "identity", "g_adv") if k in m}

    # -- looking at it ------------------------------------------------------------------------
    def _sample_pairs(self, photos: PhotoFolder, n: int = 4) -> tuple[list, list]:
        """Fixed photos, and style pictures the model never trains on: the benchmark's
        held-out ones where `data_root` has them (else corpus pictures). Fewer when the run has
        fewer photos or pictures than that (a fine-tune on a handful)."""
        rng = np.random.default_rng(12345)
        tiles = [center_square(photos.images[i], 128)
                 for i in rng.choice(len(photos.images), size=min(n, len(photos.images)),
                                     replace=False)]
        held = [resize_long_side(decode_image(p).rgb, 320)
                for p in held_out_style_files(self.cfg.data_root)[:n]]
        picks = rng.choice(len(self.corpus), size=min(n, len(self.corpus)), replace=False)
        styles = held if len(held) == n else [self.corpus.images[i] for i in picks]
        return tiles, [center_square(s, 256) for s in styles]

    def model(self, ema: bool = True) -> AnyStyleModel:
        params = jax.device_get(self.state.g_ema if ema else self.state.g)
        return nnx.merge(self.models.g_graph, params)

    def sample_grid(self, path: Path) -> Path:
        """Rows: a photo, then it in each sample style (with the palette map when the run
        trains with it); the first row shows the styles."""
        model, feat = self.model(), nnx.merge(self.models.f_graph, self.f_state)
        tiles, styles = self.samples
        x = jnp.asarray(np.stack(tiles), jnp.float32) / 255.0
        s = jnp.asarray(np.stack(styles), jnp.float32) / 255.0
        z = model.encode(feat, s)
        rows = [[np.zeros_like(tiles[0])] + [center_square(st, 128) for st in styles]]
        for i, tile in enumerate(tiles):
            photo = jnp.repeat(x[i:i + 1], len(styles), axis=0)
            if model.photo_aware:
                z = model.encode(feat, s, photo)
            out = model(photo, z)
            if self.cfg.colour_match > 0:  # as serving shows it
                out = _with_style_palette(out, s, self.cfg.colour_match)
            rows.append([tile] + list(np.asarray(jnp.round(out * 255)).astype(np.uint8)))
        return save_grid(path, rows, ["photo"] + [f"style {i + 1}" for i in range(len(styles))])
