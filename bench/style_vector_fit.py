"""Fit the style vector (or every norm's scale and shift) to one photo, then try it on others.

Why: to tell whether a fault of the any-style model comes from the encoder (a better vector
exists for the style, whatever the photo) or from the generator (the best vector depends on
the photo, so no encoder can find one for all). The fit uses the training objective
(`bench/training_objective.py`: content + 24 × Gram style + TV, no palette map) with Adam, the
generator's convolutions fixed. docs/training.md, "The halo is an amortisation gap".

    python bench/style_vector_fit.py --style starry-night --fit camels colosseum \
        --others giraffe narwhal statueofLiberty jesper jellyfish --out fit.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import quality as q  # noqa: E402
from training_objective import STYLE_WEIGHT, style_features, terms  # noqa: E402

from stylejax.anystyle import AnyStyleModel, load_model  # noqa: E402
from stylejax.features import load_feature_net  # noqa: E402
from stylejax.imageio import resize_long_side, resize_max_side  # noqa: E402


def photo_array(fragment: str, side: int) -> jax.Array:
    """The shared photo whose name holds `fragment`, long side `side`, sides multiples of 4."""
    path = next(p for p in sorted((q.SHARED / "content").iterdir()) if fragment in p.stem)
    a = resize_max_side(q.load_rgb(path), side)
    return jnp.asarray(a[: a.shape[0] // 4 * 4, : a.shape[1] // 4 * 4], jnp.float32)[None] / 255


def make_objective(feat, style_x: jax.Array):
    """objective(out, photo): content + 24 × style + TV, differentiable in `out`."""
    f_style = style_features(feat, style_x)

    def objective(out: jax.Array, photo: jax.Array) -> jax.Array:
        content, style, tv = terms(feat, f_style, out, photo)
        return content + STYLE_WEIGHT * style + tv

    return objective


def fit(params, render, objective, photo, steps: int, lr: float):
    """Adam on `params` (any pytree) so that `render(params, photo)` lowers the objective."""
    opt = optax.adam(lr)

    @jax.jit
    def step(p, state):
        value, grad = jax.value_and_grad(lambda p: objective(render(p, photo), photo))(p)
        updates, state = opt.update(grad, state, p)
        return optax.apply_updates(p, updates), state, value

    state = opt.init(params)
    for _ in range(steps):
        params, state, _ = step(params, state)
    return params


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="stylejax/assets/anystyle")
    ap.add_argument("--style", default="starry-night", help="a name from bench/eval_set.json")
    ap.add_argument("--fit", nargs="+", default=["camels"], help="photos to fit to (name parts)")
    ap.add_argument("--others", nargs="*", default=[], help="photos to try each fit on")
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", type=Path, help="strip of the first fit: photo | z0 | z* | affines*")
    args = ap.parse_args(argv)

    model: AnyStyleModel = load_model(args.model)
    feat = load_feature_net()
    style_rgb = q.eval_styles([args.style])[args.style]
    style_x = jnp.asarray(resize_long_side(style_rgb, 256), jnp.float32)[None] / 255
    objective = jax.jit(make_objective(feat, style_x))
    z0 = model.encode(feat, style_x)
    by_z = lambda z, x: model(x, z)  # noqa: E731
    gen = model.generator
    by_affines = lambda a, x: gen(x, None, affines=a)  # noqa: E731
    for n, name in enumerate(args.fit):
        x = photo_array(name, args.side)
        z = fit(z0, by_z, objective, x, args.steps, 0.05)
        print(f"style vector fitted to {name}: |z0| {float(jnp.linalg.norm(z0)):.1f}, "
              f"|z* - z0| {float(jnp.linalg.norm(z - z0)):.1f}")
        for other in [name] + args.others:
            y = photo_array(other, args.side)
            a, b = float(objective(model(y, z0), y)), float(objective(model(y, z), y))
            print(f"  {other:24s} objective with z0 {a:.3f}, with z* {b:.3f} ({b / a - 1:+.0%})")
        if n == 0 and args.out:
            affines = fit(model.affines(z0), by_affines, objective, x, args.steps, 0.01)
            fitted = by_affines(affines, x)
            print(f"  {name:24s} objective with every norm's scale and shift fitted "
                  f"{float(objective(fitted, x)):.3f}")
            shown = [x[0], model(x, z0)[0], model(x, z)[0], fitted[0]]
            tiles = [np.asarray(jnp.round(jnp.clip(t, 0, 1) * 255)).astype(np.uint8)
                     for t in shown]
            Image.fromarray(np.concatenate(tiles, 1)).save(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
