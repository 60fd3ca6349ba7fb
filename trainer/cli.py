"""`stylejax-train`: train a multi-style pack, add a style, export, evaluate."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import fields

from stylejax.errors import StyleJAXError

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


def _add_style(args) -> int:
    from .add_style import AddStyleConfig, add_style

    names = {"en": args.name_en} if args.name_en else None
    if names and args.name_zh:
        names["zh"] = args.name_zh
    cfg = AddStyleConfig(steps=args.steps, size=args.size, batch=args.batch, seed=args.seed,
                         style_weight=args.style_weight)
    out = add_style(args.pack, args.style, args.content, args.out, style_id=args.id,
                    names=names, author=args.author or "", license=args.license or "",
                    cfg=cfg, progress=not args.no_progress)
    print(f"added style to {out}")
    return 0


def _eval(args) -> int:
    import json

    from .evaluate import evaluate

    report = evaluate(args.run, args.out, side=args.side)
    print(json.dumps(report["mean"]))
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

    p = sub.add_parser("add-style", help="add a style to a pack (trains only its norm rows)")
    p.add_argument("--pack", required=True)
    p.add_argument("--style", required=True, help="the new style picture")
    p.add_argument("--content", required=True, help="folder of photos to train on")
    p.add_argument("--out", help="write a new pack here (default: update --pack in place)")
    p.add_argument("--id", help="style id (default: from the file name)")
    p.add_argument("--name-en")
    p.add_argument("--name-zh")
    p.add_argument("--author")
    p.add_argument("--license")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--style-weight", type=float, default=6.0)
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("eval", help="held-out losses, a sample grid and loss curves of a run")
    p.add_argument("--run", required=True)
    p.add_argument("--out", help="folder for losses.json, grid.png, loss_curves.png")
    p.add_argument("--side", type=int, default=256)

    p = sub.add_parser("cyclegan", help="unpaired photos ↔ paintings of one painter",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "cyclegan":  # its own flags: hand them over untouched
        from .cyclegan import cyclegan_main

        return cyclegan_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "export":
            return _export(args)
        if args.command == "add-style":
            return _add_style(args)
        if args.command == "eval":
            return _eval(args)

    except (ValueError, FileNotFoundError, StyleJAXError) as err:
        print(f"stylejax-train: error: {err}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
