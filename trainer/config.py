"""Training configuration: one dataclass, filled from a TOML file and then command-line flags."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from .steps import LossConfig, OptimConfig


class JsonConfig:
    """JSON round trip shared by the run configs (every run writes its config beside its
    checkpoints, and resuming or exporting reads it back)."""

    def to_json(self) -> str:
        d = asdict(self)  # type: ignore[call-overload]
        if "channels" in d:
            d["channels"] = list(d["channels"])
        return json.dumps(d, indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        unknown = sorted(set(d) - {f.name for f in fields(cls)})  # type: ignore[arg-type]
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        d = dict(d)
        if "channels" in d:
            d["channels"] = tuple(int(c) for c in d["channels"])
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path):
        """A TOML or JSON file."""
        text = Path(path).read_text(encoding="utf-8")
        return cls.from_dict(json.loads(text) if str(path).endswith(".json")
                             else tomllib.loads(text))


@dataclass
class TrainConfig(JsonConfig):
    content: str = ""                    # folder of photos
    styles: list[str] = field(default_factory=list)   # style pictures, one style each
    out: str = "runs/pack"
    style_meta: str | None = None        # JSON: file name → id, names, author, license
    steps: int = 4000
    batch: int = 4
    size: int = 128                      # training crop side
    seed: int = 0
    holdout: int = 4                     # photos kept out of training, for samples and eval
    cache_side: int = 256                # photos are cached with this short side
    style_side: int = 256                # style pictures are seen with this long side
    channels: tuple[int, int, int] = (16, 32, 64)
    res_blocks: int = 5
    upsample: str = "shuffle"            # decoder: shuffle (depth-to-space) | nearest (resize-conv)
    disc_ch: int = 32
    disc_scales: int = 2
    content_weight: float = 1.0
    style_weight: float = 4.0
    adv_weight: float = 0.05
    tv_weight: float = 2.0
    adv_loss: str = "hinge"              # hinge | lsgan | wgan-gp
    adv_start: int = 0                   # adversarial term off before this step, then ramped
    adv_ramp: int = 1
    jitter: int = 0                      # random shift (px) of what the feature net sees
    norm_lr_mult: float = 5.0
    lr_g: float = 2e-3
    lr_d: float = 1e-3
    warmup: int = 100
    ema_decay: float = 0.995
    log_every: int = 10
    sample_every: int = 250
    ckpt_every: int = 250
    keep: int = 3

    def loss(self) -> LossConfig:
        return LossConfig(content=self.content_weight, style=self.style_weight,
                          adv=self.adv_weight, tv=self.tv_weight, adv_kind=self.adv_loss,
                          adv_start=self.adv_start, adv_ramp=self.adv_ramp,
                          jitter=self.jitter)

    def optim(self) -> OptimConfig:
        return OptimConfig(lr_g=self.lr_g, lr_d=self.lr_d, warmup=self.warmup, steps=self.steps,
                           ema_decay=self.ema_decay, norm_lr_mult=self.norm_lr_mult)

    def validate(self) -> None:
        if not self.content:
            raise ValueError("no content folder given (--content)")
        if not self.styles:
            raise ValueError("no style pictures given (--styles)")
        if self.adv_loss not in ("hinge", "lsgan", "wgan-gp"):
            raise ValueError(f"adv_loss must be hinge, lsgan or wgan-gp, not {self.adv_loss!r}")
        if self.size % 4:
            raise ValueError("size must be a multiple of 4")
        for name in ("steps", "batch", "size", "log_every", "sample_every", "ckpt_every", "keep"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
