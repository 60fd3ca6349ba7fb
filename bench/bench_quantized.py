"""Does int8 make the ONNX generator much faster on CPU, and how far does its output move?

Why: issue 13 (a cached style at 512 px ≤ 0.5× Magenta's time; fp32 ONNX is at 0.54×) and
issue 15 (video at 480p, 10 frames/s with the pack; fp32 is at 5.2). Both models, the default
pack's generator and the any-style one (`as_generator`), are exported to fp32 ONNX and quantised
with onnxruntime.quantization: static QDQ (int8 weights per output channel, uint8 activations,
ranges from real photos at the working size that are not among the evaluation photos) and
dynamic (ConvInteger). Each variant's session is timed on the own-statistics graph (what the
Engine runs for a photo that needs no tiles), interleaved with fp32 in one run so background
load hits all alike; read the ratios, not the milliseconds. Fidelity: the uint8 pictures of
each variant against fp32's, on evaluation photos × styles at the working size.

Variants (VARIANTS): int8 on every convolution, on convolutions and Pads, all but the last,
with percentile ranges, on the residual blocks only (± the first decoder convolution), and
dynamic; fp32 with ORT's thread spinning off and without the NCHWc layout (optimisation level
"extended"). `--skip` leaves variants out of the timing only. `--png` shows fp32 | int8 |
|difference| × 8 at full size, the pack above, the any-style model below.

    .venv/bin/python bench/bench_quantized.py [--repeats 9] [--threads 1 2] [--out OUT.json]
        [--png /tmp/quant_compare.png]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quality import load_rgb  # noqa: E402  (bench/ is the script's folder)

from stylejax.imageio import resize_to  # noqa: E402
from stylejax.onnx_export import export_generator_onnx  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
EVAL_SET = json.loads((Path(__file__).with_name("eval_set.json")).read_text())
ANYSTYLE_MODEL = ROOT.parent / "main" / "runs" / "export_c"


def fit(rgb: np.ndarray, h: int, w: int) -> np.ndarray:
    """Resize to cover h×w and crop the middle: every sample of one model has one shape."""
    s = max(h / rgb.shape[0], w / rgb.shape[1])
    big = resize_to(rgb, (max(h, round(rgb.shape[0] * s)), max(w, round(rgb.shape[1] * s))))
    y0, x0 = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
    return big[y0 : y0 + h, x0 : x0 + w]


def to_float(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) / 255.0


def to_uint8(y: np.ndarray) -> np.ndarray:
    return (np.clip(y, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def calibration_photos(n: int) -> list[np.ndarray]:
    """n content photos spread over the folder, none of them an evaluation photo."""
    held = set(EVAL_SET["photos"])
    names = sorted(p.name for p in (SHARED / "content").iterdir() if p.name not in held)
    pick = [names[round(i * (len(names) - 1) / max(1, n - 1))] for i in range(n)]
    return [load_rgb(SHARED / "content" / name) for name in pick]


def quantize_generator_onnx(model: bytes, calibration: Iterable[dict[str, np.ndarray]], *,
                            op_types: Sequence[str] = ("Conv",), per_channel: bool = True,
                            exclude: Sequence[str] = (), method: str = "minmax") -> bytes:
    """Static int8 (QDQ) quantisation of an exported generator graph, for ONNX Runtime on CPU.

    `calibration`: feeds (the graph's inputs by name) of real photos at the working size; the
    activations' ranges are their min/max. Weights are int8 (per output channel with
    `per_channel`), activations uint8: the u8·s8 pairing that x86's VNNI instructions run. Only
    `op_types` are quantised (by default the convolutions; the instance norm stays float).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Reader(CalibrationDataReader):
        def __init__(self, feeds: list[dict[str, np.ndarray]]):
            self._feeds = feeds
            self.set_range(0, len(feeds))

        def __len__(self) -> int:
            return len(self._feeds)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._it = iter(self._feeds[start_index:end_index])

        def get_next(self):
            return next(self._it, None)

    feeds = list(calibration)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(model)
        quantize_static(str(src), str(dst), _Reader(feeds), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(op_types), per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method={"minmax": CalibrationMethod.MinMax,
                                          "percentile": CalibrationMethod.Percentile,
                                          "entropy": CalibrationMethod.Entropy}[method],
                        nodes_to_exclude=list(exclude),
                        # ranges folded in after each feed: all activations of full-size
                        # photos kept at once would take gigabytes
                        extra_options={"CalibStridedMinMax": 1})
        return dst.read_bytes()



def session(model: bytes, threads: int, *, spinning: bool = True, level: str = "all"):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                     "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                     }[level]
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def conv_names(model: bytes) -> list[str]:
    import onnx

    return [n.name for n in onnx.load_from_string(model).graph.node if n.op_type == "Conv"]


def dynamic_int8(model: bytes) -> bytes:
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "dyn.onnx"
        src.write_bytes(model)
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=["Conv"], per_channel=True,
                         weight_type=QuantType.QUInt8)
        return dst.read_bytes()


def models_for(generator, calib_feeds: list[dict], log) -> dict[str, bytes]:
    fp32 = export_generator_onnx(generator)
    out = {"fp32": fp32}
    t = time.perf_counter()
    out["int8"] = quantize_generator_onnx(fp32, calib_feeds)
    log(f"  static int8 (Conv) quantised in {time.perf_counter() - t:.1f} s")
    out["int8 conv+pad"] = quantize_generator_onnx(fp32, calib_feeds, op_types=("Conv", "Pad"))
    convs = conv_names(fp32)
    out["int8 last conv fp32"] = quantize_generator_onnx(fp32, calib_feeds, exclude=convs[-1:])
    out["int8 percentile"] = quantize_generator_onnx(fp32, calib_feeds, method="percentile")
    # the residual blocks alone (call order: 2 encoder convs, 2 per block, 2 decoder, out)
    not_res = convs[:2] + convs[2 + 2 * generator.config.res_blocks:]
    out["int8 res"] = quantize_generator_onnx(fp32, calib_feeds, exclude=not_res)
    out["int8 res percentile"] = quantize_generator_onnx(fp32, calib_feeds, exclude=not_res,
                                                         method="percentile")
    dec1 = convs[2 + 2 * generator.config.res_blocks]
    out["int8 res+dec1"] = quantize_generator_onnx(
        fp32, calib_feeds, exclude=[c for c in not_res if c != dec1])
    try:
        out["int8 dynamic"] = dynamic_int8(fp32)
    except Exception as err:  # noqa: BLE001  (an experiment: report and go on)
        log(f"  dynamic quantisation failed: {err!r}")
    return out


# variant name → (model key, session options)
VARIANTS = {
    "fp32": ("fp32", {}),
    "fp32 no spin": ("fp32", {"spinning": False}),
    "fp32 no NCHWc": ("fp32", {"level": "extended"}),
    "int8": ("int8", {}),
    "int8 no spin": ("int8", {"spinning": False}),
    "int8 conv+pad": ("int8 conv+pad", {}),
    "int8 last conv fp32": ("int8 last conv fp32", {}),
    "int8 percentile": ("int8 percentile", {}),
    "int8 res": ("int8 res", {}),
    "int8 res percentile": ("int8 res percentile", {}),
    "int8 res+dec1": ("int8 res+dec1", {}),
    "int8 dynamic": ("int8 dynamic", {}),
}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def fidelity(models: dict[str, bytes], samples: list[dict]) -> tuple[dict, dict]:
    """Per quantised model: PSNR (min, mean), max and mean |Δ| of uint8 pictures vs fp32."""
    outs = {}
    for key, m in models.items():
        s = session(m, 2)
        outs[key] = [to_uint8(s.run(["styled"], f)[0][0]) for f in samples]
    res = {}
    for key in models:
        if key == "fp32":
            continue
        ps = [psnr(a, b) for a, b in zip(outs["fp32"], outs[key])]
        d = [np.abs(a.astype(np.int16) - b.astype(np.int16))
             for a, b in zip(outs["fp32"], outs[key])]
        res[key] = {"psnr_min": min(ps), "psnr_mean": float(np.mean(ps)),
                    "max_abs_255": int(max(x.max() for x in d)),
                    "mean_abs_255": float(np.mean([x.mean() for x in d])), "n": len(ps)}
    return res, outs


def time_group(models: dict[str, bytes], feeds: dict, threads: int, repeats: int, warmup: int,
               log, skip=()) -> dict:
    runs = {}
    for name, (key, opts) in VARIANTS.items():
        if key in models and name not in skip:
            runs[name] = session(models[key], threads, **opts)
    for _ in range(warmup):
        for s in runs.values():
            s.run(["styled"], feeds)
    times: dict[str, list[float]] = {n: [] for n in runs}
    names = list(runs)
    for i in range(repeats):  # interleaved, order rotated each repeat
        for name in names[i % len(names):] + names[: i % len(names)]:
            t = time.perf_counter()
            runs[name].run(["styled"], feeds)
            times[name].append(time.perf_counter() - t)
    ref = statistics.median(times["fp32"])
    rows = {n: {"median_s": statistics.median(v), "min_s": min(v),
                "over_fp32": statistics.median(v) / ref} for n, v in times.items()}
    log("    " + ", ".join(f"{n} {r['over_fp32']:.2f}" for n, r in rows.items()))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--calib", type=int, default=6, help="calibration photos")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--png", type=Path, default=Path("/tmp/quant_compare.png"))
    ap.add_argument("--png-variant", default="int8 res", help="the model shown beside fp32")
    ap.add_argument("--skip", nargs="*", default=[
        "fp32 no NCHWc", "int8 no spin", "int8 conv+pad", "int8 last conv fp32",
        "int8 percentile", "int8 res percentile", "int8 dynamic"],
                    help="variants left out of the timing (their fidelity is still measured)")
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    import onnxruntime
    from PIL import Image

    from stylejax.anystyle import as_generator, load_model, statistics_size, style_row
    from stylejax.features import load_feature_net
    from stylejax.imageio import resize_long_side
    from stylejax.onnx_encoder import OnnxStyleEncoder
    from stylejax.pack import default_pack_dir, load_pack

    log(f"onnxruntime {onnxruntime.__version__}, load {os.getloadavg()}")
    calib_rgb = calibration_photos(args.calib)
    eval_rgb = [load_rgb(SHARED / "content" / n) for n in EVAL_SET["photos"][:4]]
    eval_styles = {s["name"]: load_rgb(SHARED / s["file"], s.get("crop"))
                   for s in EVAL_SET["styles"][:2]}

    # -- pack: 640×360 (medium stroke's video working size), batch 4 ---------------------------
    pack = load_pack(default_pack_dir())
    ns = pack.config.num_styles
    ph, pw = 360, 640

    def onehot(i: int) -> np.ndarray:
        w = np.zeros((1, ns), np.float32)
        w[0, i] = 1.0
        return w

    pack_calib = [{"photo": to_float(fit(p, ph, pw))[None], "style_w": onehot(i % ns)}
                  for i, p in enumerate(calib_rgb + calib_rgb[: max(0, ns - len(calib_rgb))])]
    log("pack generator")
    pack_models = models_for(pack.generator, pack_calib, log)
    style_ids = [pack.index(n) for n in eval_styles]
    pack_eval = [{"photo": to_float(fit(p, ph, pw))[None], "style_w": onehot(i)}
                 for p in eval_rgb for i in style_ids]
    pack_feeds = {"photo": np.concatenate([f["photo"] for f in pack_eval[::2]]),
                  "style_w": np.repeat(onehot(style_ids[0]), 4, axis=0)}

    # -- any-style: 512×288, batch 1 ------------------------------------------------------------
    feature_net = load_feature_net()
    if (ANYSTYLE_MODEL / "anystyle.json").is_file():
        model, model_name = load_model(ANYSTYLE_MODEL), str(ANYSTYLE_MODEL)
    else:
        from flax import nnx

        from stylejax.anystyle import AnyStyleModel
        from trainer.anystyle import AnyStyleTrainConfig

        config = AnyStyleTrainConfig().model()
        model = AnyStyleModel(config, statistics_size(feature_net, config.taps),
                              rngs=nnx.Rngs(0))
        model_name = "untrained AnyStyleTrainConfig().model()"
    encoder = OnnxStyleEncoder(model, feature_net, threads=2)

    def z_of(rgb: np.ndarray) -> np.ndarray:
        return style_row(encoder(to_float(resize_long_side(rgb, 256))[None]))

    held_styles = {s["file"] for s in EVAL_SET["styles"]}
    calib_style_files = [p for p in sorted((SHARED / "style").glob("painting_*"))
                         if f"style/{p.name}" not in held_styles][:args.calib]
    calib_z = [z_of(load_rgb(p)) for p in calib_style_files]
    ah, aw = 288, 512
    any_calib = [{"photo": to_float(fit(p, ah, aw))[None], "style_w": z}
                 for p, z in zip(calib_rgb, calib_z)]
    log(f"any-style generator ({model_name})")
    any_models = models_for(as_generator(model), any_calib, log)
    eval_z = [z_of(s) for s in eval_styles.values()]
    any_eval = [{"photo": to_float(fit(p, ah, aw))[None], "style_w": z}
                for p in eval_rgb for z in eval_z]
    any_feeds = any_eval[0]

    # -- fidelity --------------------------------------------------------------------------------
    fid_pack, outs_pack = fidelity(pack_models, pack_eval)
    fid_any, outs_any = fidelity(any_models, any_eval)
    log(f"fidelity pack {json.dumps(fid_pack)}")
    log(f"fidelity any-style {json.dumps(fid_any)}")

    # side by side at full size: fp32 | int8 | |Δ|×8, pack row then any-style row
    def row(outs, k):
        a, b = outs["fp32"][k], outs[args.png_variant][k]
        diff = np.clip(np.abs(a.astype(np.int16) - b.astype(np.int16)) * 8, 0, 255)
        return np.concatenate([a, b, diff.astype(np.uint8)], axis=1)

    r1, r2 = row(outs_pack, 0), row(outs_any, 1)
    canvas = np.zeros((r1.shape[0] + r2.shape[0], max(r1.shape[1], r2.shape[1]), 3), np.uint8)
    canvas[: r1.shape[0], : r1.shape[1]] = r1
    canvas[r1.shape[0]:, : r2.shape[1]] = r2
    Image.fromarray(canvas).save(args.png)
    log(f"wrote {args.png}")

    # -- speed -----------------------------------------------------------------------------------
    speed = {}
    for threads in args.threads:
        log(f"pack 4×{ph}×{pw}, {threads} thread(s)")
        speed[f"pack 4x{ph}x{pw} t{threads}"] = time_group(
            pack_models, pack_feeds, threads, args.repeats, args.warmup, log, args.skip)
        log(f"any-style 1×{ah}×{aw}, {threads} thread(s)")
        speed[f"anystyle 1x{ah}x{aw} t{threads}"] = time_group(
            any_models, any_feeds, threads, args.repeats, args.warmup, log, args.skip)

    print("| variant | " + " | ".join(speed) + " |")
    print("|---|" + "---:|" * len(speed))
    for name in VARIANTS:
        if all(name in g for g in speed.values()):
            print(f"| {name} | " + " | ".join(f"{g[name]['over_fp32']:.2f}"
                                             for g in speed.values()) + " |")
    print("\n| model | variant | PSNR min / mean (dB) | max abs Δ (/255) | mean abs Δ (/255) |")
    print("|---|---|---:|---:|---:|")
    for label, fid in (("pack", fid_pack), ("any-style", fid_any)):
        for key, f in fid.items():
            print(f"| {label} | {key} | {f['psnr_min']:.1f} / {f['psnr_mean']:.1f} | "
                  f"{f['max_abs_255']} | {f['mean_abs_255']:.2f} |")
    if args.out:
        args.out.write_text(json.dumps({"onnxruntime": onnxruntime.__version__,
                                        "loadavg_end": os.getloadavg(), "speed": speed,
                                        "fidelity": {"pack": fid_pack, "anystyle": fid_any},
                                        "anystyle_model": model_name}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
