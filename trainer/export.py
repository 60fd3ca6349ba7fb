"""Checkpoint → style pack: the EMA generator, style names, thumbnails and credits."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jax
from flax import nnx

from stylejax.colour import DEFAULT_PALETTE
from stylejax.features import load_feature_net
from stylejax.pack import StyleInfo, save_pack

from .checkpoints import Checkpoints
from .config import TrainConfig
from .data import StyleImages
from .loop import build
from .steps import init_state


def style_infos(paths: list[str], meta_file: str | None) -> list[StyleInfo]:
    """Names and credits per style picture from a JSON file keyed by file name.

    Without an entry a style gets an id and English name from its file name, and no credit:
    the pack then says so instead of inventing one.
    """
    meta: dict[str, Any] = {}
    if meta_file:
        meta = json.loads(Path(meta_file).read_text(encoding="utf-8"))
    infos = []
    for p in paths:
        name = Path(p).name
        m = meta.get(name, {})
        stem = re.sub(r"[^a-z0-9_-]+", "-", Path(p).stem.lower()).strip("-")[:40] or "style"
        infos.append(StyleInfo(
            id=m.get("id", stem), names=m.get("names", {"en": Path(p).stem.replace("_", " ")}),
            source=m.get("source", ""), author=m.get("author", ""),
            license=m.get("license", "unknown: check before publishing")))
    return infos


def export_pack(run_dir: str | Path, pack_dir: str | Path, step: int | None = None,
                license_notes: str = "", palette: float = DEFAULT_PALETTE) -> Path:
    """A run's EMA weights → a pack folder, with thumbnails and the serving palette amount
    (stylejax.colour; the bundled pack's 0.8 by default)."""
    run_dir = Path(run_dir)
    cfg = TrainConfig.load(run_dir / "train_config.json")
    styles = StyleImages(cfg.styles, side=cfg.style_side)
    g, d = build(cfg, len(styles))
    models, template, _ = init_state(g, d, load_feature_net(), cfg.optim(), cfg.seed)
    ckpt = Checkpoints(run_dir / "checkpoints", keep=cfg.keep)
    state, meta = ckpt.restore(template, step)
    ckpt.close()
    generator = nnx.merge(models.g_graph, jax.device_get(state.g_ema))
    infos = style_infos(cfg.styles, cfg.style_meta)
    thumbs = {info.id: styles.thumbnail(i, 256) for i, info in enumerate(infos)}
    training = {
        "steps": int(state.step), "batch": cfg.batch, "size": cfg.size, "seed": cfg.seed,
        "losses": {"content": cfg.content_weight, "style": cfg.style_weight,
                   "adv": cfg.adv_weight, "tv": cfg.tv_weight, "adv_loss": cfg.adv_loss,
                   "jitter": cfg.jitter, "rotate": cfg.rotate, "zoom": cfg.zoom,
                   "style_taps": list(cfg.style_taps)},
        "feature_net": "EfficientNet-Lite0 (ImageNet)", "weights": "EMA",
    }
    return save_pack(pack_dir, generator, infos, thumbnails=thumbs, training=training,
                     license_notes=license_notes, palette=palette)
