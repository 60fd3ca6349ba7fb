"""Run configurations: dataclasses filled from a TOML/JSON file, then command-line flags.

Every field is a flag: `add_config_flags` generates `--field-name` from `dataclasses.fields`
(type from the annotation, help and choices from the field's metadata, see `opt`), and
`config_from_args` lays the flags that were given over a base config (a file, or defaults).
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from collections.abc import Sequence
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import tomllib

from stylejax.features import DEFAULT_STYLE_TAPS
from stylejax.generator import UPSAMPLE_MODES

from .steps import LossConfig, OptimConfig

ADV_LOSSES = ("hinge", "lsgan", "wgan-gp")
UPSAMPLES = UPSAMPLE_MODES  # stylejax.generator.GeneratorConfig.upsample says what each does


def opt(default: Any, help: str, choices: Sequence[str] | None = None) -> Any:
    """A dataclass field with its flag's help text (and fixed choices, if any)."""
    meta = {"help": help, **({"choices": tuple(choices)} if choices else {})}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


# What a resumed run may change: how long it runs and how it reports, not what it learns
# (`init_model` and `init_drop_blocks` only seed a fresh run; a resumed one keeps its
# checkpoint).
RESUME_MAY_CHANGE = frozenset({"steps", "out", "log_every", "sample_every", "ckpt_every",
                               "keep", "init_model", "init_drop_blocks"})


class JsonConfig:
    """JSON round trip shared by the run configs (every run writes its config beside its
    checkpoints, and resuming or exporting reads it back)."""

    def check_resume(self, saved: Path) -> None:
        """ValueError if the run folder's saved config `saved` trains something else.

        A run resumes exactly only with its own settings. Without this check a run folder
        reused with other flags (or a folder an old run is still saving into) silently
        continued the old checkpoint under the new settings.
        """
        if not saved.is_file():
            return
        # Read back through `load`, so a field added since the run was saved takes its
        # default (the behaviour the run had) instead of counting as a change.
        old = json.loads(type(self).load(saved).to_json())
        new = json.loads(self.to_json())
        changed = sorted(k for k in set(old) | set(new)
                         if k not in RESUME_MAY_CHANGE and old.get(k) != new.get(k))
        if changed:
            diff = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
            raise ValueError(
                f"{saved.parent} holds a checkpoint trained with other settings ({diff}). "
                "Resume it with the same config and flags (only the step count and the "
                "logging may change), or start the new run in another --out folder.")

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
        # TOML and JSON give lists: tuple fields get tuples of their element type (the loss
        # configs built from them must hash, as jit's static arguments)
        hints = typing.get_type_hints(cls)
        d = {k: tuple(typing.get_args(hints[k])[0](x) for x in v)
             if typing.get_origin(hints[k]) is tuple else v for k, v in d.items()}
        return cls(**d)

    def require_positive(self, *names: str) -> None:
        """ValueError naming the first of these fields that is not above zero (every mode's
        `validate` checks its counts and sizes this way)."""
        for name in names:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    @classmethod
    def load(cls, path: str | Path):
        """A TOML or JSON file."""
        text = Path(path).read_text(encoding="utf-8")
        return cls.from_dict(json.loads(text) if str(path).endswith(".json")
                             else tomllib.loads(text))


# --------------------------------------------------------------------------- flags


def _flag_kwargs(f: Field, hint: Any) -> dict[str, Any]:
    """argparse keywords for one field: type, nargs or a --x/--no-x switch."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):  # `str | None`: the flag gives the str
        (hint,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is list:
        return {"type": args[0], "nargs": "+"}
    if origin is tuple:
        fixed = Ellipsis not in args
        return {"type": args[0], "nargs": len(args) if fixed else "+"}
    if hint in (str, int, float):
        return {"type": hint}
    raise TypeError(f"no flag for field {f.name} of type {hint}")


def _default_text(f: Field) -> str:
    default = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
    if isinstance(default, (list, tuple)):
        default = " ".join(map(str, default)) or "none"
    return f"default: {default}" if default not in ("", None) else "no default"


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One `--field-name` per field of the dataclass `cls`; unset flags leave no attribute."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        kw = _flag_kwargs(f, hints[f.name])
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        if kw.get("nargs") not in (None, "+"):
            kw["metavar"] = "N"
        help_text = f.metadata.get("help", "")
        help_text = f"{help_text} ({_default_text(f)})" if help_text else _default_text(f)
        kw["help"] = help_text.replace("%", "%%")  # argparse %-formats help strings
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name,
                            default=argparse.SUPPRESS, **kw)


def config_from_args(cls: type, args: argparse.Namespace, base: Any = None) -> Any:
    """`base` (default: `cls()`) with every field whose flag was given replaced by its value."""
    hints = typing.get_type_hints(cls)
    given = {}
    for f in fields(cls):
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            if typing.get_origin(hints[f.name]) is tuple:
                value = tuple(value)
            given[f.name] = value
    return replace(base if base is not None else cls(), **given)


# --------------------------------------------------------------------------- the pack mode


@dataclass
class TrainConfig(JsonConfig):
    """A multi-style pack: one generator, one discriminator, several styles (GAN)."""

    content: str = opt("", "folder of photos")
    styles: list[str] = opt([], "style pictures, one style each")
    out: str = opt("runs/pack", "run folder: config, metrics, samples, checkpoints")
    style_meta: str | None = opt(None, "JSON: file name → id, names, author, license")
    steps: int = opt(4000, "training steps")
    batch: int = opt(4, "batch size (split over the visible devices)")
    size: int = opt(128, "training crop side (multiple of 4)")
    seed: int = opt(0, "seed of the initial weights and of every batch")
    holdout: int = opt(4, "photos kept out of training, for samples and eval")
    cache_side: int = opt(256, "photos are cached with this short side")
    style_side: int = opt(256, "style pictures are seen with this long side")
    channels: tuple[int, int, int] = opt((16, 32, 64),
                                         "generator widths at full, 1/2 and 1/4 resolution")
    res_blocks: int = opt(5, "residual blocks at 1/4 resolution")
    upsample: str = opt("shuffle", "decoder: shuffle (depth-to-space) | nearest, bilinear, "
                        "bilinear-edge (resize-conv)",
                        UPSAMPLES)
    disc_ch: int = opt(32, "discriminator width")
    disc_scales: int = opt(2, "discriminator scales")
    content_weight: float = opt(1.0, "content loss weight")
    style_weight: float = opt(4.0, "style loss weight")
    adv_weight: float = opt(0.05, "adversarial loss weight")
    tv_weight: float = opt(2.0, "total variation weight")
    adv_loss: str = opt("hinge", "adversarial loss", ADV_LOSSES)
    adv_start: int = opt(0, "adversarial term off before this step, then ramped")
    adv_ramp: int = opt(1, "steps over which the adversarial term ramps up")
    jitter: int = opt(0, "random shift (px) of what the feature net sees")
    style_taps: tuple[str, ...] = opt(DEFAULT_STYLE_TAPS, "feature-net taps of the Gram style "
                                      "loss (the shipped pack: stem stage1 stage2 stage3 "
                                      "stage4, block outputs)")
    rotate: float = opt(0.0, "the losses see each result and its photo turned by up to ±this "
                             "many degrees, the style targets likewise (trainer/views.py; 0: off)")
    zoom: float = opt(1.0, "the losses' views are also magnified by up to this factor (1: off)")
    views: int = opt(12, "fixed views (angle, zoom) whose style targets are computed once")
    norm_lr_mult: float = opt(5.0, "learning-rate multiplier of the per-style norm tables")
    lr_g: float = opt(2e-3, "generator learning rate")
    lr_d: float = opt(1e-3, "discriminator learning rate")
    warmup: int = opt(100, "learning-rate warm-up steps (then cosine decay)")
    ema_decay: float = opt(0.995, "EMA decay of the generator weights (what is exported)")
    log_every: int = opt(10, "steps between metrics records")
    sample_every: int = opt(250, "steps between sample grids")
    ckpt_every: int = opt(250, "steps between checkpoints")
    keep: int = opt(3, "checkpoints kept")

    def loss(self) -> LossConfig:
        return LossConfig(content=self.content_weight, style=self.style_weight,
                          adv=self.adv_weight, tv=self.tv_weight, adv_kind=self.adv_loss,
                          adv_start=self.adv_start, adv_ramp=self.adv_ramp,
                          jitter=self.jitter, style_taps=tuple(self.style_taps),
                          rotate=self.rotate, zoom=self.zoom, views=self.views)

    def optim(self) -> OptimConfig:
        return OptimConfig(lr_g=self.lr_g, lr_d=self.lr_d, warmup=self.warmup, steps=self.steps,
                           ema_decay=self.ema_decay, norm_lr_mult=self.norm_lr_mult)

    def validate(self) -> None:
        if not self.content:
            raise ValueError("no content folder given (--content)")
        if not self.styles:
            raise ValueError("no style pictures given (--styles)")
        if self.adv_loss not in ADV_LOSSES:
            raise ValueError(f"adv_loss must be hinge, lsgan or wgan-gp, not {self.adv_loss!r}")
        if self.size % 4:
            raise ValueError("size must be a multiple of 4")
        self.require_positive("steps", "batch", "size", "log_every", "sample_every", "ckpt_every",
                              "keep", "views")
