"""Add a style to an existing pack by training only that style's normalisation rows.

Conditional instance norm keeps everything style-specific in one (scale, shift) row per norm
layer; the convolutions are shared. A new style therefore needs only a new row: a few hundred
steps of content + Gram loss with every other parameter frozen (minutes on a CPU), and the
existing styles stay bit-for-bit the same.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from stylejax import losses
from stylejax.features import BLOCK_OUTPUT_STYLE_TAPS, load_feature_net
from stylejax.generator import Generator
from stylejax.pack import StyleInfo, load_pack, save_pack

from .data import ContentStream, PhotoFolder, StyleImages
from .steps import LossConfig

log = logging.getLogger("stylejax.train")


@dataclass(frozen=True)
class AddStyleConfig:
    steps: int = 400
    batch: int = 4
    size: int = 128
    lr: float = 1e-2
    seed: int = 0
    content_weight: float = 1.0
    style_weight: float = 6.0
    tv_weight: float = 1.0


def pack_style_taps(training: dict) -> tuple[str, ...]:
    """The style taps a pack was trained with: its training record says so since the packs
    moved to post-activation taps; packs from before matched block outputs."""
    taps = (training.get("losses") or {}).get("style_taps")
    return tuple(taps) if taps else BLOCK_OUTPUT_STYLE_TAPS


def grow_generator(old: Generator) -> Generator:
    """A copy of `old` with one more style slot, initialised as the mean of the existing rows."""
    cfg = old.config
    new = Generator(dataclasses.replace(cfg, num_styles=cfg.num_styles + 1),
                    rngs=nnx.Rngs(0))
    old_params = nnx.state(old, nnx.Param)
    new_params = nnx.state(new, nnx.Param)

    def grow(o, n):
        if o.shape == n.shape:
            return o
        return jnp.concatenate([o, jnp.mean(o, axis=0, keepdims=True)], axis=0)

    nnx.update(new, jax.tree.map(grow, old_params, new_params))
    return new


def _last_row_mask(params, num_styles: int):
    """1 on the new style's row of every norm table, 0 everywhere else."""
    def mask(x):
        if x.ndim == 2 and x.shape[0] == num_styles:
            return jnp.zeros_like(x).at[-1].set(1.0)
        return jnp.zeros_like(x)

    return jax.tree.map(mask, params)


def train_new_style(generator: Generator, style_image: np.ndarray, photos: PhotoFolder,
                    cfg: AddStyleConfig, progress: bool = True,
                    style_taps: tuple[str, ...] | None = None) -> tuple[Generator, list[dict]]:
    """Train the last style slot of `generator` towards `style_image` (1,H,W,3 float), with
    the Gram taps the pack was trained with (`pack_style_taps`)."""
    from tqdm import tqdm

    loss_cfg = LossConfig() if style_taps is None else LossConfig(style_taps=tuple(style_taps))
    net = load_feature_net()
    f_graph, f_state = nnx.split(net)
    g_graph, params = nnx.split(generator, nnx.Param)
    n = generator.config.num_styles
    mask = _last_row_mask(params, n)
    feats = net.features(jnp.asarray(style_image), loss_cfg.style_taps)
    targets = {t: losses.gram_matrix(feats[t]) for t in loss_cfg.style_taps}
    scales = {t: 1.0 / (jnp.mean(g**2) + 1e-12) for t, g in targets.items()}
    tx = optax.adam(cfg.lr)
    opt_state = tx.init(params)

    def loss_fn(params, f_state, photo):
        gen = nnx.merge(g_graph, params)
        feat = nnx.merge(f_graph, f_state)
        w = jax.nn.one_hot(jnp.full((photo.shape[0],), n - 1), n)
        fake = gen(photo, w)
        taps = tuple(dict.fromkeys(loss_cfg.style_taps + loss_cfg.content_taps))
        ff = feat.features(fake, taps)
        fr = jax.lax.stop_gradient(feat.features(photo, loss_cfg.content_taps))
        content = sum(jnp.mean((ff[t] - fr[t]) ** 2) / (jnp.mean(fr[t] ** 2) + 1e-12)
                      for t in loss_cfg.content_taps) / len(loss_cfg.content_taps)
        style = sum(scales[t] * jnp.mean((losses.gram_matrix(ff[t]) - targets[t]) ** 2)
                    for t in loss_cfg.style_taps) / len(loss_cfg.style_taps)
        tv = losses.total_variation(fake)
        total = cfg.content_weight * content + cfg.style_weight * style + cfg.tv_weight * tv
        return total, {"content": content, "style": style, "tv": tv}

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, f_state, photo):
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, f_state, photo)
        grads = jax.tree.map(jnp.multiply, grads, mask)  # only the new row learns
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    stream = ContentStream(photos, batch=cfg.batch, size=cfg.size, seed=cfg.seed, num_styles=1)
    history = []
    with stream.iterate(0, cfg.steps) as batches, tqdm(total=cfg.steps, disable=not progress,
                                                       unit="step") as bar:
        for i, batch in batches:
            params, opt_state, m = step(params, opt_state, f_state, jnp.asarray(batch["content"]))
            if i % 10 == 0 or i == cfg.steps - 1:
                record = {"step": i + 1, **{k: float(v) for k, v in m.items()}}
                history.append(record)
                bar.set_postfix(style=f"{record['style']:.3f}", content=f"{record['content']:.3f}")
            bar.update(1)
    return nnx.merge(g_graph, params), history


def add_style(pack_dir: str | Path, style_path: str | Path, content_dir: str | Path,
              out_dir: str | Path | None = None, *, style_id: str | None = None,
              names: dict[str, str] | None = None, author: str = "", license: str = "",
              cfg: AddStyleConfig | None = None, progress: bool = True) -> Path:
    """Write a pack with one more style (in place when out_dir is None)."""
    cfg = cfg or AddStyleConfig()
    pack = load_pack(pack_dir)
    style = StyleImages([style_path], side=256)
    sid = style_id or re.sub(r"[^a-z0-9_-]+", "-", Path(style_path).stem.lower()).strip("-")[:40]
    if sid in {s.id for s in pack.styles}:
        raise ValueError(f"the pack already has a style '{sid}'")
    photos = PhotoFolder(content_dir, cache_side=max(cfg.size * 2, 192))
    grown = grow_generator(pack.generator)
    trained, history = train_new_style(grown, style.target(0), photos, cfg, progress,
                                       style_taps=pack_style_taps(pack.training))
    out = Path(out_dir) if out_dir else Path(pack_dir)
    thumbs = {}
    for s in pack.styles:
        tp = pack.thumbnail_path(s.id)
        if tp is not None and tp.is_file():
            from PIL import Image

            thumbs[s.id] = np.asarray(Image.open(tp).convert("RGB"))
    thumbs[sid] = style.thumbnail(0, 256)
    info = StyleInfo(sid, names or {"en": Path(style_path).stem.replace("_", " ")},
                     source=Path(style_path).name, author=author,
                     license=license or "unknown: check before publishing")
    training = dict(pack.training)
    training.setdefault("added_styles", []).append(
        {"id": sid, "steps": cfg.steps, "final": history[-1] if history else {}})
    staging = out.with_name(out.name + ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    save_pack(staging, trained, list(pack.styles) + [info], thumbnails=thumbs,
              training=training, license_notes=pack.license_notes, palette=pack.palette)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    log.info("added style %s to %s", sid, out)
    return out
