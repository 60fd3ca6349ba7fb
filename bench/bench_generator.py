"""Time the generator on CPU in JAX (XLA), PyTorch eager and ONNX Runtime, same weights, one run.

Why: the CPU serving path must be no slower than ONNX Runtime running the same network, so we
measure all three side by side (interleaved, so background load hits them alike) and check that
they compute the same picture before timing anything. Also times the EfficientNet-Lite0 feature
net's forward + input-gradient, which bounds custom-style optimisation.

    .venv/bin/python bench/bench_generator.py [--repeats 7] [--json OUT]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stylejax.generator import IN_EPS, SKIP_CLIP, Generator, GeneratorConfig  # noqa: E402
from stylejax.onnx_export import OnnxGenerator  # noqa: E402

BUCKETS: tuple[tuple[int, int], ...] = ((1, 256), (4, 256), (1, 512), (1, 1024))  # (batch, side)


# ---------------------------------------------------------------------------------------------
# PyTorch twin of the generator (bench only; the product never imports torch).


def _fold_perm(channels_per_block: int, r: int = 2) -> np.ndarray:
    """Index map torch channel → our channel for one 2×2 folding.

    torch's pixel_(un)shuffle orders folded channels as (c, dy, dx); ours (like ONNX DCR) as
    (dy, dx, c). Torch channel t = c·r² + k holds our channel k·C + c.
    """
    t = np.arange(channels_per_block * r * r)
    return (t % (r * r)) * channels_per_block + t // (r * r)


def make_torch_generator(gen: Generator):
    """An eager torch.nn.Module computing `gen` with its weights (permuted for torch's order)."""
    import torch
    import torch.nn.functional as F

    def conv_params(layer, in_perm=None, out_perm=None):
        w = np.asarray(layer.conv.kernel[...]).transpose(3, 2, 0, 1)  # → (O, I, kh, kw)
        b = np.asarray(layer.conv.bias[...])
        if in_perm is not None:
            w = w[:, in_perm]
        if out_perm is not None:
            w, b = w[out_perm], b[out_perm]
        return (torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(w)), False),
                torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(b)), False))

    c0, c1, c2 = gen.config.channels

    class TorchGenerator(torch.nn.Module):
        def __init__(self):
            super().__init__()
            layers = [conv_params(gen.enc1, in_perm=_fold_perm(3)),
                      conv_params(gen.enc2, in_perm=_fold_perm(c1))]
            for block in gen.res:
                layers += [conv_params(block.conv1), conv_params(block.conv2)]
            layers += [conv_params(gen.dec1, out_perm=_fold_perm(c1)),
                       conv_params(gen.dec2, out_perm=_fold_perm(c0)),
                       conv_params(gen.out)]
            self.convs = torch.nn.ParameterList([p for pair in layers for p in pair])
            self.scales = torch.nn.ParameterList(
                torch.nn.Parameter(torch.from_numpy(np.asarray(n.scale[...])), False)
                for n in gen.norm_layers())
            self.shifts = torch.nn.ParameterList(
                torch.nn.Parameter(torch.from_numpy(np.asarray(n.shift[...])), False)
                for n in gen.norm_layers())
            self.res_blocks = len(gen.res)

        def conv(self, x, i):
            x = F.pad(x, (1, 1, 1, 1), mode="reflect")
            return F.conv2d(x, self.convs[2 * i], self.convs[2 * i + 1])

        def norm(self, x, i, w):
            var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
            gamma = (w @ self.scales[i])[:, :, None, None]
            beta = (w @ self.shifts[i])[:, :, None, None]
            a = gamma * torch.rsqrt(var + IN_EPS)
            return x * a + (beta - mean * a)

        def forward(self, photo_nhwc, w):
            photo = photo_nhwc.permute(0, 3, 1, 2)
            x = photo * 2.0 - 1.0
            h = F.relu(self.norm(self.conv(F.pixel_unshuffle(x, 2), 0), 0, w))
            h = F.relu(self.norm(self.conv(F.pixel_unshuffle(h, 2), 1), 1, w))
            for b in range(self.res_blocks):
                r = F.relu(self.norm(self.conv(h, 2 + 2 * b), 2 + 2 * b, w))
                h = h + self.norm(self.conv(r, 3 + 2 * b), 3 + 2 * b, w)
            k = 2 + 2 * self.res_blocks
            h = F.relu(self.norm(F.pixel_shuffle(self.conv(h, k), 2), k, w))
            h = F.relu(self.norm(F.pixel_shuffle(self.conv(h, k + 1), 2), k + 1, w))
            clipped = photo.clamp(SKIP_CLIP, 1.0 - SKIP_CLIP)  # logit skip: a change to the photo
            skip = torch.log(clipped) - torch.log1p(-clipped)
            y = torch.sigmoid(self.conv(h, k + 2) + skip)
            return y.permute(0, 2, 3, 1).contiguous()

    return TorchGenerator().eval()


# ---------------------------------------------------------------------------------------------
# Timing helpers


def _now() -> float:
    return time.perf_counter()


def _time_once(fn: Callable[[], object]) -> float:
    t = _now()
    fn()
    return _now() - t


def perturbed_generator(num_styles: int, seed: int = 0) -> Generator:
    """Random weights moved off their initialisation (ICNR/zero biases could hide a bad order)."""
    gen = Generator(GeneratorConfig(num_styles=num_styles), rngs=nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    for _path, param in nnx.iter_graph(gen):
        if isinstance(param, nnx.Param):
            value = np.asarray(param[...])
            scale = 0.5 if value.ndim == 2 else 0.05
            param[...] = jnp.asarray(value + scale * rng.standard_normal(value.shape, np.float32))
    return gen


# XLA:CPU compiler options per jit: the default, and YNNPACK's library fusions switched off (in
# jaxlib 0.10 they take the convolutions, and were measured to slow large ones down ~3×).
JAX_VARIANTS: dict[str, dict[str, str] | None] = {
    "jax": None,
    "jax_no_ynn": {"xla_cpu_experimental_ynn_fusion_type": ""},
}
LABELS = {"jax": "JAX jit (XLA defaults)", "jax_no_ynn": "JAX jit, YNNPACK fusions off",
          "torch": "PyTorch eager", "ort": "ONNX Runtime"}


def bench_generator(gen: Generator, buckets, repeats: int, warmup: int, jax_variants, log,
                    setup: dict, interleave: bool = True) -> list[dict]:
    """Time every backend on every (batch, side) bucket; `setup` receives one-off costs."""
    import torch

    graphdef, state = nnx.split(gen)

    def apply(graphdef, state, x, w):
        return nnx.merge(graphdef, state)(x, w)

    tgen = make_torch_generator(gen)
    t0 = _now()
    ogen = OnnxGenerator.from_generator(gen)
    t1 = _now()
    ogen.session(False)  # build the session outside the timings
    setup["onnx_export_both_graphs_s"], setup["ort_session_s"] = t1 - t0, _now() - t1
    log(f"ONNX export (both graphs) {t1 - t0:.2f} s, ORT session {setup['ort_session_s']:.2f} s")
    rows = []
    for batch, side in buckets:
        rng = np.random.default_rng(side + batch)
        x_np = rng.random((batch, side, side, 3), np.float32)
        w_np = rng.dirichlet(np.ones(gen.config.num_styles), batch).astype(np.float32)
        x_j, w_j = jnp.asarray(x_np), jnp.asarray(w_np)
        x_t, w_t = torch.from_numpy(x_np), torch.from_numpy(w_np)
        load_before = os.getloadavg()[0]
        fns: dict[str, Callable[[], object]] = {}
        compile_info: dict[str, dict[str, float]] = {}

        for name, opts in jax_variants.items():
            # Compile cost, two ways: explicit lower + compile, then first call minus steady.
            jax.clear_caches()
            t0 = _now()
            lowered = jax.jit(apply, static_argnums=0, compiler_options=opts).lower(
                graphdef, state, x_j, w_j)
            t1 = _now()
            lowered.compile()
            compile_info[name] = {"lower_s": t1 - t0, "compile_s": _now() - t1}
            jax.clear_caches()
            jitted = jax.jit(apply, static_argnums=0, compiler_options=opts)

            def run_jax(jitted=jitted, x_j=x_j, w_j=w_j):
                return jitted(graphdef, state, x_j, w_j).block_until_ready()

            compile_info[name]["first_call_s"] = _time_once(run_jax)
            fns[name] = run_jax

        def run_torch(x_t=x_t, w_t=w_t):
            with torch.inference_mode():
                return tgen(x_t, w_t).numpy()

        def run_ort(x_np=x_np, w_np=w_np):
            return ogen(x_np, w_np)

        fns["torch"], fns["ort"] = run_torch, run_ort
        # Same picture from every backend before any timing counts.
        y_ref = np.asarray(fns["jax"]())
        errors = {}
        for name, fn in fns.items():
            errors[name] = float(np.abs(np.asarray(fn()) - y_ref).max())
            assert errors[name] < 1e-4, f"{name} differs from JAX by {errors[name]}"
        for _ in range(warmup):
            for fn in fns.values():
                fn()

        times: dict[str, list[float]] = {name: [] for name in fns}
        names = list(fns)
        if interleave:  # rotating the order each round, so load drifts hit all alike
            for r in range(repeats):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    times[name].append(_time_once(fns[name]))
        else:  # each backend alone: no other runtime's idle-spinning threads just before it
            for name in names:
                fns[name]()
                times[name] = [_time_once(fns[name]) for _ in range(repeats)]
        med = {k: statistics.median(v) for k, v in times.items()}
        for name, info in compile_info.items():
            info["first_minus_steady_s"] = info["first_call_s"] - med[name]
        rows.append({
            "batch": batch, "side": side,
            "median_s": med, "min_s": {k: min(v) for k, v in times.items()}, "all_s": times,
            "jax_compile": compile_info, "max_abs_err_vs_jax": errors,
            "loadavg_1min": [load_before, os.getloadavg()[0]],
        })
        log(f"{batch}×{side}²: " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in med.items())
            + f" (load {load_before:.2f}→{os.getloadavg()[0]:.2f})")
    return rows


def bench_features(side: int, repeats: int, warmup: int, jax_variants) -> dict:
    """EfficientNet-Lite0 features to stage4: forward, and forward + gradient w.r.t. the input."""
    from stylejax.features import load_feature_net

    graphdef, state = nnx.split(load_feature_net())

    def loss(state, x):
        feats = nnx.merge(graphdef, state).features(x, ["stage4"])
        return jnp.mean(feats["stage4"] ** 2)

    x = jnp.asarray(np.random.default_rng(0).random((1, side, side, 3), np.float32))
    out: dict = {"side": side, "batch": 1, "results": {}}
    for variant, opts in jax_variants.items():
        for name, f in (("forward", loss), ("forward_backward", jax.value_and_grad(loss, 1))):
            fn = jax.jit(f, compiler_options=opts)

            def call(fn=fn):
                return jax.block_until_ready(fn(state, x))

            first = _time_once(call)
            for _ in range(warmup):
                call()
            times = [_time_once(call) for _ in range(repeats)]
            out["results"][f"{variant}/{name}"] = {
                "median_s": statistics.median(times), "min_s": min(times), "all_s": times,
                "first_call_s": first}
    return out


# ---------------------------------------------------------------------------------------------
# Report


def environment() -> dict:
    import onnxruntime
    import torch

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import flax
    import onnx

    return {
        "cpu": model, "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "jax": jax.__version__, "jax_backend": jax.default_backend(), "flax": flax.__version__,
        "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__, "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "loadavg_start": os.getloadavg(),
    }


def markdown(rows: list[dict], feats: dict | None) -> str:
    ms = 1e3
    lines = [
        "| batch × size | backend | median (ms) | min (ms) | ÷ ONNX Runtime | ÷ PyTorch "
        "| JAX lower + compile (s) | JAX 1st call − steady (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m, lo = r["median_s"], r["min_s"]
        for name in m:
            c = r["jax_compile"].get(name)
            comp = (f"{c['lower_s']:.2f} + {c['compile_s']:.2f} | {c['first_minus_steady_s']:.2f}"
                    if c else "– | –")
            lines.append(
                f"| {r['batch']} × {r['side']}² | {LABELS.get(name, name)} | {m[name] * ms:.0f} "
                f"| {lo[name] * ms:.0f} | {m[name] / m['ort']:.2f} | {m[name] / m['torch']:.2f} "
                f"| {comp} |")
    loads = ", ".join(f"{r['batch']}×{r['side']}² {r['loadavg_1min'][0]:.1f}→"
                      f"{r['loadavg_1min'][1]:.1f}" for r in rows)
    lines += ["", f"1-min load average at start → end of each bucket: {loads}"]
    if feats:
        lines += [
            "",
            f"| EfficientNet-Lite0 → stage4, 1 × {feats['side']}² | median (ms) | min (ms) "
            "| 1st call (s) |",
            "|---|---:|---:|---:|",
        ]
        for key, res in feats["results"].items():
            variant, what = key.split("/")
            what = "forward" if what == "forward" else "forward + ∂/∂input"
            lines.append(f"| {LABELS[variant]}: {what} | {res['median_s'] * ms:.0f} "
                         f"| {res['min_s'] * ms:.0f} | {res['first_call_s']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per backend (≥5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs after the first")
    parser.add_argument("--num-styles", type=int, default=4)
    parser.add_argument("--sizes", default="1x256,4x256,1x512,1x1024",
                        help="comma-separated BATCHxSIDE buckets")
    parser.add_argument("--no-features", action="store_true", help="skip the feature-net line")
    parser.add_argument("--jax-defaults-only", action="store_true",
                        help="time only XLA's default compiler options")
    parser.add_argument("--no-interleave", action="store_true",
                        help="time each backend's runs back to back instead of round-robin")
    parser.add_argument("--json", type=Path, help="also write all timings here")
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error("--repeats must be at least 5")

    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    buckets = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",")]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    env = environment()
    log(f"{env['cpu']} ({env['cpu_count']} cores), load {os.getloadavg()}")
    variants = {"jax": None} if args.jax_defaults_only else JAX_VARIANTS
    gen = perturbed_generator(args.num_styles)
    setup: dict = {}
    rows = bench_generator(gen, buckets, args.repeats, args.warmup, variants, log, setup,
                           interleave=not args.no_interleave)
    feats = None if args.no_features else bench_features(512, args.repeats, args.warmup, variants)
    table = markdown(rows, feats)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"env": env, "argv": sys.argv[1:], "setup": setup,
                                         "generator": rows, "features": feats}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
