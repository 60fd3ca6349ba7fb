"""`stylejax-train`: train a multi-style pack, add a style, export, evaluate."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import fields

from .config import TrainConfig

_FLAGS = {  # flag → config field, for `train`
    "content": str, "out": str, "style_meta": str, "steps": int, "batch": int, "size": int,
    "seed": int, "holdout": int, "content_weight": float, "style_weight": float,
    "adv_weight": float, "tv_weight": float, "adv_loss": str, "adv_start": int,
    "adv_ramp": int, "norm_lr_mult": float, "lr_g": float, "lr_d": float,
    "warmup": int, "ema_decay": float, "log_every": int, "sample_every": int,
    "ckpt_every": int, "keep": int, "res_blocks": int,
}


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one generator for several styles (GAN)")
    p.add_argument("--config", help="TOML config file; flags override it")
    p.add_argument("--styles", nargs="+", help="style pictures, one style each")
    for name, typ in _FLAGS.items():
        flag = "--" + name.replace("_", "-")
        if name == "adv_loss":
            p.add_argument(flag, choices=["hinge", "lsgan", "wgan-gp"])
        else:
            p.add_argument(flag, type=typ)
    p.add_argument("--export", metavar="PACK", help="export a style pack when done")
    p.add_argument("--no-progress", action="store_true")


def _train(args) -> int:
    from .export import export_pack
    from .loop import train

    cfg = TrainConfig.load(args.config) if args.config else TrainConfig()
    names = {f.name for f in fields(TrainConfig)}
    for name in list(_FLAGS) + ["styles"]:
        value = getattr(args, name, None)
        if value is not None and name in names:
            setattr(cfg, name, value)
    trainer = train(cfg, progress=not args.no_progress)
    print(f"trained to step {trainer.step}; checkpoints in {trainer.out / 'checkpoints'}")
    if args.export:
        trainer.ckpt.close()
        print(f"exported {export_pack(cfg.out, args.export)}")
    return 0


def _export(args) -> int:
    from .export import export_pack

    print(f"exported {export_pack(args.run, args.pack, args.step)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stylejax-train", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    p = sub.add_parser("export", help="write a style pack from a run's checkpoint")
    p.add_argument("--run", required=True, help="run folder (has train_config.json)")
    p.add_argument("--pack", required=True, help="pack folder to write")
    p.add_argument("--step", type=int, help="checkpoint step (default: latest)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "export":
            return _export(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"stylejax-train: error: {err}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
