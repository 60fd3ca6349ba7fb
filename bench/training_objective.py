"""Score results by the any-style training objective, beside the optimiser's result.

Why: to tell a fault the loss tolerates from one the generator cannot avoid. If the optimiser,
or a generator fine-tuned on the one pair, reaches a lower training objective without the
fault, the loss is not what keeps it (docs/training.md, "The halo is an amortisation gap").

    python bench/training_objective.py --side 256 --photo P.jpg [Q.jpg …] --style S.jpg […] \
        --models stylejax/assets/anystyle runs/x/export [--refine-s 0] --out strip.png

Prints content (stage4), Gram style (the five taps), TV and content + 24 × style + TV for the
photo, each model's result (as served) and "refine" (the optimiser started from the shipped
model's result, as `--refine` serves it, for --refine-s seconds); the strip shows them in that
order. With several photos or styles, every pair is scored, and each method's totals are summed
up against the first model's: the geometric mean of the ratios and on how many pairs it is lower.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import quality as q  # noqa: E402

from stylejax import Stylizer, losses  # noqa: E402
from stylejax.custom_style import CustomStyleConfig  # noqa: E402
from stylejax.features import DEFAULT_CONTENT_TAPS, DEFAULT_STYLE_TAPS, load_feature_net  # noqa: E402
from stylejax.imageio import resize_long_side, resize_max_side  # noqa: E402
from trainer.anystyle import AnyStyleTrainConfig, scaled_mse  # noqa: E402

STYLE_WEIGHT = AnyStyleTrainConfig.style_weight  # the recipe's (trainer/anystyle_cpu.toml too)


def style_features(feat, style_x: jax.Array) -> dict[str, jax.Array]:
    """The Gram taps of a style picture (1, H, W, 3) in [0, 1], as the step reads it."""
    return jax.lax.stop_gradient(feat.features(style_x, DEFAULT_STYLE_TAPS))


def terms(feat, f_style: dict[str, jax.Array], out: jax.Array, photo: jax.Array
          ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(content, style, TV) of results `out` for `photo` (both (1, H, W, 3) in [0, 1]): the
    step's terms (trainer/anystyle.py) without views or jitter; differentiable in `out`."""
    f_photo = jax.lax.stop_gradient(feat.features(photo, DEFAULT_CONTENT_TAPS))
    fx = feat.features(out, tuple(dict.fromkeys(DEFAULT_STYLE_TAPS + DEFAULT_CONTENT_TAPS)))
    # the step's normalised MSE, per sample, then averaged over samples and taps as it does
    content = jnp.mean(jnp.stack([jnp.mean(scaled_mse(fx[t], f_photo[t]))
                                  for t in DEFAULT_CONTENT_TAPS]))
    gram = losses.gram_matrix
    style = jnp.mean(jnp.stack([jnp.mean(scaled_mse(gram(fx[t]), gram(f_style[t])))
                                for t in DEFAULT_STYLE_TAPS]))
    return content, style, losses.total_variation(out)


def objective(feat, result: np.ndarray, photo: np.ndarray, style: np.ndarray) -> dict:
    """The terms and content + 24 × style + TV for one uint8 result of a uint8 photo."""
    as_x = lambda a: jnp.asarray(a, jnp.float32)[None] / 255.0  # noqa: E731
    f_style = style_features(feat, as_x(resize_long_side(style, 256)))
    content, style_term, tv = (float(t) for t in terms(feat, f_style, as_x(result), as_x(photo)))
    return {"content": content, "style": style_term, "tv": tv,
            "total": content + STYLE_WEIGHT * style_term + tv}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--photo", type=Path, nargs="+", required=True)
    ap.add_argument("--style", type=Path, nargs="+", required=True)
    ap.add_argument("--models", nargs="+", required=True, help="any-style model folders")
    ap.add_argument("--refine-s", type=float, default=15.0, help="0: no refine column")
    ap.add_argument("--out", type=Path, required=True,
                    help="strip PNG or JPG (one row per photo × style pair)")
    args = ap.parse_args(argv)

    feat = load_feature_net()
    methods = {Path(m).name: q.anystyle_method(args.side, m) for m in args.models}
    totals: dict[str, list[float]] = {}
    rows = []
    for photo_path in args.photo:
        photo = resize_max_side(q.load_rgb(photo_path), args.side)
        for style_path in args.style:
            style = q.load_rgb(style_path)
            pair = q.Pair(photo=photo_path.name, style=style_path.stem, style_rgb=style)
            results = {"photo": photo}
            results.update({name: run(photo, pair) for name, run in methods.items()})
            if args.refine_s > 0:
                cfg = replace(CustomStyleConfig(size=args.side), time_budget_s=args.refine_s)
                results["refine"] = Stylizer().stylize_with_image(photo, style, config=cfg,
                                                                  refine=True).image
            print(f"{photo_path.name} × {style_path.stem}")
            tiles = []
            for name, img in results.items():
                img = np.asarray(Image.fromarray(img).resize(photo.shape[1::-1]))
                tiles.append(img)
                t = objective(feat, img, photo, style)
                totals.setdefault(name, []).append(t["total"])
                print(f"  {name:16s} content {t['content']:.3f}  style {t['style']:.4f}  "
                      f"tv {t['tv']:.3f}  total {t['total']:.3f}")
            rows.append(np.concatenate(tiles, 1))
    if len(rows) > 1:  # one line per method: its totals against the first model's
        first = np.log(totals[next(iter(methods))])
        for name, values in totals.items():
            change = np.log(values) - first
            print(f"{name:16s} geometric mean × {np.exp(change.mean()):.3f} of "
                  f"{next(iter(methods))}, lower on {int((change < 0).sum())}/{len(change)}")
    width = max(r.shape[1] for r in rows)
    Image.fromarray(np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)))
                                    for r in rows])).save(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
